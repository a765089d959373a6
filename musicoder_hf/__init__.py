"""MusiCoder as a native Hugging Face model."""

from .configuration_musicoder import MusiCoderConfig

__all__ = ["MusiCoderConfig"]
