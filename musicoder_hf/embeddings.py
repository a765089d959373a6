"""Per-layer MusiCoder embeddings of audio of any length, for probing (MARBLE/HEAR style) and retrieval.

    from musicoder_hf.embeddings import MusiCoderEmbedder

    embedder = MusiCoderEmbedder.from_pretrained("path/to/checkpoint")
    clip = embedder("track.flac")                       # every layer, pooled over time as the checkpoint pools
                                                        # (config.classifier_pooling): (num_layers + 1, dim)
    frames = embedder("track.flac", pooling=None)       # every layer, per time step: (num_layers + 1, frames, hidden)
    stack = embedder("track.flac", layers=[-3, -2, -1]) # a stack of the last three layers, as in MAEST

Each clip is featurised whole, then read as the model's `forward` reads it: a clip longer than the model's window
(`config.max_position_embeddings` frames) in the fewest windows that fit, end to end and of equal lengths
(`window_spans`), each window encoded with its own positions. Pooling covers every frame of the clip, so the mean and
standard deviation are those of the whole clip, exactly as the classifier computes them. Windows are batched and pooled
as they come, so the encoder's memory depends on `batch_size` windows, not on the track length.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModel
from transformers.utils import ModelOutput

from .audio import load_audio, refuse_window_arguments
from .configuration_musicoder import POOLING_MODES
from .data_collator import pad_frames
from .modeling_musicoder import STD_POOLING_VARIANCE_FLOOR, position_windows


@dataclass
class MusiCoderEmbeddingOutput(ModelOutput):
    """
    Embeddings of one clip.

    Args:
        embeddings (`torch.FloatTensor` of shape `(num_selected_layers, hidden_size)` or
            `(num_selected_layers, num_frames, hidden_size)`):
            Hidden states of the selected layers, averaged over time (`pooling="mean"`), their mean and standard
            deviation over time concatenated (`pooling="mean_std"`, `(num_selected_layers, 2 * hidden_size)`), or
            per time step (`pooling=None`).
        timestamps (`torch.FloatTensor` of shape `(num_frames,)`):
            Centre of each time step in seconds (frame `t` is centred on sample `t * hop_length`).
        layers (`tuple[int]`):
            Which entries of `hidden_states` were taken: 0 is the input embedding (projection + positions), `i` the
            output of encoder layer `i`.
    """

    embeddings: torch.FloatTensor | None = None
    timestamps: torch.FloatTensor | None = None
    layers: tuple[int, ...] | None = None


class _WindowPooling:
    """Pools one clip's hidden states window by window, as they come. The windows tile the clip (`window_spans`), so
    with `pooling="mean"` the result is the mean over all its frames, with `"mean_std"` the mean and standard deviation
    over all its frames (the windows' statistics combined exactly, Chan et al.), and with `None` one embedding per
    frame."""

    def __init__(self, num_frames: int, num_layers: int, hidden_size: int, pooling: str | None):
        self.num_frames = num_frames
        self.pooling = pooling
        shape = (num_layers, num_frames, hidden_size) if pooling is None else (num_layers, hidden_size)
        self.sums = torch.zeros(shape)
        # Statistics pooling: each window's squares are summed around its own mean (a stable streaming variance).
        self.windows: list[tuple[torch.Tensor, torch.Tensor, int]] = []

    def add(self, first: int, stop: int, hidden: torch.Tensor) -> None:
        """`hidden` `(num_layers, >= stop - first, hidden_size)`: the hidden states of window `[first, stop)` (what is
        past `stop - first` is padding and is cut)."""
        hidden = hidden[:, : stop - first]
        if self.pooling is None:
            self.sums[:, first:stop] = hidden
            return
        window_sum = hidden.sum(dim=1)
        self.sums += window_sum
        if self.pooling == "mean_std":
            window_mean = window_sum / (stop - first)
            self.windows.append((window_mean, (hidden - window_mean[:, None]).square().sum(dim=1), stop - first))

    def result(self) -> torch.Tensor:
        if self.pooling is None:
            return self.sums
        mean = self.sums / self.num_frames
        if self.pooling == "mean":
            return mean
        squares = sum(window_squares + count * (window_mean - mean).square()
                      for window_mean, window_squares, count in self.windows)
        return torch.cat([mean, (squares / self.num_frames).clamp(min=STD_POOLING_VARIANCE_FLOOR).sqrt()], dim=-1)


def check_frame_stride(frame_stride) -> int:
    """`frame_stride` as an `int`, or a `ValueError` that says what it must be."""
    if not isinstance(frame_stride, (int, np.integer)) or isinstance(frame_stride, bool) or frame_stride < 1:
        raise ValueError(f"frame_stride must be a positive integer (1 keeps every frame), got {frame_stride!r}.")
    return int(frame_stride)


def kept_frames(clip: torch.Tensor, frame_stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference patchout of one featurised clip: its frames 0, N, 2N, ... and their indices on the clip."""
    return clip[::frame_stride], torch.arange(0, len(clip), frame_stride)


def encode_windows(encoder, clips: Sequence[torch.Tensor], pools: Sequence[_WindowPooling], batch_size: int,
                   select=None, frame_stride: int = 1) -> None:
    """Encode featurised clips window by window, as the model's `forward` reads them (`position_windows`: the clip's
    frames 0, N, 2N, ... at their own positions in windows of the clip's axis; with N = 1, every frame in the windows
    of `window_spans`), `batch_size` windows per forward pass, and feed each window's hidden states to its clip's
    pool. `select` maps the stacked hidden states `(windows, num_layers + 1, frames, hidden)` to what is pooled
    (default: all of them)."""
    window = encoder.config.max_position_embeddings
    kept = [kept_frames(clip, frame_stride) for clip in clips]
    jobs = [(index, *span) for index, (_, positions) in enumerate(kept) for span in position_windows(positions, window)]
    device, dtype = encoder.device, encoder.dtype
    for first_job in range(0, len(jobs), batch_size):
        batch = jobs[first_job : first_job + batch_size]
        inputs = pad_frames([kept[index][0][first:stop] for index, first, stop, _ in batch])
        position_ids = None  # with every frame kept, the positions are 0, 1, 2, ... in each window: the default
        if frame_stride > 1:
            position_ids = torch.zeros_like(inputs["attention_mask"])
            for row, (index, first, stop, start) in enumerate(batch):
                position_ids[row, : stop - first] = kept[index][1][first:stop] - start
            position_ids = position_ids.to(device)
        outputs = encoder(
            inputs["input_features"].to(device, dtype),
            attention_mask=inputs["attention_mask"].to(device),
            position_ids=position_ids,
            output_hidden_states=True,
        )
        hidden = torch.stack(outputs.hidden_states, dim=1)
        hidden = (hidden if select is None else select(hidden)).float().cpu()
        for row, (index, first, stop, _) in enumerate(batch):
            pools[index].add(first, stop, hidden[row])


@torch.no_grad()
def pooled_hidden_states(
    encoder,
    clips: Sequence[np.ndarray | torch.Tensor],
    pooling: str = "mean",
    batch_size: int = 8,
    layer_weights: torch.Tensor | None = None,
    frame_stride: int = 1,
) -> np.ndarray:
    """
    Every hidden state of an encoder, pooled over time, for clips that are already featurised.

    Clips longer than the model's window are read as its `forward` reads them (`window_spans`), and pooled over all
    their frames, as [`MusiCoderEmbedder`] and the classifier pool; the clips' frames are used as given (no feature
    extraction).

    Args:
        encoder (`MusiCoderModel`): the encoder (in eval mode for deterministic outputs).
        clips (sequence of `(frames, feature_size)` arrays or tensors): featurised clips of any length.
        pooling (`str`, *optional*, defaults to `"mean"`): `"mean"`, or `"mean_std"` (mean and standard deviation over
            time, concatenated).
        batch_size (`int`, *optional*, defaults to 8): windows per forward pass.
        layer_weights (`torch.Tensor` of shape `(num_hidden_layers + 1,)`, *optional*): combine the hidden states
            frame by frame with these weights before pooling, as `MusiCoderForSequenceClassification` does with
            `use_weighted_layer_sum` (pass the softmax of its `layer_weights`); the one result is at index 0.
        frame_stride (`int`, *optional*, defaults to 1): inference patchout: read frames 0, N, 2N, ... of each clip
            at their own positions (see [`MusiCoderEmbedder`]).

    Returns:
        `np.ndarray` of shape `(num_clips, num_hidden_layers + 1, hidden_size)` (float32; `2 * hidden_size` with
        `"mean_std"`; `(num_clips, 1, ...)` with `layer_weights`); index 0 of the second axis is the input embedding.
    """
    if pooling not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}.")
    config = encoder.config
    clips = [torch.as_tensor(np.asarray(clip), dtype=torch.float32) for clip in clips]
    num_layers = config.num_hidden_layers + 1
    select = None
    if layer_weights is not None:
        layer_weights = torch.as_tensor(layer_weights, dtype=torch.float32).detach()
        if layer_weights.shape != (num_layers,):
            raise ValueError(f"layer_weights must have one weight per hidden state ({num_layers}: the input embedding "
                             f"and {config.num_hidden_layers} layers), got shape {tuple(layer_weights.shape)}.")
        weights = layer_weights.to(encoder.device).view(1, -1, 1, 1)

        def select(hidden):
            return (hidden.float() * weights).sum(dim=1, keepdim=True)

    frame_stride = check_frame_stride(frame_stride)
    pools = [_WindowPooling(len(clip[::frame_stride]), 1 if select else num_layers, config.hidden_size, pooling)
             for clip in clips]
    encode_windows(encoder, clips, pools, batch_size, select, frame_stride)
    return torch.stack([pool.result() for pool in pools]).numpy()


class MusiCoderEmbedder:
    """
    Embeddings from any MusiCoder checkpoint (pre-trained or fine-tuned: only the encoder is used).

    Args:
        model (`MusiCoderPreTrainedModel`): a MusiCoder model with or without a head; its encoder is used.
        feature_extractor (`MusiCoderFeatureExtractor`): the checkpoint's feature extractor.
        batch_size (`int`, *optional*, defaults to 4): windows (of at most `config.max_position_embeddings` frames) per
            forward pass; bounds peak memory.
        frame_stride (`int`, *optional*, defaults to 1): inference patchout (MAEST, section 4.5): read one frame of
            every `frame_stride`, each at its own position in the model's windows, so the encoder does about N times
            less work. Embeddings pool over the kept frames; with `pooling=None` there is one embedding per kept frame,
            and `timestamps` say where. 1 (exact) reads every frame. Trade-offs: docs/inference.md#patchout.
    """

    def __init__(
        self, model, feature_extractor, batch_size: int = 4, frame_stride: int = 1, window_frames=None, hop_frames=None
    ):
        refuse_window_arguments(window_frames, hop_frames)
        self.frame_stride = check_frame_stride(frame_stride)
        self.encoder = model.base_model.eval()
        self.feature_extractor = feature_extractor
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, dtype: torch.dtype | str | None = None, device=None, **kwargs
    ) -> "MusiCoderEmbedder":
        """
        Load the encoder and feature extractor of a checkpoint.

        Args:
            dtype (`torch.dtype` or `str`, *optional*): the encoder's dtype, e.g. `torch.bfloat16` (about twice as
                fast on CPUs with bf16 instructions and on GPUs; embeddings are returned in float32 either way).
                Default: float32.
            device (*optional*): where the encoder runs, e.g. `"cuda"`. Features are computed where the feature
                extractor says (its `device`).
            kwargs: the constructor's (`batch_size`, `frame_stride`).
        """
        model = AutoModel.from_pretrained(pretrained_model_name_or_path, **({} if dtype is None else {"dtype": dtype}))
        if device is not None:
            model = model.to(device)
        feature_extractor = AutoFeatureExtractor.from_pretrained(pretrained_model_name_or_path)
        return cls(model, feature_extractor, **kwargs)

    @property
    def num_hidden_states(self) -> int:
        return self.encoder.config.num_hidden_layers + 1

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    def resolve_layers(self, layers: int | Sequence[int] | None) -> tuple[int, ...]:
        """`None` -> all hidden states (0 = input embedding .. last layer); negative indices count from the end."""
        if layers is None:
            return tuple(range(self.num_hidden_states))
        layers = [layers] if isinstance(layers, int) else list(layers)
        resolved = []
        for layer in layers:
            if not -self.num_hidden_states <= layer < self.num_hidden_states:
                raise ValueError(
                    f"Layer {layer} does not exist: hidden states are 0 (input embedding) to "
                    f"{self.num_hidden_states - 1} (last encoder layer), or negative indices from the end."
                )
            resolved.append(layer % self.num_hidden_states)
        return tuple(resolved)

    def resolve_pooling(self, pooling: str | None) -> str | None:
        """`"auto"` -> the checkpoint's `config.classifier_pooling`; anything else is checked and returned."""
        if pooling == "auto":
            return self.encoder.config.classifier_pooling
        if pooling not in (*POOLING_MODES, None):
            raise ValueError(f"pooling must be \"auto\", one of {POOLING_MODES}, or None; got {pooling!r}.")
        return pooling

    @torch.no_grad()
    def __call__(
        self,
        audio,
        sampling_rate: int | None = None,
        layers: int | Sequence[int] | None = None,
        pooling: str | None = "auto",
    ) -> MusiCoderEmbeddingOutput | list[MusiCoderEmbeddingOutput]:
        """
        Embed one clip, or a list of clips (their windows are batched together).

        Args:
            audio: a path, bytes, an array/tensor, a `{"array", "sampling_rate"}` dict, or a list of these (see
                [`~musicoder_hf.audio.load_audio`]).
            sampling_rate (`int`, *optional*): rate of array inputs; other rates are resampled. Default: the
                feature extractor's rate.
            layers (`int` or `list[int]`, *optional*): which hidden states; default all.
            pooling (`"auto"`, `"mean"`, `"mean_std"` or `None`): mean over time, mean and standard deviation over
                time (statistics pooling, `2 * hidden_size` values per layer), or one embedding per time step.
                `"auto"` (the default) pools as the checkpoint's classifier does (`config.classifier_pooling`).
        """
        single = not isinstance(audio, (list, tuple))
        clips = [audio] if single else list(audio)
        extractor = self.feature_extractor
        waveforms = [load_audio(clip, extractor.sampling_rate, sampling_rate) for clip in clips]
        features = extractor(waveforms, sampling_rate=extractor.sampling_rate, padding=False)["input_features"]
        results = self.embed_features(features, layers, pooling)
        return results[0] if single else results

    @torch.no_grad()
    def embed_features(
        self,
        features: Sequence[np.ndarray | torch.Tensor],
        layers: int | Sequence[int] | None = None,
        pooling: str | None = "auto",
    ) -> list[MusiCoderEmbeddingOutput]:
        """[`~MusiCoderEmbedder.__call__`] for clips this embedder's feature extractor has already featurised:
        `(frames, feature_size)` each, unpadded."""
        pooling = self.resolve_pooling(pooling)
        layers = self.resolve_layers(layers)
        features = [torch.as_tensor(np.asarray(frames), dtype=torch.float32) for frames in features]
        stride = self.frame_stride
        pools = [_WindowPooling(len(frames[::stride]), len(layers), self.hidden_size, pooling) for frames in features]
        encode_windows(self.encoder, features, pools, self.batch_size, lambda hidden: hidden[:, list(layers)], stride)
        extractor = self.feature_extractor
        results = []
        for frames, pool in zip(features, pools):
            timestamps = kept_frames(frames, stride)[1].float() * extractor.hop_length
            results.append(
                MusiCoderEmbeddingOutput(
                    embeddings=pool.result(), timestamps=timestamps / extractor.sampling_rate, layers=layers
                )
            )
        return results


__all__ = ["MusiCoderEmbedder", "MusiCoderEmbeddingOutput", "pooled_hidden_states"]
