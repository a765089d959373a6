"""Pipelines that take audio of any length, rate and channel count.

`MusiCoderAudioClassificationPipeline` is what `pipeline("audio-classification", model=<a MusiCoder checkpoint>)`
returns once `musicoder_hf` is imported: it decodes files with errors that name them, resamples with librosa (the
stock pipeline needs torchaudio, which does not load with CPU torch 2.13), downmixes, and classifies long tracks by
windows of at most `window_frames` frames (default: the model's 1600, hop half a window, as in MAEST's evaluation).
The prediction is the mean of the windows' logits, then softmax (single-label) or sigmoid (multi-label). Windows are
produced lazily and batched by `batch_size`, so peak memory does not grow with the track length. For other models it
behaves exactly like the stock pipeline.

`MusiCoderFeatureExtractionPipeline` gives per-layer embeddings through the pipeline API:

    pipeline("feature-extraction", model=path, pipeline_class=MusiCoderFeatureExtractionPipeline)("track.wav")
"""

from transformers import AutoModelForAudioClassification
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.pipelines import PIPELINE_REGISTRY, AudioClassificationPipeline, Pipeline
from transformers.pipelines.base import ChunkPipeline
from transformers.utils import logging

from .audio import frame_windows, load_audio, resolve_window
from .embeddings import MusiCoderEmbedder


def _is_musicoder(model) -> bool:
    # By model type rather than class: a checkpoint loaded with trust_remote_code has its own copy of the classes.
    return getattr(model.config, "model_type", None) == "musicoder"


class MusiCoderAudioClassificationPipeline(AudioClassificationPipeline, ChunkPipeline):
    """
    Audio classification over any length (see the module docstring). Extra call arguments:

        window_frames (`int`, *optional*): frames per window, at most `max_position_embeddings` (default).
        hop_frames (`int`, *optional*): hop between windows, default half a window.
    """

    def _sanitize_parameters(self, top_k=None, function_to_apply=None, window_frames=None, hop_frames=None, **kwargs):
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(
            top_k=top_k, function_to_apply=function_to_apply, **kwargs
        )
        if window_frames is not None:
            preprocess_params["window_frames"] = window_frames
        if hop_frames is not None:
            preprocess_params["hop_frames"] = hop_frames
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, inputs, window_frames=None, hop_frames=None):
        if not _is_musicoder(self.model):
            yield {**super().preprocess(inputs), "is_last": True}
            return
        extractor = self.feature_extractor
        window_frames, hop_frames = resolve_window(window_frames, hop_frames, self.model.config.max_position_embeddings)

        waveform = load_audio(inputs, extractor.sampling_rate)
        windows = frame_windows(len(waveform), extractor.hop_length, extractor.n_fft, window_frames, hop_frames)
        for position, window in enumerate(windows):
            features = extractor(
                waveform[window.start : window.stop], sampling_rate=extractor.sampling_rate, return_tensors="pt"
            )
            if self.dtype is not None:
                features = features.to(dtype=self.dtype)
            yield {**features, "is_last": position == len(windows) - 1}

    def _forward(self, model_inputs):
        is_last = model_inputs.pop("is_last")
        return {"logits": self.model(**model_inputs).logits, "is_last": is_last}

    def postprocess(self, model_outputs, top_k=5, function_to_apply=None):
        # Mean of the windows' logits: each window is one clip for the model, as during fine-tuning.
        logits = sum(output["logits"].float() for output in model_outputs) / len(model_outputs)
        return super().postprocess(
            SequenceClassifierOutput(logits=logits), top_k=top_k, function_to_apply=function_to_apply
        )


class MusiCoderFeatureExtractionPipeline(Pipeline):
    """
    Per-layer embeddings of audio of any length through the pipeline API (a [`MusiCoderEmbedder`] inside).

    Call arguments: `layers` (`int` or `list[int]`, default all hidden states), `pooling` (`"auto"`, default: as
    the checkpoint's classifier pools, `config.classifier_pooling`; `"mean"`, `"mean_std"`, or `None` for one embedding
    per time step), `window_frames`, `hop_frames`, `return_tensors` (default `False`: nested
    lists, like the stock feature-extraction pipeline). Returns `(num_layers, hidden_size)` or
    `(num_layers, num_frames, hidden_size)`.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def _sanitize_parameters(
        self, layers=None, pooling="auto", window_frames=None, hop_frames=None, return_tensors=None, **kwargs
    ):
        forward_params = {
            "layers": layers,
            "pooling": pooling,
            "window_frames": window_frames,
            "hop_frames": hop_frames,
        }
        postprocess_params = {} if return_tensors is None else {"return_tensors": return_tensors}
        return {}, forward_params, postprocess_params

    def preprocess(self, inputs):
        return {"waveform": load_audio(inputs, self.feature_extractor.sampling_rate)}

    def _forward(self, model_inputs, layers=None, pooling="auto", window_frames=None, hop_frames=None):
        embedder = MusiCoderEmbedder(self.model, self.feature_extractor, window_frames, hop_frames)
        return {"embeddings": embedder(model_inputs["waveform"], layers=layers, pooling=pooling).embeddings}

    def postprocess(self, model_outputs, return_tensors=False):
        embeddings = model_outputs["embeddings"]
        return embeddings if return_tensors else embeddings.tolist()


def register_pipelines():
    """Make `pipeline("audio-classification")` use [`MusiCoderAudioClassificationPipeline`] (identical to the stock
    pipeline for other models)."""
    previous = logging.get_verbosity()
    logging.set_verbosity_error()  # registering over a built-in task logs a warning meant for accidental overrides
    try:
        PIPELINE_REGISTRY.register_pipeline(
            "audio-classification",
            pipeline_class=MusiCoderAudioClassificationPipeline,
            pt_model=AutoModelForAudioClassification,
            default=PIPELINE_REGISTRY.supported_tasks["audio-classification"].get("default"),
            type="audio",
        )
    finally:
        logging.set_verbosity(previous)
    # The one private hook of the package. `register_pipeline` also marks the class as a Hub custom pipeline
    # (`_registered_impl`), so `pipe.save_pretrained` would write `custom_pipelines` into config.json and the saved
    # checkpoint would then need trust_remote_code for a built-in task. transformers has no public switch for this;
    # tests/test_long_audio.py fails loudly if an upgrade changes the mechanism.
    if "_registered_impl" in vars(MusiCoderAudioClassificationPipeline):
        del MusiCoderAudioClassificationPipeline._registered_impl


__all__ = ["MusiCoderAudioClassificationPipeline", "MusiCoderFeatureExtractionPipeline", "register_pipelines"]
