"""MusiCoder as a native Hugging Face model.

Importing the package registers MusiCoder with the Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForPreTraining`, `AutoModelForAudioClassification`, `AutoFeatureExtractor`), and marks each class for
`register_for_auto_class` so that `save_pretrained` copies the code and writes `auto_map`: a saved folder then also
loads with `trust_remote_code=True` where this package is not installed. It also makes
`pipeline("audio-classification")` take MusiCoder checkpoints at any length, rate and channel count
(`MusiCoderAudioClassificationPipeline`; unchanged for other models).
"""

import importlib.metadata

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForPreTraining,
)

from .configuration_musicoder import DEFAULT_FEATURE_LAYOUT, PRESETS, MusiCoderConfig
from .data_collator import DataCollatorForMusiCoderPreTraining, sample_ccm_bands, sample_cfm_spans
from .feature_extraction_musicoder import MusiCoderFeatureExtractor
from .embeddings import MusiCoderEmbedder, MusiCoderEmbeddingOutput
from .modeling_musicoder import (
    MusiCoderForPreTraining,
    MusiCoderForPreTrainingOutput,
    MusiCoderForSequenceClassification,
    MusiCoderModel,
    MusiCoderPreTrainedModel,
)
from .pipelines import MusiCoderAudioClassificationPipeline, MusiCoderFeatureExtractionPipeline, register_pipelines

AutoConfig.register(MusiCoderConfig.model_type, MusiCoderConfig, exist_ok=True)
AutoFeatureExtractor.register(MusiCoderConfig, MusiCoderFeatureExtractor, exist_ok=True)
for auto_class, model_class in (
    (AutoModel, MusiCoderModel),
    (AutoModelForPreTraining, MusiCoderForPreTraining),
    (AutoModelForAudioClassification, MusiCoderForSequenceClassification),
):
    auto_class.register(MusiCoderConfig, model_class, exist_ok=True)
    model_class.register_for_auto_class(auto_class.__name__)
MusiCoderConfig.register_for_auto_class()
MusiCoderFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
register_pipelines()

try:  # the one place the version is written is pyproject.toml
    __version__ = importlib.metadata.version("musicoder-hf")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_FEATURE_LAYOUT",
    "PRESETS",
    "DataCollatorForMusiCoderPreTraining",
    "MusiCoderAudioClassificationPipeline",
    "MusiCoderConfig",
    "MusiCoderEmbedder",
    "MusiCoderEmbeddingOutput",
    "MusiCoderFeatureExtractionPipeline",
    "MusiCoderFeatureExtractor",
    "MusiCoderForPreTraining",
    "MusiCoderForPreTrainingOutput",
    "MusiCoderForSequenceClassification",
    "MusiCoderModel",
    "MusiCoderPreTrainedModel",
    "sample_ccm_bands",
    "sample_cfm_spans",
]
