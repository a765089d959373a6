# Copyright 2026 The musicoder-hf authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
Feature extractor for MusiCoder: the 324-dim acoustic frames of the paper (Zhao & Guo, MMM 2021, section 4.1).

Two backends compute the same features: `"librosa"`, the reference (one clip at a time, CPU), and `"torch"`, a batched
re-implementation on CPU or CUDA that matches it to float32 round-off (see `MusiCoderFeatureExtractor`).

This file is deliberately self-contained (numpy, librosa, torch and transformers only): `save_pretrained` copies it
next to a checkpoint so that `AutoFeatureExtractor.from_pretrained(..., trust_remote_code=True)` works where
`musicoder_hf` is not installed.
"""

import functools
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import librosa
import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy, TensorType, is_torch_tensor, logging


logger = logging.get_logger(__name__)

# C1 in Hz (librosa.note_to_hz("C1")), the lowest CQT bin.
C1_HZ = 32.703195662574764

# CMVN divides by max(std, this). A constant channel (e.g. silence) then maps to 0 instead of NaN/inf, and a channel
# that is constant up to float32 round-off (about 1e-4 on values near 1e3, like MFCC 0) is not blown up into
# unit-variance noise. Channels of real music vary far more (log features by ~1, chroma and MFCC deltas by ~0.1 or
# more), so for them this is plain CMVN.
CMVN_STD_FLOOR = 1e-3

# A 2-D input is read as ONE multi-channel clip. More "channels" than this (7.1 surround has 8) almost surely means a
# batch of mono clips stacked into one array, which would otherwise be silently averaged together.
MAX_CHANNELS = 8

BACKENDS = ("librosa", "torch")

# Padded batches of the torch backend when `__call__` gets no `batch_size`. On CUDA: 64 clips (30 s clips take about
# 2 GB). On a CPU, batching gains nothing once a clip is long, and temporaries above glibc's mmap threshold (32 MiB)
# are handed back to the kernel when freed and faulted in again on the next batch (about 0.6 ms per MB here, as much as
# the FFTs): as many clips as fit in 2**21 padded samples (48 s at 44.1 kHz) keeps them below it.
TORCH_CUDA_BATCH_SIZE = 64
TORCH_CPU_BATCH_SAMPLES = 2**21

# librosa lowers the sampling rate between CQT octaves with soxr ("soxr_hq"), a linear-phase FIR decimator. The torch
# backend applies the same FIR, by FFT blocks of DECIMATION_BLOCK samples (overlap-save). The FIR's taps and soxr's
# start-up transient are measured from librosa itself (unit impulses through `librosa.resample`), keeping what stands
# above these fractions of the peak tap (below is soxr's float32 round-off).
DECIMATION_BLOCK = 8192
SOXR_KERNEL_THRESHOLD = 1e-7
SOXR_START_THRESHOLD = 1e-6

# Mel filters per block of the torch backend's block-sparse mel filterbank product.
MEL_GROUP = 16

# On a CPU the torch backend runs its FFTs (STFT frames, decimation blocks) over tiles of this many input samples
# (1 MiB of float32, and about as much spectrum): each tile stays in the core's cache from the FFT to the products
# that follow, instead of a round trip through memory at every step.
CPU_TILE_SAMPLES = 2**18


def _two_factors(n: int) -> int:
    """How many times `n` divides by 2."""
    count = 0
    while n > 0 and n % 2 == 0:
        n //= 2
        count += 1
    return count


def _orthonormal_dct(n_inputs: int, n_outputs: int) -> np.ndarray:
    """`(n_inputs, n_outputs)` matrix of the orthonormal DCT-II of `librosa.feature.mfcc` (scipy's `norm="ortho"`)."""
    n = np.arange(n_inputs)[:, None]
    k = np.arange(n_outputs)[None, :]
    basis = np.sqrt(2.0 / n_inputs) * np.cos(np.pi * k * (2 * n + 1) / (2 * n_inputs))
    basis[:, 0] /= np.sqrt(2.0)
    return basis


def _cqt_octave_plan(sampling_rate, hop_length, fmin, bins_per_octave, n_octaves, window="hamming"):
    """
    librosa's multi-rate CQT (`librosa.cqt` -> `vqt` in librosa 0.11) as a plan: for each octave, top octave first, the
    decimation of the audio it is analysed at, its hop, and its FFT-domain filter basis (`(bins_per_octave, n_fft // 2
    + 1)`, complex64) with all of librosa's scale factors folded in, so that `abs(basis @ rfft(frame))` is librosa's
    magnitude for a frame of the decimated audio scaled like librosa's resampler (`scale=True`, i.e. by
    `sqrt(decimation)`).
    """
    n_bins = bins_per_octave * n_octaves
    freqs = librosa.interval_frequencies(n_bins, fmin=fmin, intervals="equal", bins_per_octave=bins_per_octave)
    # Relative bandwidth of each bin from its neighbours' spacing (librosa.filters._relative_bandwidth).
    local_bins_per_octave = np.full(n_bins, float(bins_per_octave))
    if n_bins > 1:
        log_freqs = np.log2(freqs)
        local_bins_per_octave[0] = 1 / (log_freqs[1] - log_freqs[0])
        local_bins_per_octave[-1] = 1 / (log_freqs[-1] - log_freqs[-2])
        local_bins_per_octave[1:-1] = 2 / (log_freqs[2:] - log_freqs[:-2])
    alpha = (2.0 ** (2 / local_bins_per_octave) - 1) / (2.0 ** (2 / local_bins_per_octave) + 1)

    _, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=sampling_rate, window=window, alpha=alpha)
    # librosa first decimates by 2 as often as the filters stay below the new Nyquist frequency and the hop stays even.
    early = min(
        max(0, int(np.ceil(np.log2(sampling_rate / 2 / cutoff))) - 2),
        max(0, _two_factors(hop_length) - n_octaves + 1),
    )
    decimation, hop = 2**early, hop_length // 2**early
    # librosa divides the output by sqrt(filter length) at the rate after that first decimation.
    lengths, _ = librosa.filters.wavelet_lengths(
        freqs=freqs, sr=sampling_rate / decimation, window=window, alpha=alpha
    )

    plan = []
    for octave in range(n_octaves):
        bins = slice(n_bins - (octave + 1) * bins_per_octave, n_bins - octave * bins_per_octave)
        basis, basis_lengths = librosa.filters.wavelet(
            freqs=freqs[bins], sr=sampling_rate / decimation, window=window, alpha=alpha[bins], norm=1, pad_fft=True
        )
        n_fft = basis.shape[1]
        basis *= basis_lengths[:, None] / n_fft
        fft_basis = np.fft.fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
        fft_basis = librosa.util.sparsify_rows(fft_basis, quantile=0.01, dtype=np.complex64).toarray()
        fft_basis *= np.sqrt(decimation / 2**early) / np.sqrt(lengths[bins])[:, None]
        plan.append((decimation, hop, fft_basis.astype(np.complex64)))
        if hop % 2 == 0:  # librosa halves the rate for the next octave only while the hop stays an integer
            hop //= 2
            decimation *= 2
    return plan


@functools.lru_cache(maxsize=4)
def _soxr_kernel(ratio: int) -> np.ndarray:
    """
    Taps (odd length, tap 0 in the middle, at the input rate) of the FIR with which `librosa.resample(y, orig_sr=ratio,
    target_sr=1, res_type="soxr_hq")` decimates: resampling a unit impulse at each of the `ratio` phases gives every
    `ratio`-th tap.
    """
    centre = 8192 * ratio  # far from both ends: soxr's tails (about 400 taps for ratio 4) stay inside
    kernel = np.zeros(2 * centre)
    for phase in range(ratio):
        impulse = np.zeros(2 * centre, dtype=np.float32)
        impulse[centre + phase] = 1.0
        response = librosa.resample(impulse, orig_sr=ratio, target_sr=1, res_type="soxr_hq", scale=False)
        # output m is tap m * ratio - (centre + phase), stored at index tap + centre
        taps = np.arange(len(response)) * ratio - phase
        kept = taps >= 0
        kernel[taps[kept]] = response[kept]
    support = np.flatnonzero(np.abs(kernel) > SOXR_KERNEL_THRESHOLD * np.abs(kernel).max())
    half_width = max(centre - support[0], support[-1] - centre)
    return kernel[centre - half_width : centre + half_width + 1]


@functools.lru_cache(maxsize=4)
def _soxr_start_correction(ratio: int) -> np.ndarray | None:
    """
    What soxr adds to a plain convolution with `_soxr_kernel(ratio)` at the start of a signal: `(inputs, outputs)`,
    so that soxr's first outputs are the convolution's plus `signal[:inputs] @ correction` (None if it adds nothing).

    soxr's 4:1 decimator is not a plain convolution over its first few dozen outputs: it treats its first input
    samples differently (a start-up transient). It is linear, so resampling unit impulses measures it.
    """
    kernel = _soxr_kernel(ratio)
    half_width = len(kernel) // 2
    num_outputs = 128
    num_inputs = ratio * num_outputs + half_width
    impulses = np.eye(num_inputs, num_inputs + 2 * half_width + 16 * ratio, dtype=np.float32)
    measured = librosa.resample(impulses, orig_sr=ratio, target_sr=1, res_type="soxr_hq", scale=False, axis=-1)
    taps = half_width + ratio * np.arange(num_outputs)[None, :] - np.arange(num_inputs)[:, None]
    convolution = np.where((taps >= 0) & (taps < len(kernel)), kernel[np.clip(taps, 0, len(kernel) - 1)], 0.0)
    correction = measured[:, :num_outputs] - convolution
    # Keep what stands above soxr's own float32 round-off.
    correction[np.abs(correction) < SOXR_START_THRESHOLD * np.abs(kernel).max()] = 0.0
    rows, columns = np.flatnonzero(correction.any(axis=1)), np.flatnonzero(correction.any(axis=0))
    if len(rows) == 0:
        return None
    return correction[: rows[-1] + 1, : columns[-1] + 1]


def _tile_length(windows: torch.Tensor) -> int:
    """How many of `windows` `(batch_size, count, window_length)` to take at a time: all of them on CUDA, tiles of
    about `CPU_TILE_SAMPLES` input samples on a CPU."""
    if windows.is_cuda:
        return windows.shape[1]
    return max(1, CPU_TILE_SAMPLES // (windows.shape[0] * windows.shape[2]))


def _zero_padded(signal: torch.Tensor, start: int, length: int, before: int, after: int) -> torch.Tensor:
    """`signal[:, start - before : start + length + after]`, samples outside `signal` being zeros: a view when `signal`
    has the room (callers keep zeros around their audio), a padded copy otherwise."""
    first, last = start - before, start + length + after
    if first >= 0 and last <= signal.shape[1]:
        return signal[:, first:last]
    kept = signal[:, max(first, 0) : min(last, signal.shape[1])]
    return torch.nn.functional.pad(kept, (max(0, -first), max(0, last - signal.shape[1])))


@dataclass(frozen=True)
class _Decimator:
    """soxr's decimation by `ratio`, by overlap-save: FFT blocks of `block` samples overlapping by `2 * overlap`."""

    ratio: int
    half_width: int  # of the FIR
    overlap: int  # >= half_width, a multiple of ratio
    block: int
    response: torch.Tensor  # the FIR's rfft on `block` samples, on the bins kept after decimation (complex64)
    start_correction: torch.Tensor | None  # `_soxr_start_correction(ratio)`, scaled as the output

    @classmethod
    def for_ratio(cls, ratio: int, device) -> "_Decimator":
        kernel = _soxr_kernel(ratio)
        half_width = len(kernel) // 2
        overlap = -(-half_width // ratio) * ratio
        block = max(DECIMATION_BLOCK, 1 << (8 * overlap - 1).bit_length())
        circular = np.zeros(block)
        circular[: half_width + 1] = kernel[half_width:]
        circular[block - half_width :] = kernel[:half_width]
        # An irfft of the first block / ratio bins normalises by ratio / block, i.e. scales the filtered samples by
        # `ratio`: dividing by sqrt(ratio) leaves librosa's `resample(scale=True)` factor of sqrt(ratio).
        response = np.fft.rfft(circular)[: block // ratio // 2 + 1] / math.sqrt(ratio)
        start_correction = _soxr_start_correction(ratio)
        if start_correction is not None:
            start_correction = torch.as_tensor(start_correction * math.sqrt(ratio), dtype=torch.float32, device=device)
        return cls(
            ratio, half_width, overlap, block, torch.as_tensor(response, dtype=torch.complex64, device=device),
            start_correction,
        )  # fmt: skip

    def __call__(
        self, signal: torch.Tensor, start: int = 0, length: int | None = None, margins: tuple[int, int] = (0, 0)
    ) -> torch.Tensor:
        """
        Decimate `signal[:, start : start + length]` (every other sample of `signal` being zero): `(batch,
        ceil(length / ratio))`, scaled by sqrt(ratio) as librosa's `resample(scale=True)`, with `margins` zeros
        before and after it (which spare the next steps a padded copy).
        """
        batch_size = signal.shape[0]
        length = signal.shape[1] - start if length is None else length
        step = self.block - 2 * self.overlap
        num_outputs = -(-length // self.ratio)
        num_blocks = -(-num_outputs * self.ratio // step)
        padded = _zero_padded(signal, start, length, self.overlap, num_blocks * step + self.overlap - length)
        blocks = padded.unfold(1, self.block, step)
        before, after = margins
        output = signal.new_empty(batch_size, before + num_outputs + after)
        output[:, :before].zero_()
        output[:, before + num_outputs :].zero_()
        decimated = output[:, before : before + num_outputs]
        outputs_per_block, tile = step // self.ratio, _tile_length(blocks)
        for first in range(0, num_blocks, tile):
            spectrum = torch.fft.rfft(blocks[:, first : first + tile])[..., : self.response.shape[0]]
            # Sampling the filtered block every `ratio` samples = the inverse FFT of its first block / ratio bins
            # (the FIR leaves nothing above the new Nyquist frequency).
            filtered = torch.fft.irfft(spectrum * self.response, n=self.block // self.ratio)
            kept = filtered[..., self.overlap // self.ratio : (self.overlap + step) // self.ratio]
            kept = kept.reshape(batch_size, -1)
            first_output = first * outputs_per_block
            stop_output = min(num_outputs, first_output + kept.shape[1])
            decimated[:, first_output:stop_output] = kept[:, : stop_output - first_output]
        if self.start_correction is not None:  # every clip of the batch starts at sample 0
            inputs = min(self.start_correction.shape[0], length)
            outputs = min(self.start_correction.shape[1], num_outputs)
            decimated[:, :outputs] += signal[:, start : start + inputs] @ self.start_correction[:inputs, :outputs]
        return output


@dataclass(frozen=True)
class _CQTOctave:
    decimator: _Decimator | None  # from the previous octave's rate (or the input's) to this octave's, if they differ
    decimation: int  # the octave is analysed at sampling_rate / decimation
    hop_length: int
    kernels: torch.Tensor  # (n_fft, 2 * bins_per_octave): the time-domain wavelets, real parts then imaginary parts
    reach: int  # input samples (at sampling_rate) that the decimators up to this octave read on each side


@dataclass(frozen=True)
class _TorchFilterbanks:
    window: torch.Tensor  # Hamming, n_fft samples (periodic, as librosa's)
    chroma_and_energy: torch.Tensor  # (n_fft // 2 + 1, n_chroma + 1): chroma filters, then ones (frame energy)
    # The mel filterbank by groups of MEL_GROUP filters, each on the FFT bins where it is non-zero: (first filter,
    # last filter + 1, first bin, last bin + 1, (bins, filters) matrix). 1/7 of the dense product's work.
    mel_groups: tuple[tuple[int, int, int, int, torch.Tensor], ...]
    dct: torch.Tensor  # (n_mels, n_mfcc)
    cqt_octaves: tuple[_CQTOctave, ...]  # top octave first


@functools.lru_cache(maxsize=8)
def _build_torch_filterbanks(
    sampling_rate, n_fft, hop_length, n_mels, n_mfcc, n_chroma, cqt_fmin, cqt_bins_per_octave, cqt_n_octaves, device
) -> _TorchFilterbanks:
    """The torch backend's constant tensors, built once per configuration and device from librosa's own filters."""

    def tensor(array):
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=device)

    octaves, previous, reach = [], 1, 0
    for decimation, hop, basis in _cqt_octave_plan(
        sampling_rate, hop_length, cqt_fmin, cqt_bins_per_octave, cqt_n_octaves
    ):
        decimator = None
        if decimation > previous:
            decimator = _Decimator.for_ratio(decimation // previous, device)
            reach += decimator.half_width * previous
        # abs(basis @ rfft(frame)) as one real matrix product with the frame: each wavelet in the time domain.
        frame_length = 2 * (basis.shape[1] - 1)
        phases = np.outer(np.arange(frame_length), np.arange(basis.shape[1])) / frame_length
        wavelets = np.exp(-2j * np.pi * phases) @ basis.T.astype(np.complex128)
        kernels = np.concatenate([wavelets.real, wavelets.imag], axis=1)
        octaves.append(_CQTOctave(decimator, decimation, hop, tensor(kernels), reach))
        previous = decimation
    chroma = librosa.filters.chroma(sr=sampling_rate, n_fft=n_fft, tuning=0.0, n_chroma=n_chroma)
    mel = librosa.filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=n_mels)
    mel_groups = []
    for first in range(0, n_mels, MEL_GROUP):
        stop = min(first + MEL_GROUP, n_mels)
        used = np.flatnonzero(np.any(mel[first:stop] != 0, axis=0))
        bins = slice(int(used[0]), int(used[-1]) + 1) if len(used) else slice(0, 1)
        mel_groups.append((first, stop, bins.start, bins.stop, tensor(mel[first:stop, bins].T)))
    return _TorchFilterbanks(
        window=torch.hamming_window(n_fft, periodic=True, device=device),
        chroma_and_energy=tensor(np.concatenate([chroma, np.ones((1, n_fft // 2 + 1))]).T),
        mel_groups=tuple(mel_groups),
        dct=tensor(_orthonormal_dct(n_mels, n_mfcc)),
        cqt_octaves=tuple(octaves),
    )


class MusiCoderFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Constructs a MusiCoder feature extractor.

    This feature extractor inherits from [`~feature_extraction_sequence_utils.SequenceFeatureExtractor`] which contains
    most of the main methods. Users should refer to this superclass for more information regarding those methods.

    It turns mono 44.1 kHz audio into frames of `feature_size` (324) acoustic features, following the
    MusiCoder paper (section 4.1): a Hamming window of `n_fft` (2048) samples, a hop of `hop_length` (1024) samples,
    centred frames (a 30 s clip gives 1292 frames), and the channels, in this order:

    | block        | dims (default) | computation                                                              |
    |--------------|----------------|--------------------------------------------------------------------------|
    | `chroma`     | 12             | `librosa.feature.chroma_stft(S=power_stft, tuning=0.0)`                  |
    | `mfcc`       | 20             | `librosa.feature.mfcc(S=librosa.power_to_db(mel))`                       |
    | `mfcc_delta` | 20             | `librosa.feature.delta(mfcc)`                                            |
    | `log_mel`    | 128            | `ln(10 * mel + log_eps)`, mel = `melspectrogram(S=power_stft)`           |
    | `log_cqt`    | 144            | `ln(10 * abs(cqt) + log_eps)`, 24 bins/octave x 6 octaves from C1 (Hamming) |

    The power STFT is computed once and shared by chroma, mel and MFCC. The block ranges are exposed as
    [`~MusiCoderFeatureExtractor.feature_layout`] and match `MusiCoderConfig.feature_layout`.

    Two backends compute this table. `backend="librosa"` (the default) calls librosa as written above, one clip at a
    time on the CPU: it is the reference. `backend="torch"` computes the same features with torch on `device`, on
    zero-padded batches of clips: the STFT by `torch.fft.rfft`, librosa's own chroma, mel and DCT matrices, the same
    Savitzky-Golay delta, and librosa's multi-rate CQT with its wavelet bases and soxr's own decimation (its FIR and
    start-up transient, measured through `librosa.resample`; the FIR applied by FFT blocks). On a CPU it runs its
    padded batches side by side, one per torch thread; on CUDA, 64 clips per batch.

    The torch backend matches the reference to float32 round-off: after CMVN, on music without near-silent bins, within
    about 1e-5 for chroma, MFCC, delta and log-mel and 1e-3 for log-CQT (on 391 real clips, 99.99% of the values within
    3e-4 and 0.8 respectively). The known deviation is in near-silent bins, which hold each implementation's own
    round-off: log-CQT bins 90 dB or more below the clip's loudest (e.g. next to digital silence) get soxr's or torch's
    float32 round-off and differ by up to about 9 in `ln(10 * S + eps)` at digital silence next to sound; log-mel bands
    110 dB below the frame's loudest differ by up to about 0.01 (librosa's STFT is float64 inside). Digital silence
    away from sound is exactly `ln(log_eps)` in both. A classifier trained on features of one backend gives the same
    predictions on features of the other (`benchmarks/feature_parity.py`).

    Finally, if `do_normalize`, every clip gets CMVN (cepstral mean and variance normalisation): each channel is
    shifted and scaled to zero mean and unit variance over the clip's valid (non-padding) frames; padding frames stay
    exactly `padding_value`, and constant channels (e.g. silence) become 0 rather than NaN (the standard deviation is
    floored at `CMVN_STD_FLOOR` = 1e-3).

    Args:
        feature_size (`int`, *optional*, defaults to 324):
            Channels per frame; must equal `n_chroma + 2 * n_mfcc + n_mels + cqt_bins_per_octave * cqt_n_octaves`.
        sampling_rate (`int`, *optional*, defaults to 44100):
            Sampling rate (Hz) the audio must have. Audio at another rate is refused, not silently resampled.
        padding_value (`float`, *optional*, defaults to 0.0):
            Value of the padding frames of a batch.
        n_fft (`int`, *optional*, defaults to 2048):
            STFT size and Hamming window length in samples; also the shortest clip accepted.
        hop_length (`int`, *optional*, defaults to 1024):
            Samples between frames, for the STFT and the CQT.
        n_mels (`int`, *optional*, defaults to 128):
            Mel bands of the log-mel block (and the input of the MFCCs).
        n_mfcc (`int`, *optional*, defaults to 20):
            MFCC coefficients (the MFCC delta block has the same size).
        n_chroma (`int`, *optional*, defaults to 12):
            Chroma bins.
        cqt_bins_per_octave (`int`, *optional*, defaults to 24):
            CQT resolution. 24 x 6 octaves gives the paper's 144 bins while staying far below Nyquist (the paper's
            literal 12 bins/octave x 144 bins would not fit under 22.05 kHz).
        cqt_n_octaves (`int`, *optional*, defaults to 6):
            Octaves covered by the CQT.
        cqt_fmin (`float`, *optional*, defaults to 32.703195662574764):
            Lowest CQT frequency in Hz (C1).
        log_eps (`float`, *optional*, defaults to 1e-10):
            The paper's "extremely small number" in `ln(10 * S + eps)`; it only bounds the log of silent bins
            (`ln(1e-10)` is about -23).
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to apply per-clip CMVN over the valid frames.
        return_attention_mask (`bool`, *optional*, defaults to `True`):
            Whether `__call__` returns an `attention_mask` by default (1 for real frames, 0 for padding). MusiCoder
            needs it for every padded batch.
        backend (`str`, *optional*, defaults to `"librosa"`):
            `"librosa"` (the reference) or `"torch"` (batched, CPU or CUDA; see above).
        device (`str` or `torch.device`, *optional*, defaults to `"cpu"`):
            Where the torch backend computes, e.g. `"cuda"`. It is saved in `preprocessor_config.json` as given, and
            a configuration saved with a CUDA device still loads and runs on a machine without one: extraction then
            falls back to the CPU with a warning. `__call__(..., device=...)` overrides it for one call.
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(
        self,
        feature_size=324,
        sampling_rate=44100,
        padding_value=0.0,
        n_fft=2048,
        hop_length=1024,
        n_mels=128,
        n_mfcc=20,
        n_chroma=12,
        cqt_bins_per_octave=24,
        cqt_n_octaves=6,
        cqt_fmin=C1_HZ,
        log_eps=1e-10,
        do_normalize=True,
        return_attention_mask=True,
        backend="librosa",
        device="cpu",
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.n_mfcc = n_mfcc
        self.n_chroma = n_chroma
        self.cqt_bins_per_octave = cqt_bins_per_octave
        self.cqt_n_octaves = cqt_n_octaves
        self.cqt_fmin = cqt_fmin
        self.log_eps = log_eps
        self.do_normalize = do_normalize
        self.backend = backend
        self.device = str(device)  # a string, so that it is saved in preprocessor_config.json (e.g. "cuda:0")
        self._validate_parameters()

    def _validate_parameters(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}.")
        try:
            torch.device(self.device)
        except RuntimeError as error:
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {self.device!r}.") from error
        for name in ("sampling_rate", "n_fft", "hop_length", "n_mels", "n_mfcc", "n_chroma", "cqt_bins_per_octave",
                     "cqt_n_octaves"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length ({self.hop_length}) must not exceed n_fft ({self.n_fft}).")
        if not self.log_eps > 0:
            raise ValueError(f"log_eps must be positive (it keeps ln(10 * S + eps) finite), got {self.log_eps}.")
        expected = self.n_chroma + 2 * self.n_mfcc + self.n_mels + self.cqt_bins_per_octave * self.cqt_n_octaves
        if self.feature_size != expected:
            raise ValueError(
                f"feature_size ({self.feature_size}) must equal n_chroma + 2 * n_mfcc + n_mels + cqt_bins_per_octave "
                f"* cqt_n_octaves = {self.n_chroma} + 2 * {self.n_mfcc} + {self.n_mels} + {self.cqt_bins_per_octave} "
                f"* {self.cqt_n_octaves} = {expected}."
            )
        top_bin_hz = self.cqt_fmin * 2.0 ** ((self.cqt_n_bins - 1) / self.cqt_bins_per_octave)
        if not 0 < self.cqt_fmin < top_bin_hz < self.sampling_rate / 2:
            raise ValueError(
                f"The CQT must lie in (0, Nyquist): cqt_fmin={self.cqt_fmin} Hz with {self.cqt_n_octaves} octaves "
                f"puts its top bin at {top_bin_hz:.1f} Hz, but Nyquist is {self.sampling_rate / 2} Hz."
            )

    @property
    def cqt_n_bins(self) -> int:
        return self.cqt_bins_per_octave * self.cqt_n_octaves

    @property
    def feature_layout(self) -> dict[str, list[int]]:
        """Channel range `[start, stop)` of each feature block, in channel order (same format as the model config)."""
        sizes = {
            "chroma": self.n_chroma,
            "mfcc": self.n_mfcc,
            "mfcc_delta": self.n_mfcc,
            "log_mel": self.n_mels,
            "log_cqt": self.cqt_n_bins,
        }
        layout, start = {}, 0
        for name, size in sizes.items():
            layout[name] = [start, start + size]
            start += size
        return layout

    @property
    def min_num_samples(self) -> int:
        """Shortest accepted clip, in samples (one STFT window)."""
        return self.n_fft

    def num_frames(self, num_samples: int) -> int:
        """Number of frames a clip of `num_samples` samples gives (centred frames: 1 + num_samples // hop_length)."""
        return 1 + num_samples // self.hop_length

    def _extract_frames(self, waveform: np.ndarray) -> np.ndarray:
        """
        Un-normalised features of one clip, with the configured backend.

        Args:
            waveform (`np.ndarray` of shape `(num_samples,)`):
                Mono float32 audio at `self.sampling_rate`, already validated (finite, at least `n_fft` samples).

        Returns:
            `np.ndarray` of shape `(num_frames, feature_size)`, float32, channels in `feature_layout` order.
        """
        if self.backend == "torch":
            return self._torch_extract([waveform], normalize=False)[0]
        return self._librosa_frames(waveform)

    def _librosa_frames(self, waveform: np.ndarray) -> np.ndarray:
        """The reference: un-normalised features of one clip with librosa (see `_extract_frames`)."""
        sr = self.sampling_rate
        power = np.abs(librosa.stft(waveform, n_fft=self.n_fft, hop_length=self.hop_length, window="hamming",
                                    center=True)) ** 2
        num_frames = power.shape[1]

        chroma = librosa.feature.chroma_stft(S=power, sr=sr, tuning=0.0, n_chroma=self.n_chroma)
        mel = librosa.feature.melspectrogram(S=power, sr=sr, n_mels=self.n_mels)
        mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=self.n_mfcc)
        # librosa's default Savitzky-Golay width 9 (mode="interp") needs >= 9 frames. Shorter clips (< ~0.19 s with the
        # defaults) use the largest odd width that fits (>= 3: the defaults give >= 3 frames); clips of >= 9 frames
        # are unchanged. Only a non-default hop_length == n_fft can give 2 frames: width 3 with edge padding then.
        delta_width = min(9, num_frames if num_frames % 2 else num_frames - 1)
        delta_mode = "interp" if delta_width >= 3 else "nearest"
        # float64 so that a constant MFCC track (silence) has a delta of ~1e-13 rather than float32 round-off (~1e-5).
        mfcc_delta = librosa.feature.delta(mfcc.astype(np.float64), width=max(delta_width, 3), mode=delta_mode)
        log_mel = np.log(10.0 * mel + self.log_eps)

        with warnings.catch_warnings():
            # On short clips librosa warns that its downsampled low octaves are shorter than their FFT; it zero-pads
            # them, which is what we want, so the warning is noise here.
            warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large for input signal", category=UserWarning)
            cqt = np.abs(
                librosa.cqt(
                    waveform,
                    sr=sr,
                    hop_length=self.hop_length,
                    fmin=self.cqt_fmin,
                    n_bins=self.cqt_n_bins,
                    bins_per_octave=self.cqt_bins_per_octave,
                    window="hamming",  # the paper uses a Hamming window for every feature (librosa's default is Hann)
                )
            )
        # Both use centred frames and agree in practice; guard against an off-by-one anyway so blocks always align
        # with the STFT frames (trim, or repeat the last CQT frame).
        if cqt.shape[1] > num_frames:
            cqt = cqt[:, :num_frames]
        elif cqt.shape[1] < num_frames:
            cqt = np.pad(cqt, ((0, 0), (0, num_frames - cqt.shape[1])), mode="edge")
        log_cqt = np.log(10.0 * cqt + self.log_eps)

        features = np.concatenate([chroma, mfcc, mfcc_delta, log_mel, log_cqt], axis=0).T
        return np.ascontiguousarray(features, dtype=np.float32)

    # -----------------------------------------------------------------------------------------------------------------
    # torch backend: the same computation on a zero-padded batch, on CPU or CUDA

    def _torch_device(self, device=None) -> torch.device:
        """`device` (or the configured one); a CUDA device on a machine without CUDA falls back to the CPU."""
        device = torch.device(device if device is not None else self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            logger.warning_once(
                f"{self.__class__.__name__} is configured for device {str(device)!r}, but CUDA is not available: "
                "extracting features on the CPU."
            )
            device = torch.device("cpu")
        if device.type == "cuda" and device.index is None:  # one cache entry per GPU, whatever its spelling
            device = torch.device("cuda", torch.cuda.current_device())
        return device

    def _torch_filterbanks(self, device: torch.device) -> _TorchFilterbanks:
        return _build_torch_filterbanks(
            self.sampling_rate, self.n_fft, self.hop_length, self.n_mels, self.n_mfcc, self.n_chroma,
            float(self.cqt_fmin), self.cqt_bins_per_octave, self.cqt_n_octaves, str(device),
        )  # fmt: skip

    def _torch_frames(
        self, audio: torch.Tensor, num_samples: torch.Tensor, start: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Un-normalised features of a zero-padded batch.

        Args:
            audio (`torch.Tensor` of shape `(batch_size, n)`):
                float32 audio: clip `i` is `audio[i, start : start + num_samples[i]]`, every other sample is zero.
                Zeros before and after the clips (see `_torch_margins`) spare copies.
            num_samples (`torch.Tensor` of shape `(batch_size,)`):
                The clips' lengths in samples.
            start (`int`, *optional*, defaults to 0):
                Where the clips start.

        Returns:
            `(features, num_frames)`: `(batch_size, num_frames(max(num_samples)), feature_size)` float32 features, of
            which the first `num_frames[i] = num_frames(num_samples[i])` frames of clip `i` are valid (the rest is
            garbage), and `num_frames`.
        """
        filters = self._torch_filterbanks(audio.device)
        length = int(num_samples.max())
        num_frames = 1 + num_samples // self.hop_length
        # librosa's centred frames, zero-padded by n_fft // 2 on both sides; zeros past a clip's end are exactly that
        # padding for the clip alone.
        half_window = self.n_fft // 2
        frames = _zero_padded(audio, start, length, half_window, half_window).unfold(1, self.n_fft, self.hop_length)
        chroma, energy, mel = self._torch_power_products(frames, filters)
        max_frames = frames.shape[1]
        valid = torch.arange(max_frames, device=audio.device) < num_frames[:, None]

        peak = chroma.amax(dim=-1, keepdim=True)  # librosa's max-norm per frame; all-zero frames stay zero
        chroma = chroma / torch.where(peak < torch.finfo(chroma.dtype).tiny, 1.0, peak)
        # librosa.power_to_db(mel) with top_db=80 below the clip's own peak (over its valid frames only)
        mel_db = 10.0 * torch.log10(mel.clamp_min(1e-10))
        mel_db_peak = mel_db.masked_fill(~valid[..., None], -torch.inf).amax(dim=(1, 2), keepdim=True)
        mfcc = torch.maximum(mel_db, mel_db_peak - 80.0) @ filters.dct
        mfcc_delta = self._torch_delta(mfcc, num_frames)
        log_mel = torch.log(10.0 * mel + self.log_eps)

        audible = energy[..., 0] > 0
        cqt = self._torch_cqt(audio, start, num_samples, audible if (valid & ~audible).any() else None, filters)
        log_cqt = torch.log(10.0 * cqt[:, :max_frames] + self.log_eps)
        return torch.cat([chroma, mfcc, mfcc_delta, log_mel, log_cqt], dim=-1), num_frames

    def _torch_power_products(
        self, frames: torch.Tensor, filters: _TorchFilterbanks
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Chroma (before its per-frame max-norm), energy and mel of the power spectra of `frames` `(batch_size,
        num_frames, n_fft)`, not yet windowed: `(batch_size, num_frames, n_chroma)`, `(..., 1)`, `(..., n_mels)`.

        On a CPU this runs over tiles of frames (see `CPU_TILE_SAMPLES`).
        """
        batch_size, num_frames = frames.shape[:2]
        tile = _tile_length(frames)
        chroma_and_energy = frames.new_empty(batch_size, num_frames, self.n_chroma + 1)
        mel = frames.new_empty(batch_size, num_frames, self.n_mels)
        for first in range(0, num_frames, tile):
            tiles = slice(first, first + tile)
            spectrum = torch.fft.rfft(frames[:, tiles] * filters.window)
            # |X|^2 by squaring (re, im) pairs in place, then adding them: 3x faster than reading .real and .imag twice
            squares = torch.view_as_real(spectrum).square_()
            power = torch.add(squares[..., 0], squares[..., 1])
            chroma_and_energy[:, tiles] = power @ filters.chroma_and_energy
            tile_mel = power.new_empty(*power.shape[:2], self.n_mels)
            for first_band, stop_band, first_bin, stop_bin, weights in filters.mel_groups:
                torch.matmul(power[..., first_bin:stop_bin], weights, out=tile_mel[..., first_band:stop_band])
            mel[:, tiles] = tile_mel
        chroma, energy = chroma_and_energy.split([self.n_chroma, 1], dim=-1)
        return chroma, energy, mel

    def _torch_cqt(
        self, audio: torch.Tensor, start: int, num_samples: torch.Tensor, audible: torch.Tensor | None,
        filters: _TorchFilterbanks,
    ) -> torch.Tensor:  # fmt: skip
        """
        CQT magnitudes `(batch_size, frames, cqt_n_bins)` of a zero-padded batch (as in `_torch_frames`), with at least
        as many frames as the STFT: as librosa, each octave is analysed after lowering the rate with soxr's FIR.
        `audible` `(batch_size, stft_frames)` tells which STFT frames have any non-zero sample; `None` when all valid
        frames do.
        """
        signal, length, clip_lengths = audio, int(num_samples.max()), num_samples
        octaves = []
        for index, octave in enumerate(filters.cqt_octaves):
            frame_length = octave.kernels.shape[0]
            if octave.decimator is not None:
                ratio = octave.decimator.ratio
                # zeros around the decimated audio for this octave's frames and the next decimator, read in place
                following = next((o.decimator for o in filters.cqt_octaves[index + 1 :] if o.decimator), None)
                before = max(frame_length // 2, following.overlap if following else 0)
                after = max(frame_length // 2, following.block if following else 0)
                signal = octave.decimator(signal, start, length, margins=(before, after))
                start, length = before, signal.shape[1] - before - after
                decimated = signal[:, start : start + length]
                # soxr returns round(n / ratio) samples, which librosa zero-pads to ceil(n / ratio).
                soxr_lengths = (2 * clip_lengths + ratio) // (2 * ratio)
                clip_lengths = -(-clip_lengths // ratio)
                end = int(soxr_lengths.min())
                positions = torch.arange(end, length, device=signal.device)
                decimated[:, end:].masked_fill_(positions >= soxr_lengths[:, None], 0.0)
                if audible is not None:
                    decimated.masked_fill_(self._digitally_silent(decimated, audible, octave), 0.0)
            # librosa's CQT frames: centred, zero-padded, not windowed (the wavelets are)
            frames = _zero_padded(signal, start, length, frame_length // 2, frame_length // 2)
            real, imag = (frames.unfold(1, frame_length, octave.hop_length) @ octave.kernels).chunk(2, dim=-1)
            octaves.append(real.square().addcmul_(imag, imag).sqrt_())
        num_frames = min(response.shape[1] for response in octaves)
        return torch.cat([response[:, :num_frames] for response in reversed(octaves)], dim=-1)

    def _digitally_silent(self, signal: torch.Tensor, audible: torch.Tensor, octave: _CQTOctave) -> torch.Tensor:
        """
        Which samples of `signal`, `octave`'s decimated audio, only read input samples that are exactly 0, judged
        conservatively from `audible`, the STFT frames that have any non-zero sample: `(batch_size, signal length)`.

        soxr keeps them exactly 0 (log-CQT ln(1e-10) = -23), while the FFT blocks of the decimators spread their
        float32 round-off (1e-7 of the block's peak) over them (log-CQT near -16): the torch backend zeroes them.
        """
        # A non-zero input sample within `reach` of a sample lies in a frame at most `span` frames from its nearest.
        span = -(-(self.n_fft // 2 + octave.reach + self.hop_length // 2) // self.hop_length)
        near_audible = torch.nn.functional.max_pool1d(audible[:, None].float(), 2 * span + 1, 1, span)[:, 0] > 0
        # Decimated sample j is nearest to STFT frame (j + hop / 2) // hop, with hop = octave.hop_length samples at
        # this rate: repeat each frame's flag hop times, starting half a frame early (the last frame's flag continues).
        hop = octave.hop_length
        near_audible = torch.cat([near_audible, near_audible[:, -1:]], dim=1)
        return ~near_audible.repeat_interleave(hop, dim=1)[:, hop // 2 : hop // 2 + signal.shape[1]]

    @staticmethod
    def _torch_delta(features: torch.Tensor, num_frames: torch.Tensor, width: int = 9) -> torch.Tensor:
        """
        `librosa.feature.delta` (Savitzky-Golay slope, mode "interp") over each clip's valid frames, with
        the same narrower window as the librosa backend for clips shorter than `width` frames.
        """
        max_frames = features.shape[1]
        clip_width = torch.minimum(torch.full_like(num_frames, width), num_frames - (1 - num_frames % 2))
        interp = clip_width >= 3  # otherwise (2 frames) librosa's fallback: width 3 with edge padding ("nearest")
        half = torch.where(interp, clip_width, 3) // 2
        last = (num_frames - 1)[:, None]
        frames = torch.arange(max_frames, device=features.device).expand(len(num_frames), -1)
        # "interp" fits one line to the first (last) full window for the first (last) half-width frames: its slope is
        # the slope at the window's centre. Clamping the centre does that; clamping the taps does "nearest".
        centres = torch.where(
            interp[:, None], torch.minimum(torch.maximum(frames, half[:, None]), last - half[:, None]), frames
        )
        delta = torch.zeros_like(features)
        for k in range(1, width // 2 + 1):
            # Differences of taps (not a convolution): a constant track gets a delta of exactly 0.
            weight = torch.where(k <= half, float(k), 0.0)[:, None, None]
            ahead = torch.minimum(centres + k, last).clamp_min(0)
            behind = (centres - k).clamp_min(0)
            delta += weight * (
                features.gather(1, ahead[..., None].expand_as(features))
                - features.gather(1, behind[..., None].expand_as(features))
            )
        norm = (half * (half + 1) * (2 * half + 1) / 3).to(features.dtype)  # 2 * sum(k^2 for k <= half)
        return delta / norm[:, None, None]

    @staticmethod
    def _torch_cmvn(features: torch.Tensor, num_valid: torch.Tensor, padding_value: float = 0.0) -> torch.Tensor:
        """[`~MusiCoderFeatureExtractor.cmvn`] of a batch: the first `num_valid[i]` frames of clip `i` are valid."""
        valid = torch.arange(features.shape[1], device=features.device) < num_valid[:, None]
        # (batch, 1, frames): averages as a batched product
        weights = (valid / num_valid.clamp_min(1)[:, None]).to(features.dtype)[:, None, :]
        # Relative to the first frame, so that a constant channel is exactly 0 and float32 sums lose nothing to a large
        # mean (MFCC 0 is near -500).
        centred = features - features[:, :1]
        mean = weights @ centred
        variance = (weights @ centred.square() - mean.square()).clamp_min(0.0)
        centred -= mean
        centred /= variance.sqrt().clamp_min(CMVN_STD_FLOOR)
        return centred.masked_fill_(~valid[..., None], padding_value)

    def _torch_margins(self, filters: _TorchFilterbanks) -> tuple[int, int]:
        """Zeros to keep before and after a batch's audio so that the STFT and the first decimator read it in place."""
        before = after = self.n_fft // 2
        decimator = filters.cqt_octaves[0].decimator
        if decimator is not None:
            before, after = max(before, decimator.overlap), max(after, decimator.block)
        return before, after

    def _torch_extract(
        self, waveforms: list[np.ndarray], normalize: bool, max_frames: int | None = None, device=None,
        batch_size: int | None = None,
    ) -> list[np.ndarray]:  # fmt: skip
        """
        Features of validated waveforms, in padded batches of clips of similar lengths (longest first; `batch_size`
        clips, or see `TORCH_CUDA_BATCH_SIZE` and `TORCH_CPU_BATCH_SAMPLES`): a list of `(min(num_frames, max_frames),
        feature_size)` float32 arrays in input order, normalised over exactly those frames if `normalize`.
        """
        device = self._torch_device(device)
        order = sorted(range(len(waveforms)), key=lambda i: -len(waveforms[i]))

        def has_room(batch):
            if batch_size:
                return len(batch) < batch_size
            if device.type == "cuda":
                return len(batch) < TORCH_CUDA_BATCH_SIZE
            return (len(batch) + 1) * len(waveforms[batch[0]]) <= TORCH_CPU_BATCH_SAMPLES  # its first is its longest

        batches = []
        for i in order:
            if batches and has_room(batches[-1]):
                batches[-1].append(i)
            else:
                batches.append([i])
        before, after = self._torch_margins(self._torch_filterbanks(device))
        results = [None] * len(waveforms)

        def extract(batch):
            with torch.inference_mode():
                num_samples = torch.tensor([len(waveforms[i]) for i in batch], device=device)
                audio = torch.zeros(len(batch), before + len(waveforms[batch[0]]) + after, device=device)
                for row, i in enumerate(batch):
                    audio[row, before : before + len(waveforms[i])] = torch.from_numpy(waveforms[i])
                features, num_frames = self._torch_frames(audio, num_samples, start=before)
                kept = num_frames if max_frames is None else num_frames.clamp(max=max_frames)
                if normalize:
                    features = self._torch_cmvn(features, kept, self.padding_value)
                features = features.cpu().numpy()
            for row, (i, n) in enumerate(zip(batch, kept.tolist())):
                results[i] = features[row, :n]

        threads = torch.get_num_threads()
        if device.type == "cpu" and threads > 1 and len(batches) > 1:
            # On a CPU, run batches side by side with one intra-op thread each: measured on 2 cores, 1.5-1.6x one
            # thread's throughput against 1.3x for splitting every FFT and product, and when another process holds a
            # core, about 1x instead of 0.1x (every operation otherwise waits at its thread barrier for the core).
            # Processes scale better (2 single-threaded processes: 2x; torch's CPU FFTs hardly overlap across Python
            # threads), which is what `featurize_dataset(..., num_proc=N)` uses for bulk extraction.
            # The thread count is process-wide in torch: it is restored afterwards.
            def extract_single_threaded(batch):
                torch.set_num_threads(1)
                extract(batch)

            try:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(extract_single_threaded, batches))
            finally:
                torch.set_num_threads(threads)
        else:
            for batch in batches:
                extract(batch)
        return results

    @staticmethod
    def cmvn(features: np.ndarray, attention_mask: np.ndarray | None = None, padding_value: float = 0.0) -> np.ndarray:
        """
        Per-clip cepstral mean and variance normalisation over the valid frames.

        Args:
            features (`np.ndarray` of shape `(num_frames, feature_size)`):
                One clip, possibly padded.
            attention_mask (`np.ndarray` of shape `(num_frames,)`, *optional*):
                1 for valid frames, 0 for padding (either side). `None` means all frames are valid.
            padding_value (`float`, *optional*, defaults to 0.0):
                Written into the padding frames.

        Returns:
            `np.ndarray` (float32) of the same shape: valid frames have zero mean and unit variance per channel
            (constant channels become 0), padding frames equal `padding_value`.
        """
        features = np.asarray(features, dtype=np.float64)  # float64 so that a constant channel subtracts to exactly 0
        valid = np.ones(len(features), dtype=bool) if attention_mask is None else np.asarray(attention_mask) > 0
        out = np.full(features.shape, padding_value, dtype=np.float64)
        if valid.any():
            frames = features[valid]
            mean = frames.mean(axis=0)
            std = np.maximum(frames.std(axis=0), CMVN_STD_FLOOR)
            out[valid] = (frames - mean) / std
        return out.astype(np.float32)

    def normalize(self, input_features: list[np.ndarray], attention_mask: list[np.ndarray] | None = None):
        """Apply [`~MusiCoderFeatureExtractor.cmvn`] to every clip of a (possibly padded) batch."""
        if attention_mask is None:
            attention_mask = [None] * len(input_features)
        return [self.cmvn(x, m, self.padding_value) for x, m in zip(input_features, attention_mask)]

    def _to_waveform(self, audio, index: int) -> np.ndarray:
        """One input clip -> validated mono float32 waveform."""
        where = f"Audio clip {index} of the batch" if index is not None else "The audio"
        if is_torch_tensor(audio):
            audio = audio.detach().cpu()
            if audio.is_floating_point() and audio.dtype.itemsize < 4:  # bfloat16 has no numpy equivalent
                audio = audio.float()
            audio = audio.numpy()
        if isinstance(audio, (list, tuple)):
            # Python numbers are taken as float amplitudes as given (no integer PCM scaling).
            audio = np.asarray(audio, dtype=np.float32)
        audio = np.asarray(audio)

        if audio.dtype.kind in "iu":  # integer PCM -> float in [-1, 1]
            if audio.dtype.itemsize > 4:
                raise ValueError(
                    f"{where} has dtype {audio.dtype}, which is not a PCM format; pass float audio in [-1, 1] or "
                    "int8/int16/int32 PCM."
                )
            full_scale = 2.0 ** (8 * audio.dtype.itemsize - 1)
            offset = full_scale if audio.dtype.kind == "u" else 0.0  # unsigned PCM (e.g. uint8 WAV) is offset binary
            audio = ((audio.astype(np.float64) - offset) / full_scale).astype(np.float32)
        elif audio.dtype.kind == "f":
            audio = audio.astype(np.float32, copy=False)
        else:
            raise ValueError(f"{where} has dtype {audio.dtype}; expected float or integer PCM samples.")

        if audio.ndim not in (1, 2):
            raise ValueError(
                f"{where} has shape {audio.shape}; expected a 1-D mono waveform or a 2-D multi-channel one. "
                "Pass a batch as a list of clips."
            )
        if audio.size == 0:
            raise ValueError(f"{where} is empty (0 samples).")
        if not np.isfinite(audio).all():
            raise ValueError(f"{where} contains NaN or infinite samples; clean or drop it before extraction.")
        if audio.ndim == 2:
            # One multi-channel clip: channels are the shorter axis, so librosa's (channels, samples) and soundfile's
            # (samples, channels) layouts both work.
            channel_axis = int(np.argmin(audio.shape))
            if audio.shape[channel_axis] > MAX_CHANNELS:
                raise ValueError(
                    f"{where} is a 2-D array of shape {audio.shape}, read as one multi-channel clip, but it would "
                    f"have {audio.shape[channel_axis]} channels (at most {MAX_CHANNELS} are accepted). To process a "
                    "batch of mono clips, pass a list of 1-D arrays."
                )
            audio = audio.mean(axis=channel_axis, dtype=np.float32)
        if audio.shape[0] < self.min_num_samples:
            raise ValueError(
                f"{where} is too short: {audio.shape[0]} samples, but at least n_fft={self.min_num_samples} samples "
                f"({self.min_num_samples / self.sampling_rate:.3f} s at {self.sampling_rate} Hz) are needed for one "
                "analysis window. Pad it (e.g. with zeros) or drop it."
            )
        return np.ascontiguousarray(audio)

    def _to_waveforms(self, raw_speech) -> list[np.ndarray]:
        if isinstance(raw_speech, np.ndarray) or is_torch_tensor(raw_speech):
            return [self._to_waveform(raw_speech, None)]
        if isinstance(raw_speech, (list, tuple)):
            if len(raw_speech) == 0:
                raise ValueError("The audio is empty: got an empty list.")
            first = raw_speech[0]
            if is_torch_tensor(first) or (isinstance(first, (list, tuple, np.ndarray)) and np.ndim(first) > 0):
                return [self._to_waveform(clip, i) for i, clip in enumerate(raw_speech)]
            return [self._to_waveform(raw_speech, None)]  # a single clip given as a list of numbers
        raise ValueError(
            f"Unsupported audio input of type {type(raw_speech).__name__}; expected a numpy array, a torch tensor, a "
            "list of floats, or a list of those for a batch."
        )

    def __call__(
        self,
        raw_speech: np.ndarray | list[float] | list[np.ndarray] | list[list[float]],
        sampling_rate: int | None = None,
        padding: bool | str | PaddingStrategy = True,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | TensorType | None = None,
        return_attention_mask: bool | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Extract MusiCoder features from one clip or a batch of clips.

        Args:
            raw_speech (`np.ndarray`, `torch.Tensor`, `list[float]`, or a list of those):
                The audio, at `self.sampling_rate` (44.1 kHz). A single clip is a 1-D array/tensor/list of samples, or
                a 2-D array/tensor for ONE multi-channel clip, averaged to mono; its channels are the shorter axis, so
                both `(channels, samples)` (librosa) and `(samples, channels)` (soundfile) work. A batch is a list
                (or tuple) of such clips: a 2-D array is never read as a batch. Float audio is used as is (expected
                in [-1, 1]); integer PCM (int8/int16/int32, uint8) is scaled to [-1, 1], e.g. int16 / 32768. Every
                clip needs at least `n_fft` samples and finite values.
            sampling_rate (`int`, *optional*):
                The sampling rate of `raw_speech`. A rate other than `self.sampling_rate` raises an error (resample
                first, e.g. with `librosa.resample`); passing it is strongly recommended to catch such mistakes.
            padding (`bool`, `str` or [`~utils.PaddingStrategy`], *optional*, defaults to `True`):
                - `True` or `'longest'`: pad to the longest clip of the batch.
                - `'max_length'`: pad to `max_length` frames.
                - `False` or `'do_not_pad'`: no padding (clips may have different lengths).
            max_length (`int`, *optional*):
                Length in frames (not samples) for `padding='max_length'` and `truncation`.
            truncation (`bool`, *optional*, defaults to `False`):
                Cut clips longer than `max_length` frames. Off by default: longer audio is never silently cut (the
                model takes at most 1600 frames; chunk longer audio instead). With truncation, CMVN uses the kept
                frames only.
            pad_to_multiple_of (`int`, *optional*):
                Pad the frame count to a multiple of this value.
            return_tensors (`str` or [`~utils.TensorType`], *optional*):
                `'pt'` for PyTorch tensors, `'np'` for numpy arrays, `None` for lists of numpy arrays.
            return_attention_mask (`bool`, *optional*):
                Whether to return `attention_mask` (defaults to `self.return_attention_mask`, i.e. `True`).
            device (`str` or `torch.device`, *optional*):
                torch backend only: the device to compute on for this call (defaults to `self.device`). The outputs
                are returned on the CPU, as with every feature extractor.
            batch_size (`int`, *optional*):
                torch backend only: clips per padded batch (defaults to 64 on CUDA and, on a CPU, as many clips as fit
                in `TORCH_CPU_BATCH_SAMPLES` = 2**21 padded samples); lower it to bound memory. It does not change the
                features.

        Returns:
            [`BatchFeature`] with `input_features` of shape `(batch_size, num_frames, feature_size)` (float32) and,
            if requested, `attention_mask` of shape `(batch_size, num_frames)` (1 for real frames, 0 for padding).
        """
        if sampling_rate is not None:
            if sampling_rate != self.sampling_rate:
                raise ValueError(
                    f"The audio has a sampling rate of {sampling_rate} Hz, but {self.__class__.__name__} (and the "
                    f"model trained with it) expects {self.sampling_rate} Hz. Resample it first, e.g. "
                    f"`librosa.resample(y, orig_sr={sampling_rate}, target_sr={self.sampling_rate})`, or cast a "
                    f"`datasets` column with `Audio(sampling_rate={self.sampling_rate})`."
                )
        else:
            logger.warning(
                f"It is strongly recommended to pass the `sampling_rate` argument to `{self.__class__.__name__}()`. "
                "Failing to do so can result in silent errors that might be hard to debug."
            )

        waveforms = self._to_waveforms(raw_speech)
        # The torch backend normalises on its device, before padding, over the frames that truncation keeps.
        normalize_on_device = self.do_normalize and self.backend == "torch"
        if self.backend == "torch":
            kept_frames = None
            if truncation and max_length is not None:
                kept_frames = max_length
                if pad_to_multiple_of and max_length % pad_to_multiple_of:  # as `pad` rounds it
                    kept_frames = (max_length // pad_to_multiple_of + 1) * pad_to_multiple_of
            features = self._torch_extract(
                waveforms, normalize=normalize_on_device, max_frames=kept_frames, device=device, batch_size=batch_size
            )
        else:
            features = [self._librosa_frames(waveform) for waveform in waveforms]

        # Always pad with a mask: CMVN needs to know which frames are valid (padding may be on either side).
        padded = self.pad(
            BatchFeature({"input_features": features}),
            padding=padding,
            max_length=max_length,
            truncation=truncation,
            pad_to_multiple_of=pad_to_multiple_of,
            return_attention_mask=True,
        )
        input_features = [np.asarray(x, dtype=np.float32) for x in padded["input_features"]]
        attention_mask = [np.asarray(m, dtype=np.int32) for m in padded["attention_mask"]]

        if self.do_normalize and not normalize_on_device:
            input_features = self.normalize(input_features, attention_mask)

        outputs = {"input_features": input_features}
        return_attention_mask = (
            return_attention_mask if return_attention_mask is not None else self.return_attention_mask
        )
        if return_attention_mask:
            outputs["attention_mask"] = attention_mask
        return BatchFeature(outputs, tensor_type=return_tensors)


__all__ = ["MusiCoderFeatureExtractor"]
