"""Batches of frames: padding and random crops for every training and evaluation loop, and the masking of MusiCoder
pre-training, Contiguous Frames Masking (CFM) and Contiguous Channels Masking (CCM) (the paper's section 3.3).

The masking is vectorised over the batch: the number of Python operations does not grow with the number of spans or
clips (only converting and padding the examples loops over them).
"""

import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from .configuration_musicoder import MusiCoderConfig
from .utils import derive_seed


# Codes of `CFMSpans.policy`.
CFM_POLICY_ZERO = 0
CFM_POLICY_RANDOM = 1
CFM_POLICY_KEEP = 2
CFM_POLICY_NONE = -1  # padding slot of the (batch, max_spans) layout: no span there


class CFMSpans(NamedTuple):
    """
    Spans chosen by Contiguous Frames Masking for a batch, in a padded `(batch_size, max_spans)` layout.

    Attributes:
        starts (`torch.LongTensor` of shape `(batch_size, max_spans)`): First frame of each span (0 where not `valid`).
        lengths (`torch.LongTensor` of shape `(batch_size, max_spans)`): Frames in each span (0 where not `valid`).
        policy (`torch.LongTensor` of shape `(batch_size, max_spans)`):
            0 = set to zero, 1 = replaced by random frames of the same clip, 2 = left unchanged; -1 where not `valid`.
        valid (`torch.BoolTensor` of shape `(batch_size, max_spans)`): Which slots hold a span (a prefix of each row).

    Spans of one clip are sorted by start, never overlap and lie inside the clip's valid frames; two spans may touch,
    so the frame mask alone cannot recover span lengths: use these tensors for span statistics.
    """

    starts: torch.Tensor
    lengths: torch.Tensor
    policy: torch.Tensor
    valid: torch.Tensor


class CCMBands(NamedTuple):
    """
    Bands chosen by Contiguous Channels Masking, one per clip and per block of `config.ccm_feature_blocks`.

    Attributes:
        starts (`torch.LongTensor` of shape `(batch_size, num_blocks)`): First masked channel (absolute index).
        widths (`torch.LongTensor` of shape `(batch_size, num_blocks)`): Number of masked channels (may be 0).
        blocks (`tuple[str, ...]`): Block name of each column.
    """

    starts: torch.Tensor
    widths: torch.Tensor
    blocks: tuple[str, ...]


def cfm_span_length_distribution(config: MusiCoderConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Span-length distribution of CFM: Geometric(`cfm_span_p`) on {1, 2, ...} restricted to
    `[cfm_min_span, cfm_max_span]` and renormalised (not clipped, which would pile the tail onto `cfm_max_span`). With
    the paper's p=0.2 on [2, 7] the mean is 3.87 frames.

    Returns:
        `tuple(torch.LongTensor, torch.DoubleTensor)`: the possible lengths and their probabilities.
    """
    config = config if config is not None else MusiCoderConfig()
    lengths = torch.arange(config.cfm_min_span, config.cfm_max_span + 1)
    p = float(config.cfm_span_p)
    probs = p * (1.0 - p) ** (lengths.double() - 1)
    if probs.sum() <= 0:  # p = 1 puts all mass on length 1, which min_span >= 2 excludes: fall back to min_span
        probs = (lengths == config.cfm_min_span).double()
    return lengths, probs / probs.sum()


def sample_cfm_spans(
    valid_lengths: torch.Tensor | Sequence[int],
    config: MusiCoderConfig | None = None,
    generator: torch.Generator | None = None,
) -> CFMSpans:
    r"""
    Samples the spans of Contiguous Frames Masking for a batch of clips, without a Python loop over spans or clips.

    Per clip with `n` valid frames, the budget is `round(cfm_mask_ratio * n)` frames (0 when `n < cfm_min_span`). Span
    lengths are drawn i.i.d. from [`cfm_span_length_distribution`] until their sum reaches the budget, so the selected
    share overshoots the budget by less than one span. The spans are then placed uniformly at random among all
    non-overlapping arrangements inside the valid frames ("stars and bars": with `k` spans and `f = n - sum(lengths)`
    unselected frames, `k` of the `f + k` items of the sequence are chosen uniformly to be spans). If the spans do not
    fit (tiny clips only), the last ones are dropped. Each span then gets its policy: zero with probability
    `cfm_zero_prob`, random frames with `cfm_random_prob`, unchanged otherwise.

    Args:
        valid_lengths (`torch.LongTensor` of shape `(batch_size,)`): Number of valid (non-padding) frames per clip.
        config ([`MusiCoderConfig`], *optional*): Source of the masking hyper-parameters; paper defaults if `None`.
        generator (`torch.Generator`, *optional*): Random generator; torch's global one if `None`.

    Returns:
        [`CFMSpans`]: starts, lengths, policy and validity of the spans, each of shape `(batch_size, max_spans)`.
    """
    config = config if config is not None else MusiCoderConfig()
    valid_lengths = torch.as_tensor(valid_lengths, dtype=torch.long).reshape(-1)
    device = valid_lengths.device
    batch_size = valid_lengths.numel()
    min_span = int(config.cfm_min_span)

    budgets = torch.round(valid_lengths.double() * float(config.cfm_mask_ratio)).long()
    budgets = torch.where(valid_lengths >= min_span, budgets, torch.zeros_like(budgets))
    max_budget = int(budgets.max()) if batch_size else 0
    if max_budget == 0:
        empty = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
        return CFMSpans(empty, empty.clone(), empty.clone(), empty.bool())

    # A pool long enough to reach any budget even if every span has the minimum length.
    pool_size = math.ceil(max_budget / min_span)
    possible_lengths, probs = cfm_span_length_distribution(config)
    draws = torch.multinomial(
        probs.float().to(device).expand(batch_size, -1), pool_size, replacement=True, generator=generator
    )
    pool = possible_lengths.to(device)[draws]
    cumulative = pool.cumsum(dim=1)

    # Shortest prefix reaching the budget, then drop spans that would not fit in the clip (only for tiny clips).
    num_spans = (cumulative < budgets[:, None]).sum(dim=1) + 1
    num_spans = torch.where(budgets > 0, num_spans, torch.zeros_like(num_spans))
    num_spans = torch.minimum(num_spans, (cumulative <= valid_lengths[:, None]).sum(dim=1))
    max_spans = int(num_spans.max())
    if max_spans == 0:
        empty = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
        return CFMSpans(empty, empty.clone(), empty.clone(), empty.bool())

    span_index = torch.arange(max_spans, device=device)
    valid = span_index[None, :] < num_spans[:, None]
    lengths = pool[:, :max_spans] * valid

    # Stars and bars: the clip is a sequence of `num_spans` span items and `free` single unselected frames; choosing
    # which item slots are spans uniformly gives every non-overlapping arrangement the same probability.
    free = valid_lengths - lengths.sum(dim=1)
    num_slots = free + num_spans
    max_slots = int(num_slots.max())  # >= max_spans, so topk below is always possible
    scores = torch.rand(batch_size, max_slots, generator=generator, device=device)
    scores = scores.masked_fill(torch.arange(max_slots, device=device)[None, :] >= num_slots[:, None], -1.0)
    # The `num_spans` best scores of a row form a uniform random subset of its slots.
    chosen = scores.topk(max_spans, dim=1).indices.masked_fill(~valid, max_slots)
    chosen = chosen.sort(dim=1).values
    frames_before = lengths.cumsum(dim=1) - lengths
    starts = (chosen - span_index[None, :] + frames_before) * valid

    draw = torch.rand(batch_size, max_spans, generator=generator, device=device)
    zero_prob, random_prob = float(config.cfm_zero_prob), float(config.cfm_random_prob)
    policy = (draw >= zero_prob).long() + (draw >= zero_prob + random_prob).long()
    policy = policy.masked_fill(~valid, CFM_POLICY_NONE)
    return CFMSpans(starts=starts, lengths=lengths, policy=policy, valid=valid)


def cfm_frame_policy(spans: CFMSpans, num_frames: int) -> torch.Tensor:
    """
    Per-frame view of [`CFMSpans`]: the policy of the span covering each frame, or -1 for frames no span covers.

    Args:
        spans ([`CFMSpans`]): Output of [`sample_cfm_spans`].
        num_frames (`int`): Padded length T of the batch (at least every clip's valid length).

    Returns:
        `torch.LongTensor` of shape `(batch_size, num_frames)`.
    """
    batch_size = spans.starts.shape[0]
    # Difference array: +code at each span start, -code just after its end; spans never overlap, so the running sum
    # is the covering span's code (touching spans also work: their -code and +code add at the same index).
    codes = (spans.policy + 1) * spans.valid
    diff = torch.zeros(batch_size, num_frames + 1, dtype=torch.long, device=spans.starts.device)
    diff.scatter_add_(1, spans.starts, codes)
    diff.scatter_add_(1, spans.starts + spans.lengths, -codes)
    return diff.cumsum(dim=1)[:, :num_frames] - 1


def sample_ccm_bands(
    batch_size: int,
    config: MusiCoderConfig | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> CCMBands:
    r"""
    Samples the bands of Contiguous Channels Masking: one band per clip in each block of `config.ccm_feature_blocks`
    (log-mel and log-CQT by default, each treated separately).

    The paper draws "n from {0, ..., H} uniformly, then a start from {0, ..., H - n}, H the number of channels". We
    read n as the band width in channels and H as the width of one block, so per clip and per block:
    width ~ Uniform{0..W} with W = `min(config.ccm_max_width, block width)` (`None` = the whole block, as the paper),
    then the start is uniform over the positions where the band fits inside the block. The band is zeroed for all
    frames of the clip.

    Args:
        batch_size (`int`): Number of clips.
        config ([`MusiCoderConfig`], *optional*): Source of the channel layout and of `ccm_max_width`.
        generator (`torch.Generator`, *optional*): Random generator; torch's global one if `None`.
        device (`torch.device` or `str`, *optional*):
            Device of the returned tensors; defaults to that of `generator` (which must match it), else CPU.

    Returns:
        [`CCMBands`]: absolute `starts` and `widths`, each of shape `(batch_size, num_blocks)`, and the block names.
    """
    config = config if config is not None else MusiCoderConfig()
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    blocks = tuple(config.ccm_feature_blocks)
    block_starts = torch.tensor(
        [config.feature_slice(block).start for block in blocks], dtype=torch.long, device=device
    )
    block_widths = torch.tensor(
        [config.feature_slice(block).stop - config.feature_slice(block).start for block in blocks],
        dtype=torch.long,
        device=device,
    )
    max_widths = block_widths if config.ccm_max_width is None else block_widths.clamp(max=int(config.ccm_max_width))

    # floor(u * (m + 1)) with u ~ U[0, 1) is uniform on {0..m}; float64 keeps it exact for any realistic width.
    shape = (batch_size, len(blocks))
    widths = (torch.rand(shape, generator=generator, device=device, dtype=torch.float64) * (max_widths + 1)).long()
    offsets = torch.rand(shape, generator=generator, device=device, dtype=torch.float64) * (block_widths - widths + 1)
    return CCMBands(starts=block_starts + offsets.long(), widths=widths, blocks=blocks)


def ccm_channel_mask(bands: CCMBands, feature_size: int) -> torch.Tensor:
    """
    Channel view of [`CCMBands`]: `True` on the masked channels of each clip.

    Returns:
        `torch.BoolTensor` of shape `(batch_size, feature_size)`.
    """
    channels = torch.arange(feature_size, device=bands.starts.device)[None, None, :]
    in_band = (channels >= bands.starts[..., None]) & (channels < (bands.starts + bands.widths)[..., None])
    return in_band.any(dim=1)


def pad_frames(
    clips: Sequence[np.ndarray | torch.Tensor], pad_to_multiple_of: int | None = None, frame_stride: int = 1
) -> dict:
    """
    Right-pad clips of frames with zeros into one batch.

    Args:
        clips (sequence of arrays or tensors of shape `(frames, channels)`): the clips, at least one frame each.
        pad_to_multiple_of (`int`, *optional*): pad the time axis to a multiple of this value.
        frame_stride (`int`, *optional*, defaults to 1): inference patchout, as the feature extractor's
            `frame_stride`: keep frames 0, N, 2N, ... of each clip and return their indices as `position_ids`.

    Returns:
        `dict` with `input_features` (`torch.FloatTensor` of shape `(batch_size, frames, channels)`) and
        `attention_mask` (`torch.LongTensor` of shape `(batch_size, frames)`, 1 on the clips' frames); with
        `frame_stride > 1`, also `position_ids` (`torch.LongTensor`, 0 on padding).
    """
    clips = [_to_float_tensor(clip)[::frame_stride] for clip in clips]
    lengths = torch.tensor([clip.shape[0] for clip in clips], dtype=torch.long)
    num_frames = int(lengths.max())
    if pad_to_multiple_of is not None:
        num_frames = math.ceil(num_frames / pad_to_multiple_of) * pad_to_multiple_of
    # `empty` + copy + zeroing only the tails writes each element once (zeros + copy would write it twice).
    features = torch.empty(len(clips), num_frames, clips[0].shape[-1], dtype=torch.float32)
    for index, clip in enumerate(clips):
        features[index, : clip.shape[0]] = clip
        features[index, clip.shape[0] :] = 0.0
    attention_mask = (torch.arange(num_frames)[None, :] < lengths[:, None]).long()
    if frame_stride == 1:
        return {"input_features": features, "attention_mask": attention_mask}
    position_ids = torch.arange(0, num_frames * frame_stride, frame_stride)[None, :] * attention_mask
    return {"input_features": features, "attention_mask": attention_mask, "position_ids": position_ids}


def random_crop(frames, max_frames: int | None, *seed_parts: int):
    """
    `frames` cut to a random window of `max_frames` frames (unchanged when it is not longer). The start is drawn from
    a generator seeded with `derive_seed(*seed_parts)`, e.g. (seed, epoch, example index): a resumed run crops the
    same way.
    """
    if max_frames is None or len(frames) <= max_frames:
        return frames
    start = random.Random(derive_seed(*seed_parts)).randrange(len(frames) - max_frames + 1)
    return frames[start : start + max_frames]


@dataclass
class DataCollatorForMusiCoderPreTraining:
    r"""
    Data collator for MusiCoder masked-reconstruction pre-training (the paper's section 3.3), in the style
    of [`~transformers.DataCollatorForLanguageModeling`]: it pads a list of clips and masks them with Contiguous Frames
    Masking (CFM) and/or Contiguous Channels Masking (CCM). Its output feeds `MusiCoderForPreTraining(**batch)`.

    All masking hyper-parameters and the channel layout come from `config` (the single source of truth):

    - **CFM**: per clip, spans of consecutive valid frames are selected until `cfm_mask_ratio` of the valid frames are
      covered (see [`sample_cfm_spans`]); span lengths ~ Geometric(`cfm_span_p`) restricted to
      `[cfm_min_span, cfm_max_span]` and renormalised (mean 3.87 frames with the defaults); spans do not overlap and
      never cover padding. Per span: set to zero (`cfm_zero_prob`, 70%), every frame replaced by a frame drawn at
      random from the same clip's valid frames (`cfm_random_prob`, 20%), or left unchanged (the rest, 10%). All
      selected frames, including the unchanged ones, are reconstructed.
    - **CCM**: per clip and per block of `ccm_feature_blocks` (log-mel and log-CQT by default, each separately), one
      band of width ~ Uniform{0..W} (W = `ccm_max_width` capped at the block width; `None` = the whole block, as the
      paper) at a uniform start inside the block is zeroed on all valid frames (see [`sample_ccm_bands`]).

    Random replacements come from the original (unmasked) frames; CCM is applied after CFM, so a CCM band is zero on
    every valid frame.

    Args:
        config ([`MusiCoderConfig`], *optional*):
            Masking hyper-parameters and channel layout. `None` uses `MusiCoderConfig()` (the paper's values).
        cfm (`bool`, *optional*, defaults to `True`): Apply Contiguous Frames Masking.
        ccm (`bool`, *optional*, defaults to `True`): Apply Contiguous Channels Masking. At least one must be on.
        pad_to_multiple_of (`int`, *optional*): Pad the time axis to a multiple of this value.
        seed (`int`, *optional*):
            Seeds a private `torch.Generator`, created at the first call and advanced by every call, so two collators
            with the same seed produce the same masks call after call. In a `DataLoader` worker or a
            `torch.distributed` rank other than 0, an independent stream derived from `(seed, rank, worker id)` is
            used so that processes do not repeat each other's masks. `None` uses torch's global RNG.
        return_tensors (`str`, *optional*, defaults to `"pt"`): `"pt"` for torch tensors, `"np"` for numpy arrays.

    Examples are mappings with `"input_features"` of shape `(frames, feature_size)` (numpy, list or torch; other keys
    are ignored). If an example carries an `"attention_mask"` (already padded input, right padding), its first
    `attention_mask.sum()` frames are the valid ones. The returned dict holds:

    - `input_features` (`torch.FloatTensor` of shape `(batch_size, frames, feature_size)`): padded with zeros, masked;
    - `attention_mask` (`torch.LongTensor` of shape `(batch_size, frames)`): 1 on valid frames;
    - `labels` (`torch.FloatTensor` of shape `(batch_size, frames, feature_size)`): the original padded frames;
    - `reconstruction_mask` (`torch.BoolTensor` of shape `(batch_size, frames, feature_size)`): the elements to
      reconstruct (CFM frames on all channels, CCM channels on valid frames); never `True` on padding.

    Example:

    ```python
    >>> import numpy as np
    >>> from musicoder_hf.data_collator import DataCollatorForMusiCoderPreTraining

    >>> collator = DataCollatorForMusiCoderPreTraining(seed=0)
    >>> examples = [{"input_features": np.random.randn(1292, 324)}, {"input_features": np.random.randn(800, 324)}]
    >>> batch = collator(examples)
    >>> batch["input_features"].shape, batch["reconstruction_mask"].dtype
    (torch.Size([2, 1292, 324]), torch.bool)
    ```
    """

    config: MusiCoderConfig | None = None
    cfm: bool = True
    ccm: bool = True
    pad_to_multiple_of: int | None = None
    seed: int | None = None
    return_tensors: str = "pt"
    _generator: torch.Generator | None = field(default=None, init=False, repr=False, compare=False)
    _generator_owner: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.config is None:
            self.config = MusiCoderConfig()
        if not (self.cfm or self.ccm):
            raise ValueError(
                "DataCollatorForMusiCoderPreTraining needs cfm=True or ccm=True: with both off nothing is masked and "
                "there is nothing to reconstruct."
            )
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive integer or None, got {self.pad_to_multiple_of}.")
        if self.return_tensors not in ("pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {self.return_tensors!r}.")

    def __call__(self, examples: Sequence[Mapping[str, Any]], return_tensors: str | None = None) -> dict[str, Any]:
        return_tensors = return_tensors if return_tensors is not None else self.return_tensors
        if return_tensors == "pt":
            return self.torch_call(examples)
        if return_tensors == "np":
            return {key: value.numpy() for key, value in self.torch_call(examples).items()}
        raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}.")

    @property
    def generator(self) -> torch.Generator | None:
        """The private generator of this process (`None` without a seed)."""
        if self.seed is None:
            return None
        worker_info = torch.utils.data.get_worker_info()
        worker_id = worker_info.id if worker_info is not None else None
        owner = (os.getpid(), worker_id)
        # A generator copied into a forked DataLoader worker would replay the parent's stream: make a fresh one.
        if self._generator is None or self._generator_owner != owner:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            if worker_id is None and rank == 0:
                seed = int(self.seed)
            else:
                seed = derive_seed(self.seed, rank, 0 if worker_id is None else worker_id + 1)
            self._generator = torch.Generator().manual_seed(seed)
            self._generator_owner = owner
        return self._generator

    def torch_call(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        padded = self.pad(examples)
        return self.mask(padded["input_features"], padded["attention_mask"])

    def pad(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Validate and zero-pad examples without masking: `input_features` (unmasked) and `attention_mask`.

        With [`~DataCollatorForMusiCoderPreTraining.mask`], this splits the collator in two, so a training loop can pad
        in DataLoader workers and mask on the accelerator with a generator it seeds per step (exact resume).
        """
        padded = pad_frames(self._clips_from_examples(examples), self.pad_to_multiple_of)
        # One reduction over the batch (cheaper than torch.isfinite on CPU): NaN and inf propagate into it.
        low, high = torch.aminmax(padded["input_features"])
        if not (math.isfinite(low) and math.isfinite(high)):
            bad = [i for i, length in enumerate(padded["attention_mask"].sum(dim=1).tolist())
                   if not bool(torch.isfinite(padded["input_features"][i, :length]).all())]
            raise ValueError(f"input_features of example(s) {bad} contain NaN or infinite values.")
        return padded

    def mask(
        self, input_features: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Mask a zero-padded batch (right padding) on its own device; returns the four tensors of `__call__`."""
        valid_lengths = attention_mask.sum(dim=1)
        features, reconstruction_mask = self.torch_mask_features(input_features, valid_lengths, generator=generator)
        return {
            "input_features": features,
            "attention_mask": attention_mask,
            "labels": input_features,
            "reconstruction_mask": reconstruction_mask,
        }

    def torch_mask_features(
        self, features: torch.Tensor, valid_lengths: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Masks a padded batch with CFM and/or CCM.

        Args:
            features (`torch.FloatTensor` of shape `(batch_size, frames, feature_size)`):
                Original frames, zero on padding (not modified).
            valid_lengths (`torch.LongTensor` of shape `(batch_size,)`): Valid frames per clip (a prefix of each row).
            generator (`torch.Generator`, *optional*):
                Generator on the features' device; defaults to the collator's own (see `seed`).

        Returns:
            `tuple(torch.FloatTensor, torch.BoolTensor)`: the masked features and the reconstruction mask, both of
            shape `(batch_size, frames, feature_size)`.
        """
        generator = generator if generator is not None else self.generator
        batch_size, num_frames, feature_size = features.shape
        device = features.device
        valid_lengths = valid_lengths.to(device)
        frame_is_valid = torch.arange(num_frames, device=device)[None, :] < valid_lengths[:, None]
        # Masks stay factorised as (batch, frames) and (batch, channels) and are combined in as few full-size passes as
        # possible: each pass over a 64 x 1292 x 324 batch costs tens of milliseconds on CPU.
        selected_frames = torch.zeros(batch_size, num_frames, dtype=torch.bool, device=device)
        zero_channels = torch.zeros(batch_size, feature_size, dtype=torch.bool, device=device)
        if self.ccm:
            bands = sample_ccm_bands(batch_size, self.config, generator=generator, device=device)
            zero_channels = ccm_channel_mask(bands, feature_size)
            # The inputs are finite (checked), so multiplying by 0/1 zeroes the CCM bands in the pass that copies.
            masked = features * (~zero_channels)[:, None, :].to(features.dtype)
        else:
            masked = features.clone()

        if self.cfm:
            spans = sample_cfm_spans(valid_lengths, self.config, generator=generator)
            frame_policy = cfm_frame_policy(spans, num_frames)
            selected_frames = frame_policy >= 0
            # Row operations on a (batch * frames, channels) view: cost grows with the masked frames only.
            rows = masked.view(batch_size * num_frames, feature_size)
            rows.index_fill_(0, (frame_policy == CFM_POLICY_ZERO).flatten().nonzero()[:, 0], 0.0)
            # Only the "random" frames get a source frame, drawn among the same clip's valid original frames.
            random_clip, random_frame = (frame_policy == CFM_POLICY_RANDOM).nonzero(as_tuple=True)
            draw = torch.rand(random_clip.numel(), generator=generator, device=device, dtype=torch.float64)
            random_source = (draw * valid_lengths[random_clip]).long()
            # CCM covers every frame, replaced ones included.
            replacement = features[random_clip, random_source].masked_fill(zero_channels[random_clip], 0.0)
            rows.index_copy_(0, random_clip * num_frames + random_frame, replacement)

        # Padding is zero in `features`, hence in `masked`; the reconstruction mask must exclude it explicitly.
        # Broadcast logic on uint8 is vectorised where bool is not; 0/1 bytes are valid bools.
        reconstruction_mask = (
            (selected_frames.to(torch.uint8)[..., None] | zero_channels.to(torch.uint8)[:, None, :])
            & frame_is_valid.to(torch.uint8)[..., None]
        ).view(torch.bool)
        return masked, reconstruction_mask

    def _clips_from_examples(self, examples: Sequence[Mapping[str, Any]]) -> list[torch.Tensor]:
        """Validates the examples and returns their valid frames as float32 tensors of shape (frames, feature_size)."""
        if examples is None or len(examples) == 0:
            raise ValueError("DataCollatorForMusiCoderPreTraining received an empty list of examples.")
        feature_size = int(self.config.feature_size)
        clips = []
        for index, example in enumerate(examples):
            if isinstance(example, Mapping):
                if "input_features" not in example:
                    raise ValueError(f"Example {index} has no 'input_features'; its keys are {list(example)}.")
                raw_features, raw_mask = example["input_features"], example.get("attention_mask")
            else:  # a bare array is taken as the input features
                raw_features, raw_mask = example, None
            clip = _to_float_tensor(raw_features)
            if clip.ndim == 3 and clip.shape[0] == 1:  # a single-clip batch from a feature extractor
                clip = clip[0]
            if clip.ndim != 2 or clip.shape[-1] != feature_size:
                raise ValueError(
                    f"Example {index}: input_features must have shape (frames, {feature_size}) (feature_size of the "
                    f"config), got {tuple(clip.shape)}."
                )
            if raw_mask is not None:
                mask = torch.as_tensor(np.asarray(raw_mask) if not torch.is_tensor(raw_mask) else raw_mask).reshape(-1)
                if mask.numel() != clip.shape[0]:
                    raise ValueError(
                        f"Example {index}: attention_mask has {mask.numel()} entries but input_features has "
                        f"{clip.shape[0]} frames."
                    )
                mask = mask.cpu().bool()
                valid_length = int(mask.sum())
                if not bool(mask[:valid_length].all()):
                    raise ValueError(
                        f"Example {index}: attention_mask must mark a prefix of the frames (right padding); the valid "
                        "frames are not contiguous from the start."
                    )
                clip = clip[:valid_length]
            if clip.shape[0] == 0:
                raise ValueError(f"Example {index} has 0 valid frames; every clip needs at least one frame.")
            clips.append(clip)
        return clips


def _to_float_tensor(values: Any) -> torch.Tensor:
    if torch.is_tensor(values):
        return values.detach().to(device="cpu", dtype=torch.float32)
    return torch.from_numpy(np.asarray(values, dtype=np.float32))


__all__ = [
    "CCMBands",
    "CFMSpans",
    "DataCollatorForMusiCoderPreTraining",
    "ccm_channel_mask",
    "cfm_frame_policy",
    "cfm_span_length_distribution",
    "pad_frames",
    "random_crop",
    "sample_ccm_bands",
    "sample_cfm_spans",
]
