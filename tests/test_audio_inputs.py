"""Every kind of audio a user may hand the pipeline or the embedder, and what they get (the README's input table)."""

import shutil

import librosa
import numpy as np
import pytest
import soundfile
import torch
from test_hub_integration import LABELS, SAMPLING_RATE, direct_scores, music_like_clip, save_classifier
from transformers import pipeline

from musicoder_hf.audio import load_audio
from musicoder_hf.feature_extraction_musicoder import to_mono_waveform

requires_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg program is not installed")


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifier")
    model, feature_extractor = save_classifier(folder)
    return folder, model, feature_extractor


@pytest.fixture(scope="module")
def classifier(classifier_folder):
    return pipeline("audio-classification", model=str(classifier_folder[0]))


def scores(result):
    return {r["label"]: r["score"] for r in result}


# ---------------------------------------------------------------- inputs that work


def test_stereo_48k_file_is_downmixed_and_resampled(tmp_path, classifier, classifier_folder):
    _, model, feature_extractor = classifier_folder
    clip = music_like_clip(seconds=3.0)
    at_48k = librosa.resample(clip, orig_sr=SAMPLING_RATE, target_sr=48000)
    stereo = np.stack([at_48k, 0.5 * at_48k], axis=1)
    path = tmp_path / "stereo48k.flac"
    soundfile.write(path, stereo, 48000)

    waveform = load_audio(path, SAMPLING_RATE)
    expected_waveform = librosa.resample(
        stereo.mean(axis=1).astype(np.float32), orig_sr=48000, target_sr=SAMPLING_RATE, res_type="soxr_hq"
    )
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    np.testing.assert_allclose(waveform, expected_waveform, atol=1e-4)  # flac is 16-bit

    expected = direct_scores(model, feature_extractor, waveform, lambda logits: logits.softmax(-1))
    for label, score in scores(classifier(str(path), top_k=None)).items():
        assert score == pytest.approx(expected[label], abs=1e-5)


def test_dict_at_another_rate_is_resampled_with_librosa(classifier, classifier_folder):
    _, model, feature_extractor = classifier_folder
    clip = music_like_clip(seconds=3.0)
    at_22k = librosa.resample(clip, orig_sr=SAMPLING_RATE, target_sr=22050)
    back = librosa.resample(at_22k, orig_sr=22050, target_sr=SAMPLING_RATE, res_type="soxr_hq")
    expected = direct_scores(model, feature_extractor, back, lambda logits: logits.softmax(-1))
    result = scores(classifier({"array": at_22k, "sampling_rate": 22050}, top_k=None))
    assert result == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_stereo_arrays_are_averaged(layout, classifier):
    clip = music_like_clip(seconds=2.0)
    stereo = np.stack([clip, clip])
    stereo = stereo if layout == "channels_first" else stereo.T
    assert scores(classifier(stereo, top_k=None)) == pytest.approx(scores(classifier(clip, top_k=None)), abs=1e-6)


@pytest.mark.parametrize("dtype", ["int16", "int32", "float64", "torch"])
def test_integer_pcm_float64_and_tensors(dtype, classifier):
    clip = music_like_clip(seconds=2.0)
    if dtype == "torch":
        converted = torch.from_numpy(clip)
    elif dtype.startswith("int"):
        full_scale = 2 ** (np.iinfo(dtype).bits - 1)
        clip = np.round(clip * (full_scale - 1)).astype(dtype).astype(np.float64) / full_scale
        converted = np.round(clip * full_scale).astype(dtype)
    else:
        converted = clip.astype(np.float64)
    assert load_audio(converted, SAMPLING_RATE) == pytest.approx(clip.astype(np.float32), abs=1e-7)
    assert scores(classifier(converted, top_k=None)) == pytest.approx(
        scores(classifier(clip.astype(np.float32), top_k=None)), abs=1e-6
    )


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("kind", ["int16", "uint8", "float64", "int16_tensor", "bfloat16_tensor"])
def test_load_audio_reads_arrays_as_the_feature_extractor_does(kind, layout, classifier_folder):
    # One conversion (`to_mono_waveform`) for both: integer PCM (tensors included) scaled to [-1, 1], channels on the
    # shorter axis averaged.
    _, _, feature_extractor = classifier_folder
    clip = music_like_clip(seconds=1.0)
    stereo = np.stack([clip, 0.5 * clip])
    if kind.startswith("int16"):
        audio = np.round(stereo * 32767).astype(np.int16)
    elif kind == "uint8":
        audio = np.round(stereo * 127 + 128).astype(np.uint8)
    else:
        audio = stereo.astype(np.float64)
    audio = audio if layout == "channels_first" else audio.T
    if kind == "int16_tensor":
        audio = torch.from_numpy(np.ascontiguousarray(audio))
    elif kind == "bfloat16_tensor":
        audio = torch.from_numpy(np.ascontiguousarray(audio)).to(torch.bfloat16)
    waveform = load_audio(audio, SAMPLING_RATE)
    assert waveform.dtype == np.float32 and waveform.shape == clip.shape
    np.testing.assert_array_equal(waveform, to_mono_waveform(audio))
    np.testing.assert_allclose(waveform, 0.75 * clip, atol=2e-2 if kind in ("uint8", "bfloat16_tensor") else 1e-4)
    np.testing.assert_array_equal(
        feature_extractor(audio, sampling_rate=SAMPLING_RATE)["input_features"][0],
        feature_extractor(waveform, sampling_rate=SAMPLING_RATE)["input_features"][0],
    )


def test_silence_gives_finite_features_and_a_prediction(classifier, classifier_folder):
    _, _, feature_extractor = classifier_folder
    silence = np.zeros(SAMPLING_RATE * 2, dtype=np.float32)
    features = feature_extractor(silence, sampling_rate=SAMPLING_RATE)["input_features"][0]
    assert np.isfinite(features).all()
    result = classifier(silence, top_k=None)
    assert sorted(r["label"] for r in result) == sorted(LABELS)
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)


@requires_ffmpeg
def test_formats_libsndfile_cannot_read_go_through_ffmpeg(tmp_path):
    import subprocess

    clip = music_like_clip(seconds=2.0)
    wav = tmp_path / "clip.wav"
    soundfile.write(wav, clip, SAMPLING_RATE)
    m4a = tmp_path / "clip.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    waveform = load_audio(m4a, SAMPLING_RATE)
    # AAC adds encoder delay/padding; the decoded audio is the same music, about the same length.
    assert abs(len(waveform) - len(clip)) < 0.1 * SAMPLING_RATE
    assert np.abs(waveform).max() == pytest.approx(np.abs(clip).max(), rel=0.2)


def test_datasets_audio_values(tmp_path):
    from datasets import Audio, Dataset

    clip = music_like_clip(seconds=1.0)
    path = tmp_path / "clip.wav"
    soundfile.write(path, clip, 22050)  # stored at 22.05 kHz: the value must be resampled
    dataset = Dataset.from_dict({"audio": [str(path)]}).cast_column("audio", Audio())
    decoded = load_audio(dataset[0]["audio"], SAMPLING_RATE)
    expected = librosa.resample(
        soundfile.read(path, dtype="float32")[0], orig_sr=22050, target_sr=SAMPLING_RATE, res_type="soxr_hq"
    )
    np.testing.assert_allclose(decoded, expected, atol=1e-4)


# ---------------------------------------------------------------- inputs that are refused, with the reason


def test_missing_file_names_it(classifier, tmp_path):
    missing = tmp_path / "nowhere.wav"
    with pytest.raises(FileNotFoundError, match="nowhere.wav"):
        classifier(str(missing))


@pytest.mark.parametrize(
    "content",
    [b"this is a text file, not audio\n" * 50, b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40],
    ids=["text", "truncated_wav"],
)
def test_corrupt_or_non_audio_file_names_it(content, classifier, tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"Could not decode audio file .*broken\.wav.*corrupt or not an audio file"):
        classifier(str(path))


def test_empty_file_names_it(classifier, tmp_path):
    path = tmp_path / "empty.flac"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.flac' is empty \(0 bytes\)"):
        classifier(str(path))


def test_directory_instead_of_file(classifier, tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        classifier(str(tmp_path))


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros(0, dtype=np.float32), "no samples"),
        (np.full(SAMPLING_RATE, np.nan, dtype=np.float32), "NaN or infinite"),
        (np.concatenate([np.zeros(SAMPLING_RATE, np.float32), [np.inf]]).astype(np.float32), "NaN or infinite"),
        (np.zeros(1000, dtype=np.float32), "too short: 1000 samples"),
        (np.zeros((16, SAMPLING_RATE), dtype=np.float32), "16 channels"),
        (np.array(["a", "b"]), "dtype <U1"),
        (np.zeros(SAMPLING_RATE, dtype=np.int64), "dtype int64, which is not a PCM format"),
        (np.zeros((2, 3, SAMPLING_RATE), dtype=np.float32), r"shape \(2, 3, 44100\)"),
        ({"array": np.zeros(SAMPLING_RATE)}, "'sampling_rate'"),
    ],
    ids=[
        "empty",
        "nan",
        "inf",
        "shorter_than_one_window",
        "batch_stacked_as_channels",
        "strings",
        "int64_is_not_pcm",
        "three_dimensions",
        "dict_without_rate",
    ],
)
def test_bad_arrays_raise_clear_errors(audio, message, classifier):
    with pytest.raises(ValueError, match=message):
        classifier(audio)


def test_feature_extractor_refuses_a_wrong_rate_with_the_fix(classifier_folder):
    _, _, feature_extractor = classifier_folder
    with pytest.raises(ValueError, match=r"48000 Hz.*expects 44100 Hz.*librosa.resample"):
        feature_extractor(np.zeros(48000, np.float32), sampling_rate=48000)

