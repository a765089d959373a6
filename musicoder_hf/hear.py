"""The HEAR 2021 API (https://hearbenchmark.com/hear-api.html) for MusiCoder checkpoints.

    from musicoder_hf import hear

    model = hear.load_model("path/to/checkpoint")            # a local folder: nothing is downloaded
    scene = hear.get_scene_embeddings(audio, model)           # audio: (n_sounds, n_samples) at model.sample_rate
    frames, timestamps_ms = hear.get_timestamp_embeddings(audio, model)

The embedding of a time step is the stack of the selected layers' hidden states, concatenated (MAEST-style); by default
every encoder layer (1 .. num_hidden_layers), so `timestamp_embedding_size = num_hidden_layers * hidden_size`. Scene
embeddings pool over time as the checkpoint's classifier does (`config.classifier_pooling`): the mean, or the mean and
standard deviation (then `scene_embedding_size` is twice that). Pass
`layers=[...]` to `load_model` to choose (0 is the input embedding). Time steps are the model's frames: one every
`hop_length / sample_rate` s (23.2 ms), timestamps at frame centres. Sounds of any length are windowed as in
[`~musicoder_hf.embeddings.MusiCoderEmbedder`]. `load_model(..., frame_stride=N)` reads one frame of every N
(inference patchout): N times fewer time steps, at the kept frames' timestamps.
"""

from collections.abc import Sequence

import torch

from .embeddings import MusiCoderEmbedder


class MusiCoderHearModel(torch.nn.Module):
    """What `load_model` returns: the HEAR attributes plus the embedder that does the work."""

    def __init__(self, embedder: MusiCoderEmbedder, layers: Sequence[int]):
        super().__init__()
        self.embedder = embedder
        self.encoder = embedder.encoder  # registered as a submodule so `.to(device)` moves it
        self.layers = embedder.resolve_layers(layers)
        self.sample_rate = embedder.feature_extractor.sampling_rate
        # scene embeddings pool as the checkpoint does (mean, or mean and standard deviation: twice the size)
        self.scene_pooling = embedder.resolve_pooling("auto")
        self.timestamp_embedding_size = len(self.layers) * embedder.hidden_size
        self.scene_embedding_size = self.timestamp_embedding_size * (2 if self.scene_pooling == "mean_std" else 1)

    def embed(self, audio: torch.Tensor, pooling: str | None):
        if not isinstance(audio, torch.Tensor) or audio.ndim != 2:
            raise ValueError(
                f"HEAR audio must be a 2-D tensor (n_sounds, n_samples), got {getattr(audio, 'shape', type(audio))}."
            )
        outputs = self.embedder(
            list(audio.detach().float().cpu().numpy()),
            sampling_rate=self.sample_rate,
            layers=self.layers,
            pooling=pooling,
        )
        # (layers, [frames,] hidden) -> ([frames,] layers * hidden): the layer stack, concatenated per time step.
        return [output.embeddings.movedim(0, -2).flatten(-2) for output in outputs], outputs


def load_model(
    model_file_path: str = "", layers: Sequence[int] | None = None, **embedder_kwargs
) -> MusiCoderHearModel:
    """Load a MusiCoder checkpoint folder (any head) for HEAR; `embedder_kwargs` go to `MusiCoderEmbedder`."""
    if not model_file_path:
        raise ValueError("model_file_path must name a local MusiCoder checkpoint folder (nothing is downloaded).")
    embedder = MusiCoderEmbedder.from_pretrained(model_file_path, **embedder_kwargs)
    if layers is None:
        layers = range(1, embedder.num_hidden_states)
    return MusiCoderHearModel(embedder, layers)


def get_scene_embeddings(audio: torch.Tensor, model: MusiCoderHearModel) -> torch.Tensor:
    """`(n_sounds, n_samples)` audio -> `(n_sounds, scene_embedding_size)`: each layer pooled over time, concatenated."""
    embeddings, _ = model.embed(audio, pooling=model.scene_pooling)
    return torch.stack(embeddings)


def get_timestamp_embeddings(audio: torch.Tensor, model: MusiCoderHearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """`(n_sounds, n_samples)` audio -> embeddings `(n_sounds, n_frames, timestamp_embedding_size)` and their centre
    times in milliseconds `(n_sounds, n_frames)`."""
    embeddings, outputs = model.embed(audio, pooling=None)
    timestamps = torch.stack([output.timestamps * 1000.0 for output in outputs])
    return torch.stack(embeddings), timestamps


__all__ = ["MusiCoderHearModel", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
