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

Two backends compute the same features: `"torch"` (the default), a batched implementation on CPU or CUDA
(`TorchFeatureBackend`, in the sibling module `feature_extraction_musicoder_torch`), and `"librosa"`, the reference it
matches to float32 round-off (one clip at a time, CPU).

`to_mono_waveform` is the one conversion of in-memory audio (arrays, tensors, lists; integer PCM; multi-channel) to a
mono float32 waveform, for this extractor and for `musicoder_hf.audio`.

This module and its torch backend use numpy, librosa, torch and transformers only, and import each other relatively:
`save_pretrained` copies both next to a checkpoint, so that `AutoFeatureExtractor.from_pretrained(...,
trust_remote_code=True)` works where `musicoder_hf` is not installed.
"""

import warnings

import librosa
import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy, TensorType, is_torch_tensor, logging

from .feature_extraction_musicoder_torch import TorchFeatureBackend


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

# `normalization` modes: per-clip CMVN (the paper), or fixed per-channel statistics of a training set (as AST, MAEST).
NORMALIZATIONS = ("clip", "dataset")

# What the errors about dataset statistics tell users to do.
STATISTICS_FIX = (
    "Compute them over un-normalised frames (extracted with do_normalize=False) of your training set with "
    "`musicoder_hf.data.features.feature_statistics(dataset)`, and pass its feature_mean and feature_std."
)


def _row_blocks(num_rows: int, block: int = 4096) -> list[slice]:
    """Slices of at most `block` rows covering `range(num_rows)`: normalisation runs in float64 block by block."""
    return [slice(first, min(first + block, num_rows)) for first in range(0, num_rows, block)] or [slice(0, 0)]


def to_mono_waveform(audio, where: str = "The audio") -> np.ndarray:
    """
    One clip held in memory -> a mono float32 waveform, checked.

    - A torch tensor is read on the CPU; a list or tuple holds float amplitudes as given.
    - Integer PCM is scaled to [-1, 1]: signed by its full scale (int16 / 32768), unsigned (e.g. uint8 WAV) as offset
      binary. Float audio is kept as is (expected in [-1, 1]).
    - A 2-D array is ONE multi-channel clip, averaged to mono. Its channels are the shorter axis, so both
      `(channels, samples)` (librosa, torch) and `(samples, channels)` (soundfile) work; more than `MAX_CHANNELS`
      channels is refused as a probable batch of clips stacked into one array.

    Args:
        audio (`np.ndarray`, `torch.Tensor` or `list[float]`):
            The clip: 1-D, or 2-D multi-channel.
        where (`str`, *optional*, defaults to `"The audio"`):
            What the error messages call the clip, e.g. `"Audio clip 3 of the batch"`.

    Returns:
        `np.ndarray` of shape `(num_samples,)`, float32 (the input itself when it already is one).

    Raises:
        `ValueError`: for another dtype (strings, int64, ...) or number of dimensions, an empty clip, NaN or infinite
        samples, or too many channels; the message says which and how to fix it.
    """
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
        raise ValueError(
            f"{where} has dtype {audio.dtype}; expected float samples in [-1, 1] or integer PCM (int8/int16/int32)."
        )

    if audio.ndim not in (1, 2):
        raise ValueError(
            f"{where} has shape {audio.shape}; expected a 1-D mono waveform or a 2-D multi-channel one. "
            "Pass a batch as a list of clips."
        )
    if audio.size == 0:
        raise ValueError(f"{where} is empty (no samples).")
    if not np.isfinite(audio).all():
        raise ValueError(f"{where} contains NaN or infinite samples; clean or drop it.")
    if audio.ndim == 2:
        channel_axis = int(np.argmin(audio.shape))
        if audio.shape[channel_axis] > MAX_CHANNELS:
            raise ValueError(
                f"{where} is a 2-D array of shape {audio.shape}, read as one multi-channel clip, but it would have "
                f"{audio.shape[channel_axis]} channels (at most {MAX_CHANNELS} are accepted). To process a batch of "
                "mono clips, pass a list of 1-D arrays."
            )
        audio = audio.mean(axis=channel_axis, dtype=np.float32)
    return audio


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

    Two backends compute this table. `backend="librosa"` calls librosa as written above, one clip at a time on the
    CPU: it is the reference. `backend="torch"` (the default, [`TorchFeatureBackend`]; 6 to 9 times faster on a CPU)
    computes the same features with
    torch on `device`, on zero-padded batches of clips: the STFT by `torch.fft.rfft`, librosa's own chroma, mel and DCT
    matrices, the same Savitzky-Golay delta, and librosa's multi-rate CQT with its wavelet bases and soxr's own
    decimation (its FIR and start-up transient, measured through `librosa.resample`; the FIR applied by FFT blocks).
    Its batches run one after another, each on torch's intra-op threads (`torch.set_num_threads`; on a CPU that other
    busy processes share, fewer threads spare them waits for busy cores); on CUDA, 64 clips per batch. For bulk
    extraction, `featurize_dataset(..., num_proc=N)` runs N processes of one thread each.

    The torch backend matches the reference to float32 round-off: after CMVN, on music without near-silent bins, within
    about 1e-5 for chroma, MFCC, delta and log-mel and 1e-3 for log-CQT. The known deviation is in near-silent bins, which hold each implementation's own
    round-off: log-CQT bins 90 dB or more below the clip's loudest (e.g. next to digital silence) get soxr's or torch's
    float32 round-off and differ by up to about 9 in `ln(10 * S + eps)` at digital silence next to sound; log-mel bands
    110 dB below the frame's loudest differ by up to about 0.01 (librosa's STFT is float64 inside). Digital silence
    away from sound is exactly `ln(log_eps)` in both. A classifier trained on features of one backend gives the same
    predictions on features of the other (`benchmarks/feature_parity.py`).

    Finally, if `do_normalize`, the frames are normalised per channel, as `normalization` says:

    - `"clip"` (the default, as in the paper): every clip gets CMVN (cepstral mean and variance normalisation): each
      channel is shifted and scaled to zero mean and unit variance over the clip's valid (non-padding) frames;
      constant channels (e.g. silence) become 0 rather than NaN (the standard deviation is floored at
      `CMVN_STD_FLOOR` = 1e-3). This erases each clip's spectral envelope and loudness.
    - `"dataset"`: every valid frame becomes `(x - feature_mean) / feature_std`, with fixed per-channel statistics of
      a training set (as AST and MAEST do), which keeps differences of envelope and loudness between clips. Compute
      them once with `musicoder_hf.data.features.feature_statistics` over frames extracted with `do_normalize=False`.

    Either way padding frames stay exactly `padding_value`, and a clip's valid frames do not depend on the padding
    or on the other clips of the batch.

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
            Whether to normalise the valid frames (as `normalization` says). `False` gives the raw frames, whatever
            `normalization` is.
        normalization (`str`, *optional*, defaults to `"clip"`):
            `"clip"`: per-clip CMVN (the paper). `"dataset"`: `(x - feature_mean) / feature_std` per channel, with
            the statistics below (see above).
        feature_mean (`list[float]`, *optional*):
            `normalization="dataset"` only (and then required): the per-channel mean of un-normalised frames of the
            training set, `feature_size` finite values (`feature_statistics(...)["feature_mean"]`).
        feature_std (`list[float]`, *optional*):
            `normalization="dataset"` only (and then required): the per-channel standard deviation of those frames,
            `feature_size` finite positive values (`feature_statistics(...)["feature_std"]`).
        return_attention_mask (`bool`, *optional*, defaults to `True`):
            Whether `__call__` returns an `attention_mask` by default (1 for real frames, 0 for padding). MusiCoder
            needs it for every padded batch.
        backend (`str`, *optional*, defaults to `"torch"`):
            `"torch"` (batched, CPU or CUDA; see above) or `"librosa"` (the reference).
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
        backend="torch",
        device="cpu",
        normalization="clip",
        feature_mean=None,
        feature_std=None,
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
        self.normalization = normalization
        # lists of Python floats, so that they are saved in preprocessor_config.json
        self.feature_mean = self._statistic_list("feature_mean", feature_mean)
        self.feature_std = self._statistic_list("feature_std", feature_std)
        self._validate_parameters()

    @staticmethod
    def _statistic_list(name: str, values) -> list[float] | None:
        """`feature_mean` / `feature_std` as given (array, tensor, list) -> a list of Python floats, or None."""
        if values is None:
            return None
        if is_torch_tensor(values):
            values = values.detach().cpu().double().numpy()
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must be a list of floats, got {values!r}. {STATISTICS_FIX}") from error
        if array.ndim != 1:
            raise ValueError(
                f"{name} must be a flat list of one float per channel, got an array of shape {array.shape}. "
                f"{STATISTICS_FIX}"
            )
        return [float(v) for v in array]

    def _validate_parameters(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}.")
        self._validate_normalization()
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

    def _validate_normalization(self):
        """`normalization` and its statistics (`feature_mean`, `feature_std`), with errors that say how to fix them."""
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}: \"clip\" for per-clip "
                "CMVN (the paper), \"dataset\" for fixed per-channel statistics (feature_mean, feature_std)."
            )
        statistics = {"feature_mean": self.feature_mean, "feature_std": self.feature_std}
        if self.normalization == "clip":
            given = [name for name, values in statistics.items() if values is not None]
            if given:
                raise ValueError(
                    f"{' and '.join(given)} given with normalization=\"clip\", which does not use them (per-clip "
                    "CMVN): pass normalization=\"dataset\" to normalise with them, or drop them for per-clip CMVN."
                )
            return
        for name, values in statistics.items():
            if values is None:
                raise ValueError(
                    f"normalization=\"dataset\" needs feature_mean and feature_std, but {name} is missing. "
                    f"{STATISTICS_FIX}"
                )
            if len(values) != self.feature_size:
                raise ValueError(
                    f"{name} has {len(values)} values, but feature_size is {self.feature_size} (one per channel). "
                    f"{STATISTICS_FIX}"
                )
            if not np.isfinite(values).all():
                raise ValueError(f"{name} contains NaN or infinite values. {STATISTICS_FIX}")
        std = np.asarray(self.feature_std)
        if (std <= 0).any():
            channels = np.flatnonzero(std <= 0).tolist()
            raise ValueError(
                f"feature_std must be positive, but channels {channels[:10]}{'...' if len(channels) > 10 else ''} "
                f"have feature_std <= 0 (a channel constant over the whole dataset has std 0; raise it to a small "
                f"floor such as {CMVN_STD_FLOOR}). {STATISTICS_FIX}"
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
    # torch backend (`TorchFeatureBackend`): the same computation on zero-padded batches, on CPU or CUDA

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

    def _torch_backend(self) -> TorchFeatureBackend:
        """The torch backend with this extractor's current settings (cheap: its tensors are cached per device)."""
        return TorchFeatureBackend(
            sampling_rate=self.sampling_rate, n_fft=self.n_fft, hop_length=self.hop_length, n_mels=self.n_mels,
            n_mfcc=self.n_mfcc, n_chroma=self.n_chroma, cqt_fmin=float(self.cqt_fmin),
            cqt_bins_per_octave=self.cqt_bins_per_octave, cqt_n_octaves=self.cqt_n_octaves, log_eps=self.log_eps,
        )  # fmt: skip

    def _torch_extract(
        self, waveforms: list[np.ndarray], normalize: bool, max_frames: int | None = None, device=None,
        batch_size: int | None = None,
    ) -> list[np.ndarray]:  # fmt: skip
        """
        Features of validated waveforms with the torch backend on `device` (or the configured one): a list of
        `(min(num_frames, max_frames), feature_size)` float32 arrays in input order, CMVN-normalised over exactly
        those frames if `normalize`. See `TorchFeatureBackend.extract`.
        """
        return self._torch_backend().extract(
            waveforms, self._torch_device(device), max_frames=max_frames, batch_size=batch_size,
            cmvn_std_floor=CMVN_STD_FLOOR if normalize else None,
        )  # fmt: skip

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
        # float64 so that a constant channel subtracts to exactly 0; by blocks of frames, so that a long track needs
        # no float64 copy of its features.
        features = np.asarray(features)
        valid = np.ones(len(features), dtype=bool) if attention_mask is None else np.asarray(attention_mask) > 0
        out = np.full(features.shape, padding_value, dtype=np.float32)
        count = int(valid.sum())
        if count:
            blocks = [(features[rows][valid[rows]].astype(np.float64), rows) for rows in _row_blocks(len(features))]
            mean = sum(block.sum(axis=0) for block, _ in blocks) / count
            variance = sum(np.square(block - mean).sum(axis=0) for block, _ in blocks) / count
            std = np.maximum(np.sqrt(variance), CMVN_STD_FLOOR)
            for rows in _row_blocks(len(features)):
                kept = valid[rows]
                out[rows][kept] = (features[rows][kept].astype(np.float64) - mean) / std
        return out

    @staticmethod
    def standardize(
        features: np.ndarray,
        feature_mean,
        feature_std,
        attention_mask: np.ndarray | None = None,
        padding_value: float = 0.0,
    ) -> np.ndarray:
        """
        Normalisation with fixed per-channel statistics (`normalization="dataset"`) over the valid frames.

        Args:
            features (`np.ndarray` of shape `(num_frames, feature_size)`):
                One clip of un-normalised frames, possibly padded.
            feature_mean, feature_std (`list[float]` or `np.ndarray` of shape `(feature_size,)`):
                Per-channel statistics of the training set (see `feature_statistics`).
            attention_mask (`np.ndarray` of shape `(num_frames,)`, *optional*):
                1 for valid frames, 0 for padding (either side). `None` means all frames are valid.
            padding_value (`float`, *optional*, defaults to 0.0):
                Written into the padding frames.

        Returns:
            `np.ndarray` (float32) of the same shape: valid frames are `(x - feature_mean) / feature_std` (computed in
            float64), padding frames equal `padding_value`.
        """
        features = np.asarray(features)
        valid = np.ones(len(features), dtype=bool) if attention_mask is None else np.asarray(attention_mask) > 0
        mean = np.asarray(feature_mean, dtype=np.float64)
        std = np.asarray(feature_std, dtype=np.float64)
        out = np.empty(features.shape, dtype=np.float32)
        for rows in _row_blocks(len(features)):  # no float64 copy of a long track's features
            out[rows] = np.where(valid[rows, None], (features[rows].astype(np.float64) - mean) / std, padding_value)
        return out

    def normalize(self, input_features: list[np.ndarray], attention_mask: list[np.ndarray] | None = None):
        """
        Normalise every clip of a (possibly padded) batch as `normalization` says: [`~MusiCoderFeatureExtractor.cmvn`]
        (`"clip"`) or [`~MusiCoderFeatureExtractor.standardize`] with `feature_mean` and `feature_std` (`"dataset"`).
        """
        if attention_mask is None:
            attention_mask = [None] * len(input_features)
        if self.normalization == "dataset":
            return [
                self.standardize(x, self.feature_mean, self.feature_std, m, self.padding_value)
                for x, m in zip(input_features, attention_mask)
            ]
        return [self.cmvn(x, m, self.padding_value) for x, m in zip(input_features, attention_mask)]

    def _keep_every(
        self,
        frame_stride: int,
        input_features: list[np.ndarray],
        attention_mask: list[np.ndarray],
        padding: bool,
        pad_to_multiple_of: int | None,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Inference patchout: the valid frames 0, N, 2N, ... of each clip, their indices on the clip as positions,
        padded again (when `padding`) on `self.padding_side`."""
        kept, positions = [], []
        for frames, mask in zip(input_features, attention_mask):
            valid = np.flatnonzero(mask)
            kept.append(frames[valid[::frame_stride]])
            positions.append(np.arange(0, len(valid), frame_stride, dtype=np.int64))
        if not padding:
            return kept, [np.ones(len(frames), dtype=np.int32) for frames in kept], positions
        longest = max(len(frames) for frames in kept)
        if pad_to_multiple_of:
            longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
        padded_features, padded_masks, padded_positions = [], [], []
        for frames, clip_positions in zip(kept, positions):
            rows = slice(0, len(frames)) if self.padding_side == "right" else slice(longest - len(frames), longest)
            features = np.full((longest, frames.shape[1]), self.padding_value, dtype=np.float32)
            mask = np.zeros(longest, dtype=np.int32)
            position_ids = np.zeros(longest, dtype=np.int64)
            features[rows], mask[rows], position_ids[rows] = frames, 1, clip_positions
            padded_features.append(features)
            padded_masks.append(mask)
            padded_positions.append(position_ids)
        return padded_features, padded_masks, padded_positions

    def _to_waveform(self, audio, index: int | None) -> np.ndarray:
        """One input clip -> validated mono float32 waveform (see `to_mono_waveform`), at least `n_fft` samples."""
        where = f"Audio clip {index} of the batch" if index is not None else "The audio"
        waveform = to_mono_waveform(audio, where)
        if waveform.shape[0] < self.min_num_samples:
            raise ValueError(
                f"{where} is too short: {waveform.shape[0]} samples, but at least n_fft={self.min_num_samples} "
                f"samples ({self.min_num_samples / self.sampling_rate:.3f} s at {self.sampling_rate} Hz) are needed "
                "for one analysis window. Pad it (e.g. with zeros) or drop it."
            )
        return np.ascontiguousarray(waveform)

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
        frame_stride: int = 1,
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
                model takes at most 1600 frames; chunk longer audio instead). With truncation, per-clip CMVN uses the
                kept frames only.
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
                in 2**21 padded samples); lower it to bound memory. It does not change the features.
            frame_stride (`int`, *optional*, defaults to 1):
                Inference patchout (MAEST, section 4.5): keep one frame of every `frame_stride` of each clip (its
                frames 0, N, 2N, ..., after normalisation over all of them) and return their indices as
                `position_ids`, which the model uses as their positions. The model then reads N times fewer frames
                (about N times faster) at a small cost in accuracy (see docs/inference.md#patchout). 1 keeps every
                frame and returns no `position_ids`.

        Returns:
            [`BatchFeature`] with `input_features` of shape `(batch_size, num_frames, feature_size)` (float32) and,
            if requested, `attention_mask` of shape `(batch_size, num_frames)` (1 for real frames, 0 for padding);
            with `frame_stride > 1`, also `position_ids` of shape `(batch_size, num_frames)` (each kept frame's index
            on its clip, 0 on padding).
        """
        if not isinstance(frame_stride, (int, np.integer)) or isinstance(frame_stride, bool) or frame_stride < 1:
            raise ValueError(f"frame_stride must be a positive integer (1 keeps every frame), got {frame_stride!r}.")
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
        # The torch backend applies per-clip CMVN on its device, before padding, over the frames that truncation keeps.
        # Dataset statistics are applied after padding, in `normalize`, as for the librosa backend.
        normalize_on_device = self.do_normalize and self.backend == "torch" and self.normalization == "clip"
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
        if frame_stride > 1:
            keep_padding = padding not in (False, "do_not_pad", PaddingStrategy.DO_NOT_PAD)
            input_features, attention_mask, outputs["position_ids"] = self._keep_every(
                frame_stride, input_features, attention_mask, keep_padding, pad_to_multiple_of
            )
            outputs["input_features"] = input_features
        return_attention_mask = (
            return_attention_mask if return_attention_mask is not None else self.return_attention_mask
        )
        if return_attention_mask:
            outputs["attention_mask"] = attention_mask
        return BatchFeature(outputs, tensor_type=return_tensors)


__all__ = ["MusiCoderFeatureExtractor", "to_mono_waveform"]
