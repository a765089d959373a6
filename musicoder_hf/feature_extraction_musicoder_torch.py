"""
The torch backend of `MusiCoderFeatureExtractor`: the librosa reference's features, computed with torch on zero-padded
batches of clips, on CPU or CUDA.

This module depends on numpy, librosa and torch only: it is saved next to checkpoints with the feature extractor (which
imports it relatively), for `trust_remote_code=True` where `musicoder_hf` is not installed.
"""

import functools
import math
from dataclasses import dataclass

import librosa
import numpy as np
import torch


# Padded batches when `extract` gets no `batch_size`. On CUDA: 64 clips (30 s clips take about 2 GB). On a CPU,
# batching gains nothing once a clip is long, and temporaries above glibc's mmap threshold (32 MiB) are handed back to
# the kernel when freed and faulted in again on the next batch: as many clips as fit in 2**21 padded samples (48 s at
# 44.1 kHz) keeps them below it.
TORCH_CUDA_BATCH_SIZE = 64
TORCH_CPU_BATCH_SAMPLES = 2**21

# A clip longer than this many samples (plus the margins) is computed block by block: blocks of this many samples, each
# read with `_TorchFilterbanks.reach` samples of context on both sides, the frames whose analysis reaches past the
# block's context discarded. The features are the whole clip's (to float32 round-off) and the memory is one block's,
# whatever the length of the track (47.5 s at 44.1 kHz).
LONG_CLIP_BLOCK_SAMPLES = 2**21

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
    reach: int  # input samples on each side of a frame's centre that its features read (the lowest CQT octave's)


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
    # A CQT frame reads half its wavelet at its octave's rate, plus what the decimators before it read; soxr's start-up
    # correction (the first samples of each decimated signal) reaches as far again.
    reach = n_fft // 2
    for octave in octaves:
        corrections = octave.decimator.start_correction if octave.decimator is not None else None
        correction = 0 if corrections is None else corrections.shape[0] * octave.decimation
        reach = max(reach, octave.kernels.shape[0] // 2 * octave.decimation + octave.reach + correction)
    return _TorchFilterbanks(
        reach=reach,
        window=torch.hamming_window(n_fft, periodic=True, device=device),
        chroma_and_energy=tensor(np.concatenate([chroma, np.ones((1, n_fft // 2 + 1))]).T),
        mel_groups=tuple(mel_groups),
        dct=tensor(_orthonormal_dct(n_mels, n_mfcc)),
        cqt_octaves=tuple(octaves),
    )


@dataclass(frozen=True)
class TorchFeatureBackend:
    """
    The extractor's features (see `MusiCoderFeatureExtractor`) with torch, on zero-padded batches of clips: the STFT
    by `torch.fft.rfft`, librosa's own chroma, mel and DCT matrices, the same Savitzky-Golay delta, and librosa's
    multi-rate CQT with its wavelet bases and soxr's own decimation (its FIR and start-up transient, measured through
    `librosa.resample`; the FIR applied by FFT blocks).

    The settings are the extractor's; the constant tensors are built once per configuration and device.
    """

    sampling_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    n_mfcc: int
    n_chroma: int
    cqt_fmin: float
    cqt_bins_per_octave: int
    cqt_n_octaves: int
    log_eps: float

    def extract(
        self, waveforms: list[np.ndarray], device: torch.device, max_frames: int | None = None,
        batch_size: int | None = None, cmvn_std_floor: float | None = None,
    ) -> list[np.ndarray]:  # fmt: skip
        """
        Features of mono float32 waveforms (each at least `n_fft` samples, finite), computed on `device` in padded
        batches of clips of similar lengths, one batch after another.

        Args:
            waveforms (`list[np.ndarray]`):
                The clips, 1-D float32 at `sampling_rate`.
            device (`torch.device`):
                Where to compute; the results are numpy arrays on the CPU.
            max_frames (`int`, *optional*):
                Keep at most this many frames of each clip.
            batch_size (`int`, *optional*):
                Clips per padded batch; by default `TORCH_CUDA_BATCH_SIZE` on CUDA and, on a CPU, as many clips as
                fit in `TORCH_CPU_BATCH_SAMPLES` padded samples. It does not change the features.
            cmvn_std_floor (`float`, *optional*):
                If given, each clip is CMVN-normalised on `device` over the frames it keeps (see `cmvn`), its standard
                deviations floored at this value.

        Returns:
            `list[np.ndarray]`: in input order, `(min(num_frames, max_frames), feature_size)` float32 arrays.
        """
        order = sorted(range(len(waveforms)), key=lambda i: -len(waveforms[i]))

        def has_room(batch):
            if len(waveforms[batch[0]]) > long_clip:  # its first is its longest
                return False
            if batch_size:
                return len(batch) < batch_size
            if device.type == "cuda":
                return len(batch) < TORCH_CUDA_BATCH_SIZE
            return (len(batch) + 1) * len(waveforms[batch[0]]) <= TORCH_CPU_BATCH_SAMPLES  # its first is its longest

        filters = self.filterbanks(device)
        long_clip = LONG_CLIP_BLOCK_SAMPLES + 2 * filters.reach
        batches = []
        for i in order:
            if batches and has_room(batches[-1]):
                batches[-1].append(i)
            else:
                batches.append([i])
        before, after = self._margins(filters)
        results = [None] * len(waveforms)
        with torch.inference_mode():
            for batch in batches:
                if len(waveforms[batch[0]]) > long_clip:
                    features, num_frames = self._frames_by_blocks(waveforms[batch[0]], device)
                else:
                    num_samples = torch.tensor([len(waveforms[i]) for i in batch], device=device)
                    audio = torch.zeros(len(batch), before + len(waveforms[batch[0]]) + after, device=device)
                    for row, i in enumerate(batch):
                        audio[row, before : before + len(waveforms[i])] = torch.from_numpy(waveforms[i])
                    features, num_frames = self.frames(audio, num_samples, start=before)
                kept = num_frames if max_frames is None else num_frames.clamp(max=max_frames)
                if cmvn_std_floor is not None:
                    features = self.cmvn(features, kept, cmvn_std_floor)
                features = features.cpu().numpy()
                for row, (i, n) in enumerate(zip(batch, kept.tolist())):
                    results[i] = features[row, :n]
        return results

    def filterbanks(self, device: torch.device) -> _TorchFilterbanks:
        return _build_torch_filterbanks(
            self.sampling_rate, self.n_fft, self.hop_length, self.n_mels, self.n_mfcc, self.n_chroma,
            float(self.cqt_fmin), self.cqt_bins_per_octave, self.cqt_n_octaves, str(device),
        )  # fmt: skip

    def frames(
        self, audio: torch.Tensor, num_samples: torch.Tensor, start: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Un-normalised features of a zero-padded batch.

        Args:
            audio (`torch.Tensor` of shape `(batch_size, n)`):
                float32 audio: clip `i` is `audio[i, start : start + num_samples[i]]`, every other sample is zero.
                Zeros before and after the clips (see `_margins`) spare copies.
            num_samples (`torch.Tensor` of shape `(batch_size,)`):
                The clips' lengths in samples.
            start (`int`, *optional*, defaults to 0):
                Where the clips start.

        Returns:
            `(features, num_frames)`: `(batch_size, num_frames(max(num_samples)), feature_size)` float32 features, of
            which the first `num_frames[i] = num_frames(num_samples[i])` frames of clip `i` are valid (the rest is
            garbage), and `num_frames`.
        """
        chroma, mel, log_cqt, num_frames = self._frame_spectra(audio, num_samples, start)
        return self._features(chroma, mel, log_cqt, num_frames), num_frames

    def _frame_spectra(
        self, audio: torch.Tensor, num_samples: torch.Tensor, start: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The frame-local part of `frames` (arguments alike): chroma (max-normed), mel power and log-CQT of each
        frame, `(batch_size, frames, n)` each, and `num_frames`. What is left (MFCC, whose dB floor follows the clip's
        loudest frame, and its delta) needs the whole clip: `_features`."""
        filters = self.filterbanks(audio.device)
        length = int(num_samples.max())
        num_frames = 1 + num_samples // self.hop_length
        # librosa's centred frames, zero-padded by n_fft // 2 on both sides; zeros past a clip's end are exactly that
        # padding for the clip alone.
        half_window = self.n_fft // 2
        frames = _zero_padded(audio, start, length, half_window, half_window).unfold(1, self.n_fft, self.hop_length)
        chroma, energy, mel = self._power_products(frames, filters)
        max_frames = frames.shape[1]
        valid = torch.arange(max_frames, device=audio.device) < num_frames[:, None]

        peak = chroma.amax(dim=-1, keepdim=True)  # librosa's max-norm per frame; all-zero frames stay zero
        chroma = chroma / torch.where(peak < torch.finfo(chroma.dtype).tiny, 1.0, peak)
        audible = energy[..., 0] > 0
        cqt = self._cqt(audio, start, num_samples, audible if (valid & ~audible).any() else None, filters)
        log_cqt = torch.log(10.0 * cqt[:, :max_frames] + self.log_eps)
        return chroma, mel, log_cqt, num_frames

    def _features(
        self, chroma: torch.Tensor, mel: torch.Tensor, log_cqt: torch.Tensor, num_frames: torch.Tensor
    ) -> torch.Tensor:
        """The features from `_frame_spectra`'s outputs, in `feature_layout` order."""
        filters = self.filterbanks(mel.device)
        valid = torch.arange(mel.shape[1], device=mel.device) < num_frames[:, None]
        # librosa.power_to_db(mel) with top_db=80 below the clip's own peak (over its valid frames only)
        mel_db = 10.0 * torch.log10(mel.clamp_min(1e-10))
        mel_db_peak = mel_db.masked_fill(~valid[..., None], -torch.inf).amax(dim=(1, 2), keepdim=True)
        mfcc = torch.maximum(mel_db, mel_db_peak - 80.0) @ filters.dct
        mfcc_delta = self.delta(mfcc, num_frames)
        log_mel = torch.log(10.0 * mel + self.log_eps)
        return torch.cat([chroma, mfcc, mfcc_delta, log_mel, log_cqt], dim=-1)

    def _frames_by_blocks(self, waveform: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """`frames` of one long clip, block by block (see `LONG_CLIP_BLOCK_SAMPLES`): `(1, num_frames, feature_size)`
        and `num_frames`. Each block's context starts on a frame centre, so its frames, and the samples of every
        decimated octave, fall on the whole clip's."""
        filters = self.filterbanks(device)
        before, after = self._margins(filters)
        hop = self.hop_length
        total_frames = 1 + len(waveform) // hop
        block_frames = max(1, LONG_CLIP_BLOCK_SAMPLES // hop)
        context_frames = -(-filters.reach // hop) + 1
        spectra = None
        for first in range(0, total_frames, block_frames):
            stop = min(first + block_frames, total_frames)
            context_start = max(0, first - context_frames) * hop
            context_stop = min(len(waveform), (stop + context_frames) * hop)
            audio = torch.zeros(1, before + context_stop - context_start + after, device=device)
            audio[0, before : audio.shape[1] - after] = torch.from_numpy(waveform[context_start:context_stop])
            block = self._frame_spectra(audio, torch.tensor([context_stop - context_start], device=device), before)
            offset = first - context_start // hop
            if spectra is None:
                spectra = [part.new_empty(1, total_frames, part.shape[-1]) for part in block[:3]]
            for whole, part in zip(spectra, block[:3]):
                whole[:, first:stop] = part[:, offset : offset + stop - first]
        num_frames = torch.tensor([total_frames], device=device)
        return self._features(*spectra, num_frames), num_frames

    def _power_products(
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
            # |X|^2 by squaring the (re, im) pairs in place, then adding them: one contiguous pass and no temporaries
            # for the squares (unlike `.real ** 2 + .imag ** 2`)
            squares = torch.view_as_real(spectrum).square_()
            power = torch.add(squares[..., 0], squares[..., 1])
            chroma_and_energy[:, tiles] = power @ filters.chroma_and_energy
            tile_mel = power.new_empty(*power.shape[:2], self.n_mels)
            for first_band, stop_band, first_bin, stop_bin, weights in filters.mel_groups:
                torch.matmul(power[..., first_bin:stop_bin], weights, out=tile_mel[..., first_band:stop_band])
            mel[:, tiles] = tile_mel
        chroma, energy = chroma_and_energy.split([self.n_chroma, 1], dim=-1)
        return chroma, energy, mel

    def _cqt(
        self, audio: torch.Tensor, start: int, num_samples: torch.Tensor, audible: torch.Tensor | None,
        filters: _TorchFilterbanks,
    ) -> torch.Tensor:  # fmt: skip
        """
        CQT magnitudes `(batch_size, frames, cqt_n_bins)` of a zero-padded batch (as in `frames`), with at least
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
        float32 round-off (1e-7 of the block's peak) over them (log-CQT near -16): this backend zeroes them.
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
    def delta(features: torch.Tensor, num_frames: torch.Tensor, width: int = 9) -> torch.Tensor:
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
    def cmvn(
        features: torch.Tensor, num_valid: torch.Tensor, std_floor: float, padding_value: float = 0.0
    ) -> torch.Tensor:
        """
        Per-clip CMVN of a batch `(batch_size, frames, channels)` over the first `num_valid[i]` frames of clip `i`, as
        `MusiCoderFeatureExtractor.cmvn`: standard deviations are floored at `std_floor`, the other frames are set to
        `padding_value`.
        """
        valid = torch.arange(features.shape[1], device=features.device) < num_valid[:, None]
        # (batch, 1, frames): averages as a batched product
        weights = (valid / num_valid.clamp_min(1)[:, None]).to(features.dtype)[:, None, :]
        # Relative to the first frame, so that a constant channel is exactly 0 and float32 sums lose nothing to a large
        # mean (MFCC 0 is near -500).
        centred = features - features[:, :1]
        mean = weights @ centred
        variance = (weights @ centred.square() - mean.square()).clamp_min(0.0)
        centred -= mean
        centred /= variance.sqrt().clamp_min(std_floor)
        return centred.masked_fill_(~valid[..., None], padding_value)

    def _margins(self, filters: _TorchFilterbanks) -> tuple[int, int]:
        """Zeros to keep before and after a batch's audio so that the STFT and the first decimator read it in place."""
        before = after = self.n_fft // 2
        decimator = filters.cqt_octaves[0].decimator
        if decimator is not None:
            before, after = max(before, decimator.overlap), max(after, decimator.block)
        return before, after


__all__ = ["TORCH_CPU_BATCH_SAMPLES", "TORCH_CUDA_BATCH_SIZE", "TorchFeatureBackend"]
