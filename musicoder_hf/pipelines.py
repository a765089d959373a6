"""Pipelines that take audio of any length, rate and channel count.

`MusiCoderAudioClassificationPipeline` is what `pipeline("audio-classification", model=<a MusiCoder checkpoint>)`
returns once `musicoder_hf` is imported: it decodes files with errors that name them, resamples with librosa (the
stock pipeline needs torchaudio, which does not load with CPU torch 2.13), downmixes, featurises the whole track and
calls the model once. The model reads a track longer than its window in windows itself (`window_spans`) and pools
over every frame, so the pipeline's logits are exactly `model(**feature_extractor(track))`'s, the same as in
`Trainer`, `evaluate` loops or any script. `pipe(track, frame_stride=N)` reads one frame of every N (inference
patchout, about N times less model work; see docs/inference.md#patchout). For other models it behaves exactly like
the stock pipeline.

`MusiCoderFeatureExtractionPipeline` gives per-layer embeddings through the pipeline API:

    pipeline("feature-extraction", model=path, pipeline_class=MusiCoderFeatureExtractionPipeline)("track.wav")
"""

from transformers import AutoModelForAudioClassification
from transformers.pipelines import PIPELINE_REGISTRY, AudioClassificationPipeline, Pipeline
from transformers.utils import logging

from .audio import load_audio, refuse_window_arguments
from .embeddings import MusiCoderEmbedder, check_frame_stride


def _is_musicoder(model) -> bool:
    # By model type rather than class: a checkpoint loaded with trust_remote_code has its own copy of the classes.
    return getattr(model.config, "model_type", None) == "musicoder"


class MusiCoderAudioClassificationPipeline(AudioClassificationPipeline):
    """Audio classification over any length (see the module docstring): a file path, bytes, an array or a
    `{"array", "sampling_rate"}` dict in, the labels' scores out (softmax, or sigmoid for multi-label)."""

    def _sanitize_parameters(
        self, top_k=None, function_to_apply=None, frame_stride=None, window_frames=None, hop_frames=None, **kwargs
    ):
        refuse_window_arguments(window_frames, hop_frames)
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(
            top_k=top_k, function_to_apply=function_to_apply, **kwargs
        )
        if frame_stride is not None:
            if not _is_musicoder(self.model):
                raise ValueError("frame_stride (inference patchout) is a MusiCoder option; this model is not one.")
            preprocess_params["frame_stride"] = check_frame_stride(frame_stride)
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, inputs, frame_stride: int = 1):
        if not _is_musicoder(self.model):
            return super().preprocess(inputs)
        extractor = self.feature_extractor
        waveform = load_audio(inputs, extractor.sampling_rate)
        features = extractor(
            waveform, sampling_rate=extractor.sampling_rate, return_tensors="pt", frame_stride=frame_stride
        )
        if self.dtype is not None:  # BatchFeature.to casts floating-point tensors only (not the mask or positions)
            features = features.to(dtype=self.dtype)
        return features

    def _forward(self, model_inputs):
        outputs = self.model(**model_inputs)
        if _is_musicoder(self.model):
            outputs["logits"] = outputs.logits.float()  # scores from float32 logits, also for a bfloat16 model
        return outputs


class MusiCoderFeatureExtractionPipeline(Pipeline):
    """
    Per-layer embeddings of audio of any length through the pipeline API (a [`MusiCoderEmbedder`] inside).

    Call arguments: `layers` (`int` or `list[int]`, default all hidden states), `pooling` (`"auto"`, default: as
    the checkpoint's classifier pools, `config.classifier_pooling`; `"mean"`, `"mean_std"`, or `None` for one embedding
    per time step), `frame_stride` (inference patchout, default 1: see [`MusiCoderEmbedder`]), `return_tensors`
    (default `False`: nested lists, like the stock feature-extraction pipeline).
    Returns `(num_layers, hidden_size)` or `(num_layers, num_frames, hidden_size)`.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def _sanitize_parameters(
        self, layers=None, pooling="auto", frame_stride=1, window_frames=None, hop_frames=None, return_tensors=None,
        **kwargs
    ):
        refuse_window_arguments(window_frames, hop_frames)
        forward_params = {"layers": layers, "pooling": pooling, "frame_stride": check_frame_stride(frame_stride)}
        postprocess_params = {} if return_tensors is None else {"return_tensors": return_tensors}
        return {}, forward_params, postprocess_params

    def preprocess(self, inputs):
        return {"waveform": load_audio(inputs, self.feature_extractor.sampling_rate)}

    def _forward(self, model_inputs, layers=None, pooling="auto", frame_stride=1):
        embedder = MusiCoderEmbedder(self.model, self.feature_extractor, frame_stride=frame_stride)
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
