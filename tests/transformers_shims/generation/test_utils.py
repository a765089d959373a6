"""Shim for transformers' `tests/generation/test_utils.py` (not in the sdist): MusiCoder is an encoder, no `generate`."""


class GenerationTesterMixin:
    pass
