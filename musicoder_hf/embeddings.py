"""Per-layer MusiCoder embeddings of audio of any length, for probing (MARBLE/HEAR style) and retrieval.

    from musicoder_hf.embeddings import MusiCoderEmbedder

    embedder = MusiCoderEmbedder.from_pretrained("path/to/checkpoint")
    clip = embedder("track.flac")                       # every layer, mean over time: (num_layers + 1, hidden_size)
    frames = embedder("track.flac", pooling=None)       # every layer, per time step: (num_layers + 1, frames, hidden)
    stack = embedder("track.flac", layers=[-3, -2, -1]) # a stack of the last three layers, as in MAEST

Long audio is cut into windows of at most `window_frames` frames with `hop_frames` hop (default: the model's 1600
frames, half overlap). Each window is featurised and normalised on its own, like a training clip. A time step covered
by several windows gets the mean of their embeddings; the clip embedding is the mean over time steps, so overlaps are
not counted twice. Windows are batched, so peak memory depends on `batch_size x window_frames`, not on the track
length.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModel
from transformers.utils import ModelOutput

from .audio import frame_windows, load_audio


@dataclass
class MusiCoderEmbeddingOutput(ModelOutput):
    """
    Embeddings of one clip.

    Args:
        embeddings (`torch.FloatTensor` of shape `(num_selected_layers, hidden_size)` or
            `(num_selected_layers, num_frames, hidden_size)`):
            Hidden states of the selected layers, averaged over time (`pooling="mean"`) or per time step
            (`pooling=None`).
        timestamps (`torch.FloatTensor` of shape `(num_frames,)`):
            Centre of each time step in seconds (frame `t` is centred on sample `t * hop_length`).
        layers (`tuple[int]`):
            Which entries of `hidden_states` were taken: 0 is the input embedding (projection + positions), `i` the
            output of encoder layer `i`.
    """

    embeddings: torch.FloatTensor | None = None
    timestamps: torch.FloatTensor | None = None
    layers: tuple[int, ...] | None = None


class MusiCoderEmbedder:
    """
    Embeddings from any MusiCoder checkpoint (pre-trained or fine-tuned: only the encoder is used).

    Args:
        model (`MusiCoderPreTrainedModel`): a MusiCoder model with or without a head; its encoder is used.
        feature_extractor (`MusiCoderFeatureExtractor`): the checkpoint's feature extractor.
        window_frames (`int`, *optional*): longest window the encoder sees, at most (and by default)
            `config.max_position_embeddings` (1600 frames, about 37 s).
        hop_frames (`int`, *optional*): hop between windows, by default half a window (MAEST's evaluation).
        batch_size (`int`, *optional*, defaults to 4): windows per forward pass; bounds peak memory.
    """

    def __init__(
        self,
        model,
        feature_extractor,
        window_frames: int | None = None,
        hop_frames: int | None = None,
        batch_size: int = 4,
    ):
        self.encoder = model.base_model.eval()
        self.feature_extractor = feature_extractor
        max_frames = self.encoder.config.max_position_embeddings
        self.window_frames = window_frames or max_frames
        if self.window_frames > max_frames:
            raise ValueError(
                f"window_frames={self.window_frames} exceeds the model's max_position_embeddings={max_frames}."
            )
        self.hop_frames = hop_frames or max(1, self.window_frames // 2)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "MusiCoderEmbedder":
        """Load the encoder and feature extractor of a checkpoint; `kwargs` go to the constructor."""
        model = AutoModel.from_pretrained(pretrained_model_name_or_path)
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

    @torch.no_grad()
    def __call__(
        self,
        audio,
        sampling_rate: int | None = None,
        layers: int | Sequence[int] | None = None,
        pooling: str | None = "mean",
    ) -> MusiCoderEmbeddingOutput | list[MusiCoderEmbeddingOutput]:
        """
        Embed one clip, or a list of clips (their windows are batched together).

        Args:
            audio: a path, bytes, an array/tensor, a `{"array", "sampling_rate"}` dict, or a list of these (see
                [`~musicoder_hf.audio.load_audio`]).
            sampling_rate (`int`, *optional*): rate of array inputs; other rates are resampled. Default: the
                feature extractor's rate.
            layers (`int` or `list[int]`, *optional*): which hidden states; default all.
            pooling (`"mean"` or `None`): mean over time, or one embedding per time step.
        """
        if pooling not in ("mean", None):
            raise ValueError(f"pooling must be 'mean' or None, got {pooling!r}.")
        single = not isinstance(audio, (list, tuple))
        clips = [audio] if single else list(audio)
        layers = self.resolve_layers(layers)
        extractor = self.feature_extractor
        waveforms = [load_audio(clip, extractor.sampling_rate, sampling_rate) for clip in clips]
        plans = [
            frame_windows(len(w), extractor.hop_length, extractor.n_fft, self.window_frames, self.hop_frames)
            for w in waveforms
        ]
        totals = [plan[-1].stop_frame for plan in plans]
        # A time step covered by k windows gets 1/k of each window's embedding.
        weights = []
        for plan, total in zip(plans, totals):
            coverage = np.zeros(total, dtype=np.float32)
            for window in plan:
                coverage[window.first_frame : window.stop_frame] += 1
            weights.append(torch.from_numpy(1.0 / coverage))
        shape = (len(layers), self.hidden_size) if pooling == "mean" else None
        sums = [torch.zeros(shape or (len(layers), total, self.hidden_size)) for total in totals]

        jobs = [(index, window) for index, plan in enumerate(plans) for window in plan]
        device, dtype = self.encoder.device, self.encoder.dtype
        for first in range(0, len(jobs), self.batch_size):
            batch = jobs[first : first + self.batch_size]
            inputs = extractor(
                [waveforms[i][w.start : w.stop] for i, w in batch],
                sampling_rate=extractor.sampling_rate,
                return_tensors="pt",
            )
            outputs = self.encoder(
                inputs["input_features"].to(device, dtype),
                attention_mask=inputs["attention_mask"].to(device),
                output_hidden_states=True,
            )
            hidden = torch.stack([outputs.hidden_states[layer] for layer in layers], dim=1).float().cpu()
            for row, (index, window) in enumerate(batch):
                frames = window.stop_frame - window.first_frame
                weighted = hidden[row, :, :frames] * weights[index][window.first_frame : window.stop_frame, None]
                if pooling == "mean":
                    sums[index] += weighted.sum(dim=1)
                else:
                    sums[index][:, window.first_frame : window.stop_frame] += weighted

        results = []
        for index, total in enumerate(totals):
            embeddings = sums[index] / total if pooling == "mean" else sums[index]
            timestamps = torch.arange(total, dtype=torch.float32) * extractor.hop_length / extractor.sampling_rate
            results.append(MusiCoderEmbeddingOutput(embeddings=embeddings, timestamps=timestamps, layers=layers))
        return results[0] if single else results


__all__ = ["MusiCoderEmbedder", "MusiCoderEmbeddingOutput"]
