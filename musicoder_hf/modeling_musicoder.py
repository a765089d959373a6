"""PyTorch MusiCoder: a BERT-style encoder over 324-dim music acoustic frames (Zhao & Guo, MMM 2021).

One model, one file: the embeddings, the post-LN encoder, the masked-reconstruction pre-training head and the sequence
classifier. This file is copied next to saved checkpoints for `trust_remote_code=True` loading, so it imports only
torch, transformers and `configuration_musicoder`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_musicoder import MusiCoderConfig


def sinusoidal_position_table(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed positional encoding of Vaswani et al.: sin on even channels, cos on odd ones."""
    position = torch.arange(num_positions, dtype=torch.float32).unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: dim // 2])
    return table


def window_spans(num_frames: int, max_frames: int) -> list[tuple[int, int]]:
    """
    How MusiCoder reads a clip of `num_frames` valid frames when it is longer than its window: the fewest windows of
    at most `max_frames` frames, end to end, of equal lengths (they differ by one frame at most). Every frame is in
    exactly one window, and no window is a short remainder with little context: 1292 frames (a 30 s clip) in windows
    of 300 are 5 windows of 258-259 frames. Each window is encoded on its own, with positions from 0.

    The model's `forward` windows its input this way; the pipeline, `MusiCoderEmbedder` and the evaluation helpers
    reach it through `forward` or call this function, so a clip gets the same result through every door.

    Returns:
        `list[tuple[int, int]]`: the windows `[start, stop)`, in order; one window `(0, num_frames)` for a clip that
        fits.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be positive, got {max_frames}.")
    count = max(1, -(-num_frames // max_frames))
    length, longer = divmod(num_frames, count)
    stops = [0]
    for index in range(count):
        stops.append(stops[-1] + length + (index < longer))
    return list(zip(stops[:-1], stops[1:]))


def position_windows(positions: torch.Tensor, max_frames: int) -> list[tuple[int, int, int]]:
    """
    [`window_spans`] for a clip whose frames sit at `positions` on its frame axis: sorted frame indices, e.g.
    `0, 2, 4, ...` when inference patchout keeps one frame of every 2 (`frame_stride`). The axis up to the last
    position is cut by `window_spans`, and each window takes the frames that fall in it, at their positions minus the
    window's start, so a kept frame keeps its own position inside its window.

    Returns:
        `list[tuple[int, int, int]]`: per window, `(first, stop, start)`: the frames `positions[first:stop]`, and the
        window's first position on the axis. Windows without a frame are left out.
    """
    spans = window_spans(int(positions[-1]) + 1, max_frames)
    starts = torch.tensor([start for start, _ in spans] + [spans[-1][1]], dtype=positions.dtype)
    bounds = torch.searchsorted(positions.cpu(), starts).tolist()
    return [(first, stop, start) for (start, _), first, stop in zip(spans, bounds[:-1], bounds[1:]) if stop > first]


# Frames per encoder pass when a long input is read window by window: windows go through the encoder in groups of
# about this many frames, so activation memory does not grow with the clip (only the outputs, one vector per frame).
WINDOWED_FRAMES_PER_PASS = 8192


class MusiCoderFrameEmbeddings(nn.Module):
    """Frame projection (324 -> hidden) plus sinusoidal positions, then LayerNorm and dropout as in BERT."""

    def __init__(self, config: MusiCoderConfig):
        super().__init__()
        self.frame_projection = nn.Linear(config.feature_size, config.hidden_size)
        # Deterministic, so not saved; `_init_weights` refills it after `from_pretrained` allocates it empty.
        self.register_buffer(
            "position_table",
            sinusoidal_position_table(config.max_position_embeddings, config.hidden_size),
            persistent=False,
        )
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_features: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        # The feature extractor's float32 frames feed a model loaded with `dtype=torch.bfloat16` as they are.
        input_features = input_features.to(self.frame_projection.weight.dtype)
        if position_ids is None:
            positions = self.position_table[: input_features.shape[1]]
        else:
            positions = self.position_table[position_ids]
        embeddings = self.frame_projection(input_features) + positions
        return self.dropout(self.layer_norm(embeddings))


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


# Queries per block in `query_chunked_attention`: one block's scores (heads x 256 x frames) stay in the CPU's cache.
ATTENTION_QUERY_CHUNK = 256


def query_chunked_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    """
    Softmax attention block of queries by block of queries, with plain matmuls: for bfloat16 inference on CPU, where
    it is about twice as fast as PyTorch's CPU flash-attention kernel (docs/inference.md). The scores are bfloat16,
    as the matmul gives them; the softmax computes in float32 inside and rounds its output to bfloat16.

    Args:
        query, key, value (`torch.Tensor` of shape `(batch, heads, frames, head_dim)`).
        attention_mask (`torch.Tensor`, *optional*): the `sdpa` mask, boolean (True where attention is allowed) or
            additive, broadcastable to `(batch, heads, frames, frames)`.
    Returns:
        `torch.Tensor` of shape `(batch, frames, heads, head_dim)`, as the attention interface returns it.
    """
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        attention_mask = torch.zeros((), dtype=query.dtype).masked_fill(
            ~attention_mask, torch.finfo(query.dtype).min)
    output = torch.empty_like(query)
    key_transposed = key.transpose(2, 3)
    for first in range(0, query.shape[2], ATTENTION_QUERY_CHUNK):
        rows = slice(first, first + ATTENTION_QUERY_CHUNK)
        scores = torch.matmul(query[:, :, rows] * scaling, key_transposed)
        if attention_mask is not None:
            scores = scores + (attention_mask[:, :, rows] if attention_mask.shape[2] > 1 else attention_mask)
        output[:, :, rows] = torch.matmul(torch.softmax(scores, dim=-1), value)
    return output.transpose(1, 2).contiguous()


class MusiCoderAttention(nn.Module):
    """Multi-head self-attention; the kernel (eager, sdpa, flex, flash) follows `config._attn_implementation`. With
    `sdpa`, bfloat16 inference on CPU runs `query_chunked_attention` instead of PyTorch's kernel (twice as fast there);
    training, other dtypes and devices, `torch.compile` and export keep PyTorch's."""

    def __init__(self, config: MusiCoderConfig):
        super().__init__()
        self.config = config
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        if self.runs_query_chunked(query):
            attn_output = query_chunked_attention(query, key, value, attention_mask, self.scaling)
            return self.o_proj(attn_output.reshape(*input_shape, -1)), None

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = self.o_proj(attn_output.reshape(*input_shape, -1).contiguous())
        return attn_output, attn_weights

    def runs_query_chunked(self, query: torch.Tensor) -> bool:
        """Whether this forward pass takes `query_chunked_attention` (see the class docstring)."""
        return (
            self.config._attn_implementation == "sdpa"
            and not self.training
            and query.dtype == torch.bfloat16
            and query.device.type == "cpu"
            and not torch.compiler.is_compiling()
            and not torch.compiler.is_exporting()
        )


class MusiCoderFeedForward(nn.Module):
    def __init__(self, config: MusiCoderConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden_states)))


class MusiCoderLayer(GradientCheckpointingLayer):
    """Post-LN transformer block (residual, then LayerNorm) as in BERT and the paper's Fig. 1."""

    def __init__(self, config: MusiCoderConfig):
        super().__init__()
        self.attention = MusiCoderAttention(config)
        self.attention_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = MusiCoderFeedForward(config)
        self.output_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.attention(hidden_states, attention_mask, **kwargs)
        hidden_states = self.attention_layer_norm(hidden_states + self.dropout(attn_output))
        hidden_states = self.output_layer_norm(hidden_states + self.dropout(self.feed_forward(hidden_states)))
        return hidden_states, attn_weights


class MusiCoderPreTrainedModel(PreTrainedModel):
    config_class = MusiCoderConfig
    config: MusiCoderConfig
    base_model_prefix = "musicoder"
    main_input_name = "input_features"
    input_modalities = "audio"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MusiCoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MusiCoderFrameEmbeddings):
            init.copy_(module.position_table, sinusoidal_position_table(*module.position_table.shape))
        elif isinstance(module, MusiCoderForSequenceClassification) and module.layer_weights is not None:
            init.constant_(module.layer_weights, 1.0 / module.layer_weights.numel())

    # ----- Loading and saving: safetensors only, and a checkpoint's config must describe its weights. -----
    # (Imports are local: this file is copied next to checkpoints for `trust_remote_code`, keep it self-contained.)

    class CheckpointMismatchError(ValueError, RuntimeError):
        """A checkpoint's weights do not fit the model its config describes.

        A `ValueError`; also a `RuntimeError`, which is what transformers raises for size mismatches, so code written
        against transformers keeps catching it.
        """

    _SAFETENSORS_ONLY = (
        "MusiCoder loads weights from safetensors files only: pickled PyTorch weights (pytorch_model.bin, *.pt, "
        "*.pth, *.ckpt) can run arbitrary code while they are unpickled, so they are never loaded."
    )
    # Config fields that set tensor shapes, used to name the field behind a shape mismatch.
    _SHAPE_FIELDS = ("hidden_size", "intermediate_size", "feature_size", "num_labels", "max_position_embeddings")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        r"""
        [`~transformers.PreTrainedModel.from_pretrained`] with two guarantees on top:

        - **safetensors only.** Pickled weights (`pytorch_model.bin`, `*.pt`, `*.pth`, `*.ckpt`) are refused with an
          `OSError` and never unpickled, as is `use_safetensors=False`: unpickling can run arbitrary code.
        - **The config describes the weights.** If an encoder weight is missing from the checkpoint, has another
          shape than the config implies, or the checkpoint holds encoder weights the config has no room for (e.g.
          `num_hidden_layers=4` in `config.json` but weights for 2 layers), loading fails with
          [`~MusiCoderPreTrainedModel.CheckpointMismatchError`] (a `ValueError`) that names the checkpoint, the keys,
          their shapes and the config fields involved. (transformers' default is to initialise such weights at random
          with a warning.) Heads follow transformers: a head missing from the checkpoint is a new head (e.g. a
          classifier on a pre-training checkpoint), another task's head in the checkpoint is ignored, and a head whose
          shape changed (a new label count) needs `ignore_mismatched_sizes=True`. `ignore_mismatched_sizes` never
          applies to the encoder.
        """
        import os

        if kwargs.get("use_safetensors") is False:
            raise ValueError(f"use_safetensors=False is not supported. {cls._SAFETENSORS_ONLY}")
        if pretrained_model_name_or_path is not None:
            cls._refuse_pickled_weights(os.fspath(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
            kwargs["use_safetensors"] = True
        output_loading_info = kwargs.pop("output_loading_info", False)
        ignore_mismatched_sizes = kwargs.pop("ignore_mismatched_sizes", False)
        # Size mismatches are judged below (with a clearer message than transformers' bare RuntimeError). A Hub
        # repository without safetensors weights fails inside transformers, which names the missing file.
        model, loading_info = super().from_pretrained(
            pretrained_model_name_or_path,
            *model_args,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **kwargs,
        )
        model._check_weights_match_config(pretrained_model_name_or_path, loading_info, ignore_mismatched_sizes)
        return (model, loading_info) if output_loading_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """[`~transformers.PreTrainedModel.save_pretrained`]; weights are always written as safetensors."""
        if kwargs.pop("safe_serialization", True) is False:
            raise ValueError(f"safe_serialization=False is not supported. {self._SAFETENSORS_ONLY}")
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def _refuse_pickled_weights(cls, path: str, subfolder: str) -> None:
        """Refuse a local weights file or folder that only has pickled weights (Hub repositories: see the caller)."""
        import os

        pickle_suffixes = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".bin.index.json")
        conversion = (
            " Convert them once, in an environment you trust: `from safetensors.torch import save_file; "
            "save_file(torch.load('pytorch_model.bin', weights_only=True), 'model.safetensors')`."
        )
        if os.path.isfile(path):
            if path.endswith(pickle_suffixes):
                raise OSError(f"{path} is a pickled weights file. {cls._SAFETENSORS_ONLY}{conversion}")
            return
        folder = os.path.join(path, subfolder)
        if not os.path.isdir(folder):
            return
        names = os.listdir(folder)
        if any(name.endswith((".safetensors", ".safetensors.index.json")) for name in names):
            return
        pickled = sorted(n for n in names if n.startswith(("pytorch_model", "model")) and n.endswith(pickle_suffixes))
        if pickled:
            raise OSError(
                f"{folder} holds pickled weights ({', '.join(pickled)}) and no model.safetensors. "
                f"{cls._SAFETENSORS_ONLY}{conversion}"
            )

    def _check_weights_match_config(self, source, loading_info: dict, ignore_mismatched_sizes: bool) -> None:
        """Raise `CheckpointMismatchError` if the loaded checkpoint's encoder weights disagree with `self.config`."""
        import re

        base = self.base_model
        prefix = f"{self.base_model_prefix}."
        encoder_parts = {name for name, _ in base.named_children()}
        encoder_parts |= {name for name, _ in base.named_parameters(recurse=False)}

        def in_encoder(key: str) -> bool:
            return key.removeprefix(prefix).split(".")[0] in encoder_parts

        missing = sorted(key for key in loading_info["missing_keys"] if in_encoder(key))
        unexpected = sorted(key for key in loading_info["unexpected_keys"] if in_encoder(key))
        mismatched = sorted(
            (key, tuple(in_checkpoint), tuple(in_model))
            for key, in_checkpoint, in_model in loading_info["mismatched_keys"]
            if in_encoder(key) or not ignore_mismatched_sizes
        )
        if not (missing or unexpected or mismatched):
            return

        def listing(keys: list[str], limit: int = 8) -> str:
            shown = ", ".join(keys[:limit])
            return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")

        fields = []  # "name: config says X, the checkpoint's weights say Y"
        layer = re.compile(r"(?:^|\.)layers\.(\d+)\.")
        if missing or unexpected:
            missing_set = set(missing)
            loaded = [key for key in self.state_dict() if key not in missing_set]
            present = {int(m.group(1)) for key in loaded + unexpected if (m := layer.search(key))}
            if len(present) != self.config.num_hidden_layers:
                fields.append(
                    f"num_hidden_layers: the config says {self.config.num_hidden_layers}, the checkpoint's weights "
                    f"hold {len(present)} layer(s)"
                )
        shape_values = {}  # field -> values seen in the checkpoint where the model has the config's value
        for _, in_checkpoint, in_model in mismatched:
            if len(in_checkpoint) != len(in_model):
                continue
            for checkpoint_dim, model_dim in zip(in_checkpoint, in_model):
                if checkpoint_dim == model_dim:
                    continue
                for name in self._SHAPE_FIELDS:
                    if getattr(self.config, name, None) == model_dim:
                        shape_values.setdefault(name, set()).add(checkpoint_dim)
        for name, values in shape_values.items():
            seen = " or ".join(str(v) for v in sorted(values))
            fields.append(f"{name}: the config says {getattr(self.config, name)}, the checkpoint's weights say {seen}")

        lines = [
            f"The checkpoint {source or '(state_dict)'} does not fit {self.__class__.__name__} as its config describes "
            "it: loading it would leave weights randomly initialised or drop some of the checkpoint's."
        ]
        if fields:
            lines.append("Config fields that disagree with the weights: " + "; ".join(fields) + ".")
        if mismatched:
            shapes = [f"{key} (checkpoint {list(c)}, config {list(m)})" for key, c, m in mismatched]
            lines.append(f"Shape mismatch ({len(mismatched)} tensors): {listing(shapes, 6)}.")
        if missing:
            lines.append(f"Missing from the checkpoint ({len(missing)} tensors): {listing(missing)}.")
        if unexpected:
            lines.append(
                f"In the checkpoint but not in the config's model ({len(unexpected)} tensors): {listing(unexpected)}."
            )
        if mismatched and not (missing or unexpected or any(in_encoder(key) for key, _, _ in mismatched)):
            lines.append(
                "Only the head differs: to train a new head (e.g. another label count), pass "
                "`ignore_mismatched_sizes=True`."
            )
        else:
            lines.append(
                "Load it with the config it was saved with (do not override these fields), or fix its config.json. "
                "To reuse part of the weights on purpose, build the model with `from_config` and call "
                "`load_state_dict(..., strict=False)` yourself."
            )
        raise self.CheckpointMismatchError("\n".join(lines))


class MusiCoderModel(MusiCoderPreTrainedModel):
    """The bare MusiCoder encoder: frames in, contextual frame representations out."""

    # Loading the encoder of a fine-tuned or pre-training checkpoint (e.g. for embeddings) drops its head quietly.
    _keys_to_ignore_on_load_unexpected = [
        r"^classifier\.", r"^layer_weights$", r"^reconstruction_head\."
    ]

    def __init__(self, config: MusiCoderConfig):
        super().__init__(config)
        self.embeddings = MusiCoderFrameEmbeddings(config)
        self.layers = nn.ModuleList([MusiCoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Linear:
        return self.embeddings.frame_projection

    def set_input_embeddings(self, value: nn.Linear):
        self.embeddings.frame_projection = value

    def _check_inputs(
        self, input_features: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None
    ):
        if input_features is None:
            raise ValueError("You have to specify `input_features` of shape (batch_size, num_frames, feature_size).")
        if input_features.dim() != 3 or input_features.shape[-1] != self.config.feature_size:
            raise ValueError(
                f"`input_features` must have shape (batch_size, num_frames, {self.config.feature_size}), got "
                f"{tuple(input_features.shape)}. Use MusiCoderFeatureExtractor to turn audio into frames."
            )
        if attention_mask is not None:
            if attention_mask.shape != input_features.shape[:2]:
                raise ValueError(
                    f"`attention_mask` must have shape {tuple(input_features.shape[:2])} (batch_size, num_frames), "
                    f"got {tuple(attention_mask.shape)}."
                )
            # A check on the mask's values, not its shape: an exported graph (torch.export, ONNX) cannot branch on
            # data, so there the caller (e.g. the feature extractor, which never emits an empty row) guarantees it.
            if not torch.compiler.is_exporting() and not attention_mask.bool().any(dim=-1).all():
                raise ValueError("Every example needs at least one valid frame: an `attention_mask` row is all zeros.")
        if position_ids is not None:
            if position_ids.shape != input_features.shape[:2] or position_ids.is_floating_point():
                raise ValueError(
                    f"`position_ids` must be integers of shape {tuple(input_features.shape[:2])} (batch_size, "
                    f"num_frames), got {position_ids.dtype} of shape {tuple(position_ids.shape)}."
                )
            if (position_ids < 0).any():
                raise ValueError("`position_ids` must not be negative: they are the frames' indices on the clip.")

    def forward(
        self,
        input_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | BaseModelOutput:
        r"""
        Args:
            input_features (`torch.FloatTensor` of shape `(batch_size, num_frames, feature_size)`):
                Normalised acoustic frames from [`MusiCoderFeatureExtractor`], any number of frames. A clip longer
                than `config.max_position_embeddings` frames is read in windows (see [`window_spans`]): the fewest
                windows that fit, end to end and of equal lengths, each encoded on its own with its own positions,
                and put back in place, so `last_hidden_state` has one vector per input frame. Windows are planned on
                each clip's valid frames, so padding a clip in a batch does not change its result.
            attention_mask (`torch.Tensor` of shape `(batch_size, num_frames)`, *optional*):
                1 for valid frames, 0 for padding. Padding frames are never attended to. In an input longer than the
                window, the hidden states of padding frames are zeros.
            position_ids (`torch.LongTensor` of shape `(batch_size, num_frames)`, *optional*):
                Each frame's index on its clip's frame axis, increasing along the valid frames; default: the valid
                frames are consecutive. Inference patchout passes them: [`MusiCoderFeatureExtractor`] with
                `frame_stride=N` keeps one frame of every N, at positions `0, N, 2N, ...`. The clip's axis, up to its
                last position, is then windowed as above ([`position_windows`]) and each kept frame keeps its own
                position in its window: the model reads windows of the same span with N times fewer frames.
            output_attentions / output_hidden_states / return_dict:
                As everywhere in transformers. `hidden_states` holds the embeddings plus one entry per layer.
                Attention weights are per window, so `output_attentions` needs an input that fits one window.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_inputs(input_features, attention_mask, position_ids)

        if position_ids is None:
            fits = input_features.shape[1] <= self.config.max_position_embeddings
        else:
            fits = int(position_ids.max()) < self.config.max_position_embeddings
        if fits:
            output = self._encode(
                input_features, attention_mask, output_attentions, output_hidden_states, position_ids, **kwargs
            )
        else:
            if output_attentions:
                raise ValueError(
                    f"output_attentions=True needs an input of at most {self.config.max_position_embeddings} frames "
                    f"(config.max_position_embeddings), got {input_features.shape[1]} frames or positions past it: "
                    "a longer input is read in windows, each with its own attention. Pass the windows "
                    "(`window_spans`) one by one to see them."
                )
            output = self._encode_in_windows(
                input_features, attention_mask, output_hidden_states, position_ids, **kwargs
            )
        return output if return_dict else output.to_tuple()

    def _encode(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output_attentions: bool,
        output_hidden_states: bool,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutput:
        """The encoder over inputs whose positions fit one window (`max_position_embeddings`)."""
        hidden_states = self.embeddings(input_features, position_ids)
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask)

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, mask, **kwargs)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )

    def _encode_in_windows(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output_hidden_states: bool,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutput:
        """The encoder over inputs longer than its window: each clip's valid frames are cut by `window_spans` (by
        `position_windows` when the frames carry `position_ids`), the windows of the whole batch are gathered, padded
        and encoded in groups of about `WINDOWED_FRAMES_PER_PASS` frames, and their hidden states are put back at
        their frames."""
        batch_size, num_frames, _ = input_features.shape
        device = input_features.device
        if attention_mask is None:
            valid_frames = [torch.arange(num_frames, device=device)] * batch_size
        else:
            valid_frames = [row.nonzero().squeeze(-1) for row in attention_mask.bool()]
        window = self.config.max_position_embeddings
        # per window: its clip, the input frames it reads, and their positions in it (None: 0, 1, 2, ...)
        window_clip, window_frames, window_positions = [], [], []
        for clip, frames in enumerate(valid_frames):
            if position_ids is None:
                for start, stop in window_spans(len(frames), window):
                    window_clip.append(clip)
                    window_frames.append(frames[start:stop])
                continue
            positions = position_ids[clip, frames]
            for first, stop, start in position_windows(positions, window):
                window_clip.append(clip)
                window_frames.append(frames[first:stop])
                window_positions.append(positions[first:stop] - start)
        longest = max(len(frames) for frames in window_frames)
        window_mask = torch.zeros(len(window_frames), longest, dtype=torch.long, device=device)
        frame_index = torch.zeros(len(window_frames), longest, dtype=torch.long, device=device)
        local_positions = torch.zeros_like(frame_index) if position_ids is not None else None
        for row, frames in enumerate(window_frames):
            window_mask[row, : len(frames)] = 1
            frame_index[row, : len(frames)] = frames
            if local_positions is not None:
                local_positions[row, : len(frames)] = window_positions[row]
        clip_index = torch.tensor(window_clip, device=device).unsqueeze(1).expand_as(frame_index)

        group = max(1, WINDOWED_FRAMES_PER_PASS // longest)
        states = None  # per hidden state: (batch_size, num_frames, hidden), filled group by group
        for first in range(0, len(window_frames), group):
            rows = slice(first, first + group)
            windows = input_features[clip_index[rows], frame_index[rows]]
            positions = None if local_positions is None else local_positions[rows]
            encoded = self._encode(windows, window_mask[rows], False, output_hidden_states, positions, **kwargs)
            per_state = encoded.hidden_states if output_hidden_states else (encoded.last_hidden_state,)
            if states is None:
                states = [hidden.new_zeros(batch_size, num_frames, hidden.shape[-1]) for hidden in per_state]
            # Back in place: frame t of clip b gets the vector its window computed for it; padding frames stay zero.
            valid = window_mask[rows].bool()
            where = (clip_index[rows][valid], frame_index[rows][valid])
            for placed, hidden in zip(states, per_state):
                placed[where] = hidden[valid]
        return BaseModelOutput(
            last_hidden_state=states[-1], hidden_states=tuple(states) if output_hidden_states else None
        )


@dataclass
class MusiCoderForPreTrainingOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is provided):
        Huber reconstruction loss (paper eq. 3) averaged over the elements selected by `reconstruction_mask`.
    reconstruction (`torch.FloatTensor` of shape `(batch_size, num_frames, feature_size)`):
        The predicted (unmasked) frames.
    hidden_states / attentions: As in [`MusiCoderModel`].
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class MusiCoderReconstructionHead(nn.Module):
    """Paper section 3.3: two feed-forward layers with GELU and LayerNorm, hidden -> hidden -> frame."""

    def __init__(self, config: MusiCoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.feature_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(self.activation(self.dense(hidden_states))))


def masked_huber_loss(
    reconstruction: torch.Tensor, labels: torch.Tensor, reconstruction_mask: torch.Tensor, delta: float = 1.0
) -> torch.Tensor:
    """Huber loss (paper eq. 3 for delta=1) averaged over the elements where `reconstruction_mask` is True.

    Computed densely and weighted by the mask, so shapes stay static (no boolean indexing) and a batch with nothing
    to reconstruct gives 0 instead of NaN.
    """
    elementwise = nn.functional.huber_loss(reconstruction.float(), labels.float(), reduction="none", delta=delta)
    weights = reconstruction_mask.to(elementwise.dtype)
    return (elementwise * weights).sum() / weights.sum().clamp(min=1.0)


class MusiCoderForPreTraining(MusiCoderPreTrainedModel):
    """MusiCoder with the masked-reconstruction head, trained with CFM + CCM masks from
    `DataCollatorForMusiCoderPreTraining`, whose output feeds `forward(**batch)` directly."""

    def __init__(self, config: MusiCoderConfig):
        super().__init__(config)
        self.musicoder = MusiCoderModel(config)
        self.reconstruction_head = MusiCoderReconstructionHead(config)
        self.post_init()

    def forward(
        self,
        input_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        reconstruction_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | MusiCoderForPreTrainingOutput:
        r"""
        Args:
            input_features (`torch.FloatTensor` of shape `(batch_size, num_frames, feature_size)`):
                The masked frames.
            attention_mask (`torch.Tensor` of shape `(batch_size, num_frames)`, *optional*):
                1 for valid frames, 0 for padding.
            labels (`torch.FloatTensor` of shape `(batch_size, num_frames, feature_size)`, *optional*):
                The original (unmasked) frames to reconstruct.
            reconstruction_mask (`torch.BoolTensor` of shape `(batch_size, num_frames, feature_size)`, *optional*):
                The elements the loss is computed on: the frames selected by CFM (including those left unchanged) and
                the channels zeroed by CCM. If omitted, every element of every valid frame counts.
            position_ids (`torch.LongTensor` of shape `(batch_size, num_frames)`, *optional*):
                The frames' indices on their clips, as in [`MusiCoderModel`].
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.musicoder(
            input_features,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        reconstruction = self.reconstruction_head(outputs.last_hidden_state)

        loss = None
        if labels is not None:
            if labels.shape != reconstruction.shape:
                raise ValueError(f"`labels` must have shape {tuple(reconstruction.shape)}, got {tuple(labels.shape)}.")
            if reconstruction_mask is None:
                valid = torch.ones_like(labels[..., 0]) if attention_mask is None else attention_mask
                reconstruction_mask = valid.bool().unsqueeze(-1).expand_as(labels)
            loss = masked_huber_loss(reconstruction, labels, reconstruction_mask, self.config.huber_delta)

        output = MusiCoderForPreTrainingOutput(
            loss=loss,
            reconstruction=reconstruction,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


def masked_mean(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the valid frames only, so padding never changes a clip's pooled vector."""
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    weights = attention_mask.to(hidden_states.dtype).unsqueeze(-1)
    return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


# Floor of the variance in statistics pooling: the square root keeps a finite gradient on a constant clip.
STD_POOLING_VARIANCE_FLOOR = 1e-10


def masked_pool(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str = "mean"
) -> torch.Tensor:
    """
    Pool `(batch, frames, hidden)` over the valid frames: `"mean"` gives `(batch, hidden)`; `"mean_std"` (statistics
    pooling) gives `(batch, 2 * hidden)`, the mean then the (population) standard deviation over time. The statistics
    are computed in float32 whatever the model's dtype (in bfloat16 a frame count such as 1291 is not even exact), and
    returned in the hidden states' dtype.
    """
    if pooling not in ("mean", "mean_std"):
        raise ValueError(f"pooling must be 'mean' or 'mean_std', got {pooling!r}.")
    dtype = hidden_states.dtype
    hidden_states = hidden_states.float()
    mean = masked_mean(hidden_states, attention_mask)
    if pooling == "mean":
        return mean.to(dtype)
    squares = masked_mean((hidden_states - mean.unsqueeze(1)).square(), attention_mask)
    return torch.cat([mean, squares.clamp(min=STD_POOLING_VARIANCE_FLOOR).sqrt()], dim=-1).to(dtype)


class MusiCoderForSequenceClassification(MusiCoderPreTrainedModel):
    """MusiCoder with a clip-level head: pooling over valid frames (mean, or mean and standard deviation with
    `config.classifier_pooling="mean_std"`) of the last layer, or of a learned weighted sum of all layers when
    `config.use_weighted_layer_sum`, then dropout and a linear layer. Single-label (softmax,
    cross-entropy), multi-label tagging (sigmoid, BCE) and regression follow `config.problem_type`."""

    # Fine-tuning starts from pre-training checkpoints: their reconstruction head is expected to be left behind.
    _keys_to_ignore_on_load_unexpected = [r"reconstruction_head\."]

    def __init__(self, config: MusiCoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.musicoder = MusiCoderModel(config)
        num_layers = config.num_hidden_layers + 1  # embeddings + each transformer layer
        self.layer_weights = nn.Parameter(torch.ones(num_layers) / num_layers) if config.use_weighted_layer_sum else None
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        pooled_size = 2 * config.hidden_size if config.classifier_pooling == "mean_std" else config.hidden_size
        self.classifier = nn.Linear(pooled_size, config.num_labels)
        self.post_init()

    def freeze_feature_encoder(self):
        """Stop gradients to the frame embedding (the projection of the 324-dim frames and its LayerNorm), the first
        stage of the encoder, as wav2vec2's `freeze_feature_encoder` freezes its convolutional front end; the
        transformer layers and the head keep training. transformers' audio-classification example calls it unless
        `--freeze_feature_encoder False`."""
        for param in self.musicoder.embeddings.parameters():
            param.requires_grad = False

    def freeze_base_model(self):
        """Stop gradients to the encoder, so only the head (and layer weights) train: the linear-probe setting."""
        for param in self.musicoder.parameters():
            param.requires_grad = False

    def forward(
        self,
        input_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | SequenceClassifierOutput:
        r"""
        Args:
            input_features (`torch.FloatTensor` of shape `(batch_size, num_frames, feature_size)`):
                Normalised acoustic frames from [`MusiCoderFeatureExtractor`].
            attention_mask (`torch.Tensor` of shape `(batch_size, num_frames)`, *optional*):
                1 for valid frames, 0 for padding; padding is excluded from attention and from pooling.
            labels (`torch.Tensor`, *optional*):
                Class indices of shape `(batch_size,)` for single-label classification, multi-hot floats of shape
                `(batch_size, num_labels)` for multi-label tagging, floats for regression (`num_labels == 1`).
            position_ids (`torch.LongTensor` of shape `(batch_size, num_frames)`, *optional*):
                The frames' indices on their clips, as in [`MusiCoderModel`]: what the feature extractor returns with
                `frame_stride=N` (inference patchout), so pooling covers the kept frames.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        outputs = self.musicoder(
            input_features,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states or self.config.use_weighted_layer_sum,
            return_dict=True,
            **kwargs,
        )
        if self.config.use_weighted_layer_sum:
            stacked = torch.stack(outputs.hidden_states, dim=1)
            layer_weights = nn.functional.softmax(self.layer_weights, dim=-1).view(1, -1, 1, 1)
            hidden_states = (stacked * layer_weights).sum(dim=1)
        else:
            hidden_states = outputs.last_hidden_state
        pooled = masked_pool(hidden_states, attention_mask, self.config.classifier_pooling)
        logits = self.classifier(self.dropout(pooled))

        loss = None
        if labels is not None:
            loss = self.classification_loss(logits, labels)

        output = SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss chosen by `config.problem_type`, inferred from the labels when unset (as in BERT)."""
        labels = labels.to(logits.device)
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int) and labels.dim() == 1:
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(logits.shape[0]))
        if self.config.problem_type == "single_label_classification":
            return nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


__all__ = [
    "MusiCoderForPreTraining",
    "MusiCoderForPreTrainingOutput",
    "MusiCoderForSequenceClassification",
    "MusiCoderModel",
    "MusiCoderPreTrainedModel",
]
