"""Audio in, for every caller-facing API (pipelines, embeddings, HEAR): decode, downmix and resample.

`load_audio` turns anything a user is likely to hold (a path, bytes, an array at some sampling rate, a `datasets` audio
value) into one mono float32 waveform at the model's rate, with errors that name the file and the fix.
Long audio needs nothing here: the feature extractor takes a whole track, and the model reads it in windows itself
(`modeling_musicoder.window_spans`).
"""

import io
import itertools
import os
import shutil
import subprocess

import librosa
import numpy as np
import soundfile
import soxr

from .feature_extraction_musicoder import to_mono_waveform


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _decode_with_ffmpeg(payload: bytes, sampling_rate: int) -> np.ndarray:
    """Decode any container/codec FFmpeg knows (m4a, aac, opus, video, ...) to mono float32 at `sampling_rate`."""
    command = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-i",
        "pipe:0",
        "-ac",
        "1",
        "-ar",
        str(sampling_rate),
        "-f",
        "f32le",
        "pipe:1",
    ]
    result = subprocess.run(command, input=payload, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        reason = result.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(reason[-1] if reason else "FFmpeg produced no audio")
    return np.frombuffer(result.stdout, dtype=np.float32)


def _read_with_libsndfile(source, sampling_rate: int) -> np.ndarray:
    """Decode block by block, downmixing and resampling (soxr HQ, as `librosa.resample(res_type="soxr_hq")`) each
    block, into one preallocated array: peak memory is the mono waveform at `sampling_rate` plus one block, whatever
    the file's rate and channel count."""

    def opened():
        return io.BytesIO(source) if isinstance(source, bytes) else source

    info = soundfile.info(opened())
    resampler = None
    if info.samplerate != sampling_rate:
        resampler = soxr.ResampleStream(info.samplerate, sampling_rate, 1, dtype="float32", quality="HQ")
    waveform = np.empty(int(np.ceil(max(info.frames, 0) * sampling_rate / info.samplerate)) + 64, dtype=np.float32)
    filled = 0
    blocks = soundfile.blocks(opened(), blocksize=1 << 18, dtype="float32", always_2d=True)
    for block, last in itertools.chain(((b, False) for b in blocks), [(np.zeros((0, 1), np.float32), True)]):
        mono = block.mean(axis=1, dtype=np.float32)
        if resampler is not None:
            mono = resampler.resample_chunk(mono, last=last)
        if filled + len(mono) > len(waveform):  # the header's frame count was short (some mp3s): grow
            waveform = np.resize(waveform, 2 * (filled + len(mono)))
        waveform[filled : filled + len(mono)] = mono
        filled += len(mono)
    return waveform[:filled]


def _decode(source, name: str, sampling_rate: int) -> np.ndarray:
    """A path or encoded bytes -> mono float32 at `sampling_rate`: libsndfile (wav/flac/ogg/mp3/aiff), else FFmpeg."""
    try:
        return _read_with_libsndfile(source, sampling_rate)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        libsndfile_reason = getattr(error, "error_string", None) or str(error)
    if shutil.which("ffmpeg") is None:
        raise ValueError(
            f"Could not decode {name}: {libsndfile_reason}. It is not a format libsndfile reads (wav, flac, ogg, mp3, "
            "aiff, ...) and the `ffmpeg` program, needed for other formats, is not installed; the file may also be "
            "corrupt or not audio at all."
        )
    if not isinstance(source, bytes):
        with open(source, "rb") as file:
            source = file.read()
    try:
        return _decode_with_ffmpeg(source, sampling_rate)
    except ValueError as error:
        raise ValueError(
            f"Could not decode {name}: it is corrupt or not an audio file (libsndfile: {libsndfile_reason}; FFmpeg: "
            f"{error})."
        ) from None


def load_audio(source, sampling_rate: int, source_sampling_rate: int | None = None) -> np.ndarray:
    """Any audio a user holds -> one mono float32 waveform at `sampling_rate`.

    Args:
        source:
            - a path (`str` or `os.PathLike`) to an audio file: wav/flac/ogg/mp3/aiff through libsndfile, any other
              format FFmpeg decodes through the `ffmpeg` program;
            - `bytes` of an encoded audio file;
            - a numpy array or torch tensor: 1-D mono, or 2-D multi-channel in either `(channels, samples)` or
              `(samples, channels)` layout (channels are the shorter axis); float in [-1, 1] or integer PCM (int16 is
              divided by 32768), read as the feature extractor reads it (`to_mono_waveform`);
            - a dict `{"array" or "raw": waveform, "sampling_rate": int}` (the `datasets` audio format; a `"path"` key
              is ignored when an array is present, and read when it is not);
            - a `torchcodec` `AudioDecoder` (what `datasets` audio columns yield).
        sampling_rate: the rate the model expects (`feature_extractor.sampling_rate`).
        source_sampling_rate: the rate of an array/tensor `source`; `None` means it is already at `sampling_rate`.

    Multi-channel audio is averaged to mono; another rate is resampled with librosa (soxr, high quality). The result is
    checked: empty audio and NaN/inf samples raise a `ValueError` naming the source. Silence is valid audio.
    """
    name = "the audio"
    if isinstance(source, (str, os.PathLike)):
        name = f"audio file {os.fspath(source)!r}"
        if not os.path.exists(source):
            raise FileNotFoundError(f"Audio file not found: {os.fspath(source)!r}.")
        if os.path.isdir(source):
            raise IsADirectoryError(f"Expected an audio file but {os.fspath(source)!r} is a directory.")
        if os.path.getsize(source) == 0:
            raise ValueError(f"The {name} is empty (0 bytes).")
        waveform, source_sampling_rate = _decode(os.fspath(source), name, sampling_rate), sampling_rate
    elif isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ValueError("The audio bytes are empty (0 bytes).")
        waveform, source_sampling_rate = _decode(bytes(source), name, sampling_rate), sampling_rate
    elif isinstance(source, dict):
        array = source.get("array", source.get("raw"))
        if array is None and source.get("path"):
            return load_audio(source["path"], sampling_rate)
        if array is None or "sampling_rate" not in source:
            raise ValueError(
                "An audio dict needs the waveform under 'array' (or 'raw') and its rate under 'sampling_rate', as "
                f"`datasets` gives it; got keys {sorted(source)}."
            )
        waveform, source_sampling_rate = to_mono_waveform(array, _sentence(name)), int(source["sampling_rate"])
    elif type(source).__name__ == "AudioDecoder":  # torchcodec, as yielded by `datasets` Audio columns
        samples = source.get_all_samples()
        waveform, source_sampling_rate = to_mono_waveform(samples.data, _sentence(name)), int(samples.sample_rate)
    elif isinstance(source, (np.ndarray, list, tuple)) or hasattr(source, "detach"):  # numpy, lists, torch tensors
        waveform = to_mono_waveform(source, _sentence(name))
    else:
        try:
            waveform = to_mono_waveform(source, _sentence(name))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Unsupported audio input of type {type(source).__name__}: pass a file path, bytes, a numpy array or "
                f"torch tensor, or a dict with 'array' and 'sampling_rate' ({error})."
            ) from None

    if waveform.size == 0:  # decoded files are checked here; arrays already were
        raise ValueError(f"{_sentence(name)} has no samples (empty audio).")
    if not np.isfinite(waveform).all():
        raise ValueError(f"{_sentence(name)} contains NaN or infinite samples; clean or drop it.")
    source_sampling_rate = source_sampling_rate or sampling_rate
    if source_sampling_rate != sampling_rate:
        waveform = librosa.resample(
            waveform, orig_sr=source_sampling_rate, target_sr=sampling_rate, res_type="soxr_hq"
        )
    return np.ascontiguousarray(waveform, dtype=np.float32)


# The error for the windowing arguments of earlier versions: the model now windows its input itself.
NO_WINDOW_ARGUMENTS = (
    "window_frames and hop_frames are not arguments any more: a MusiCoder model reads inputs longer than its window "
    "(config.max_position_embeddings frames) in windows itself, end to end, and pools over every frame, so every "
    "way of calling it gives the same result (see docs/long-audio.md)."
)


def refuse_window_arguments(window_frames=None, hop_frames=None) -> None:
    """Raise a `ValueError` that explains the change if a caller still passes `window_frames` or `hop_frames`."""
    if window_frames is not None or hop_frames is not None:
        raise ValueError(NO_WINDOW_ARGUMENTS)


__all__ = ["load_audio", "refuse_window_arguments"]
