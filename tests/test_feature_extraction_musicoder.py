"""Tests of `MusiCoderFeatureExtractor`: transformers' conformance mixin, plus checks against direct librosa calls."""

import ast
import json
import os
import random
import tempfile
import unittest
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch
from transformers.testing_utils import CaptureLogger
from transformers_tests.test_sequence_feature_extraction_common import SequenceFeatureExtractionTestMixin

from musicoder_hf import MusiCoderConfig
from musicoder_hf import feature_extraction_musicoder as fe_module
from musicoder_hf.feature_extraction_musicoder import MusiCoderFeatureExtractor


SR = 44100
global_rng = random.Random()


def floats_list(shape, scale=1.0, rng=None):
    """Random floats as a nested list (the format transformers' own feature-extraction tests use)."""
    rng = rng or global_rng
    return [[rng.random() * scale for _ in range(shape[1])] for _ in range(shape[0])]


def music_signal(seconds=3.0, seed=0, sr=SR):
    """A few seconds of piano-like chords (C, Am, F, G) with decaying harmonics, a little noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    chords = [[60, 64, 67], [57, 60, 64], [53, 57, 60], [55, 59, 62]]  # MIDI notes
    n = int(seconds * sr)
    t = np.arange(n) / sr
    y = np.zeros(n)
    chord_len = n // len(chords)
    for i, chord in enumerate(chords):
        seg = slice(i * chord_len, (i + 1) * chord_len if i < len(chords) - 1 else n)
        local_t = t[seg] - t[seg][0]
        envelope = np.exp(-2.5 * local_t) * np.minimum(1.0, local_t / 0.01)  # 10 ms attack, exponential decay
        for note in chord:
            f0 = 440.0 * 2 ** ((note - 69) / 12)
            for h in range(1, 6):
                y[seg] += envelope * 0.6**h * np.sin(2 * np.pi * h * f0 * local_t + rng.uniform(0, 2 * np.pi))
    y += 0.01 * rng.standard_normal(n)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def reference_features(y):
    """Direct librosa computation of the paper's features (written independently of the extractor; literal constants)."""
    power = np.abs(librosa.stft(y, n_fft=2048, hop_length=1024, window="hamming", center=True)) ** 2
    chroma = librosa.feature.chroma_stft(S=power, sr=SR, tuning=0.0, n_chroma=12)
    mel = librosa.feature.melspectrogram(S=power, sr=SR, n_mels=128)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=20)
    mfcc_delta = librosa.feature.delta(mfcc)  # librosa defaults: width 9, mode "interp"
    log_mel = np.log(10 * mel + 1e-10)
    cqt = np.abs(
        librosa.cqt(y, sr=SR, hop_length=1024, fmin=librosa.note_to_hz("C1"), n_bins=144, bins_per_octave=24,
                    window="hamming")
    )
    log_cqt = np.log(10 * cqt + 1e-10)
    blocks = {"chroma": chroma, "mfcc": mfcc, "mfcc_delta": mfcc_delta, "log_mel": log_mel, "log_cqt": log_cqt}
    return {name: block.T for name, block in blocks.items()}


class MusiCoderFeatureExtractionTester:
    """Small, non-default configuration (22.05 kHz, 40 mels, 13 MFCCs, 12 x 7 CQT bins) so every parameter is used."""

    def __init__(self, parent, batch_size=7, min_seq_length=40, max_seq_length=200):
        self.parent = parent
        self.batch_size = batch_size
        self.min_seq_length = min_seq_length
        self.max_seq_length = max_seq_length
        self.seq_length_diff = (self.max_seq_length - self.min_seq_length) // (self.batch_size - 1)
        self.sampling_rate = 22050
        self.n_fft = 1024
        self.hop_length = 512
        self.n_mels = 40
        self.n_mfcc = 13
        self.n_chroma = 12
        self.cqt_bins_per_octave = 12
        self.cqt_n_octaves = 7
        n_cqt_bins = self.cqt_bins_per_octave * self.cqt_n_octaves
        self.feature_size = self.n_chroma + 2 * self.n_mfcc + self.n_mels + n_cqt_bins
        self.padding_value = 0.0
        self.do_normalize = True
        self.return_attention_mask = True

    def prepare_feat_extract_dict(self):
        return {
            "backend": "librosa",
            "feature_size": self.feature_size,
            "sampling_rate": self.sampling_rate,
            "padding_value": self.padding_value,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "n_mels": self.n_mels,
            "n_mfcc": self.n_mfcc,
            "n_chroma": self.n_chroma,
            "cqt_bins_per_octave": self.cqt_bins_per_octave,
            "cqt_n_octaves": self.cqt_n_octaves,
            "do_normalize": self.do_normalize,
            "return_attention_mask": self.return_attention_mask,
        }

    def prepare_inputs_for_common(self, equal_length=False, numpify=False):
        # The mixin pads *features* (frames x feature_size), as for Speech2Text and Whisper, not raw audio.
        if equal_length:
            inputs = [floats_list((self.max_seq_length, self.feature_size)) for _ in range(self.batch_size)]
        else:  # increasing lengths
            inputs = [
                floats_list((length, self.feature_size))
                for length in range(self.min_seq_length, self.max_seq_length, self.seq_length_diff)
            ]
        if numpify:
            inputs = [np.asarray(x) for x in inputs]
        return inputs

    def prepare_audio_inputs(self, lengths=(3000, 4500, 6000)):
        """Raw audio clips of a few thousand samples (increasing lengths)."""
        rng = np.random.default_rng(1)
        return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


class MusiCoderFeatureExtractionTest(SequenceFeatureExtractionTestMixin, unittest.TestCase):
    feature_extraction_class = MusiCoderFeatureExtractor

    def setUp(self):
        self.feat_extract_tester = MusiCoderFeatureExtractionTester(self)

    def test_call(self):
        feature_extractor = self.feature_extraction_class(**self.feat_extract_dict)
        sr = self.feat_extract_tester.sampling_rate
        speech_inputs = self.feat_extract_tester.prepare_audio_inputs()
        np_speech_inputs = [np.asarray(x) for x in speech_inputs]
        list_speech_inputs = [x.tolist() for x in speech_inputs]

        # single clip: array and list give the same
        encoded_np = feature_extractor(np_speech_inputs[0], sampling_rate=sr, return_tensors="np").input_features
        encoded_list = feature_extractor(list_speech_inputs[0], sampling_rate=sr, return_tensors="np").input_features
        expected_frames = 1 + len(speech_inputs[0]) // self.feat_extract_tester.hop_length
        self.assertEqual(encoded_np.shape, (1, expected_frames, self.feat_extract_tester.feature_size))
        self.assertTrue(np.allclose(encoded_np, encoded_list, atol=1e-5))

        # batch: arrays and lists give the same, and the same as one by one for the unpadded frames
        encoded_np = feature_extractor(np_speech_inputs, sampling_rate=sr, return_tensors="np")
        encoded_list = feature_extractor(list_speech_inputs, sampling_rate=sr, return_tensors="np")
        self.assertTrue(np.allclose(encoded_np.input_features, encoded_list.input_features, atol=1e-5))
        for i, clip in enumerate(np_speech_inputs):
            alone = feature_extractor(clip, sampling_rate=sr, return_tensors="np").input_features[0]
            n = int(encoded_np.attention_mask[i].sum())
            self.assertEqual(n, alone.shape[0])
            self.assertTrue(np.allclose(encoded_np.input_features[i, :n], alone, atol=1e-5))

    def test_feature_layout_tiles_feature_size(self):
        feature_extractor = self.feature_extraction_class(**self.feat_extract_dict)
        layout = feature_extractor.feature_layout
        self.assertEqual(list(layout), ["chroma", "mfcc", "mfcc_delta", "log_mel", "log_cqt"])
        self.assertEqual(layout["log_mel"], [12 + 2 * 13, 12 + 2 * 13 + 40])
        self.assertEqual(layout["log_cqt"][1], self.feat_extract_tester.feature_size)
        with self.assertRaises(AttributeError):  # read-only: derived from the sizes, never saved separately
            feature_extractor.feature_layout = {}


# ---------------------------------------------------------------------------------------------------------------------
# Real behaviour with the default (paper) configuration


@pytest.fixture(scope="module")
def fe():
    return MusiCoderFeatureExtractor(backend="librosa")  # the reference (the torch backend: test_feature_extraction_torch)


@pytest.fixture(scope="module")
def music():
    return music_signal(seconds=3.0, seed=0)


def test_defaults_match_spec_and_config(fe):
    assert fe.feature_size == 324 and fe.sampling_rate == SR and fe.n_fft == 2048 and fe.hop_length == 1024
    assert fe.cqt_fmin == pytest.approx(librosa.note_to_hz("C1"), rel=1e-12)
    assert fe.feature_layout == MusiCoderConfig().feature_layout
    assert fe.model_input_names == ["input_features", "attention_mask"]


def test_raw_blocks_match_librosa_reference(fe, music):
    ours = fe._extract_frames(music)
    ref = reference_features(music)
    assert ours.dtype == np.float32
    assert ours.shape == (1 + len(music) // 1024, 324)
    for name, (start, stop) in fe.feature_layout.items():
        np.testing.assert_allclose(ours[:, start:stop], ref[name], atol=1e-4, rtol=1e-6, err_msg=name)


def test_normalized_features_match_librosa_reference_with_cmvn(fe, music):
    ours = fe(music, sampling_rate=SR, return_tensors="np")["input_features"][0]
    ref = np.concatenate([block for block in reference_features(music).values()], axis=1).astype(np.float64)
    std = ref.std(axis=0)
    assert std.min() > fe_module.CMVN_STD_FLOOR  # the floor does not touch a real music clip: this is plain CMVN
    expected = (ref - ref.mean(axis=0)) / std
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_frame_count_and_dtype(fe):
    y = music_signal(seconds=30.0, seed=1)
    out = fe(y, sampling_rate=SR, return_tensors="np")
    assert out["input_features"].shape == (1, 1292, 324)
    assert out["input_features"].dtype == np.float32
    assert out["attention_mask"].shape == (1, 1292) and out["attention_mask"].all()
    # shortest clip (one window) and clips around hop boundaries: 1 + n // hop frames (centred frames)
    for n in (2048, 2049, 3071, 3072, 10000):
        frames = fe._extract_frames(np.zeros(n, dtype=np.float32) + 0.01 * np.sin(np.arange(n, dtype=np.float32)))
        assert frames.shape == (fe.num_frames(n), 324) == (1 + n // 1024, 324)


def test_short_clip_delta_uses_smaller_window(fe):
    # < 9 frames: librosa's default delta width 9 would fail; a clip of >= 9 frames must be the reference exactly
    short = music_signal(seconds=0.1, seed=2)  # 4410 samples -> 5 frames
    frames = fe._extract_frames(short)
    start, stop = fe.feature_layout["mfcc_delta"]
    mfcc = frames[:, slice(*fe.feature_layout["mfcc"])].T
    np.testing.assert_allclose(frames[:, start:stop].T, librosa.feature.delta(mfcc, width=5), atol=1e-4)
    assert np.isfinite(frames).all()


def test_cmvn_statistics_padding_and_mask(fe, music):
    short = music[: 44100]  # 1 s -> 44 frames, batched with 3 s -> 130 frames
    out = fe([short, music], sampling_rate=SR, return_tensors="np")
    x, mask = out["input_features"], out["attention_mask"]
    assert x.shape == (2, 130, 324)
    assert mask[0].tolist() == [1] * 44 + [0] * 86 and mask[1].all()
    for i, n in enumerate((44, 130)):
        valid = x[i, :n].astype(np.float64)
        np.testing.assert_allclose(valid.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(valid.std(axis=0), 1.0, atol=1e-3)
    assert (x[0, 44:] == 0.0).all()  # padding exactly padding_value, not normalised


def test_padding_invariance(fe, music):
    short = music[: 3 * 44100 // 2]
    alone = fe(short, sampling_rate=SR, return_tensors="np")["input_features"][0]
    batched = fe([short, music], sampling_rate=SR, return_tensors="np")
    n = int(batched["attention_mask"][0].sum())
    assert n == alone.shape[0]
    np.testing.assert_array_equal(batched["input_features"][0, :n], alone)
    # padding on the left and to a multiple: CMVN still only sees the valid frames
    left = MusiCoderFeatureExtractor(padding_side="left", backend="librosa")
    out = left([short, music], sampling_rate=SR, pad_to_multiple_of=64, return_tensors="np")
    assert out["input_features"].shape[1] == 192
    np.testing.assert_array_equal(out["input_features"][0, -n:], alone)
    assert (out["input_features"][0, :-n] == 0.0).all() and out["attention_mask"][0, :-n].sum() == 0


def test_no_silent_truncation(fe, music):
    out = fe([music], sampling_rate=SR, padding="max_length", max_length=10)
    assert out["input_features"][0].shape == (130, 324)  # max_length shorter than the clip does not cut it
    cut = fe([music], sampling_rate=SR, padding="max_length", max_length=10, truncation=True, return_tensors="np")
    assert cut["input_features"].shape == (1, 10, 324)
    np.testing.assert_allclose(cut["input_features"][0].mean(axis=0), 0.0, atol=1e-4)  # CMVN over the kept frames


def test_unpadded_batch_and_no_mask(fe, music):
    out = fe([music[:5000], music], sampling_rate=SR, padding=False, return_attention_mask=False)
    assert [x.shape for x in out["input_features"]] == [(5, 324), (130, 324)]
    assert "attention_mask" not in out


def test_sampling_rate_mismatch_raises(fe, music):
    with pytest.raises(ValueError) as error:
        fe(music, sampling_rate=22050)
    assert "22050" in str(error.value) and "44100" in str(error.value) and "librosa.resample" in str(error.value)


def test_missing_sampling_rate_warns(fe, music):
    with CaptureLogger(fe_module.logger) as captured:
        fe(music[:4096])
    assert "sampling_rate" in captured.out


def test_stereo_is_averaged_to_mono_in_both_layouts(fe, music):
    rng = np.random.default_rng(3)
    right = (0.5 * music + 0.05 * rng.standard_normal(len(music))).astype(np.float32)
    stereo = np.stack([music, right])  # (2, N) like librosa
    mono = fe(stereo.mean(axis=0), sampling_rate=SR, return_tensors="np")["input_features"]
    channels_first = fe(stereo, sampling_rate=SR, return_tensors="np")["input_features"]
    channels_last = fe(stereo.T.copy(), sampling_rate=SR, return_tensors="np")["input_features"]  # (N, 2) soundfile
    np.testing.assert_allclose(channels_first, mono, atol=1e-5)
    np.testing.assert_allclose(channels_last, mono, atol=1e-5)
    # a batch of stereo clips is a list
    batch = fe([stereo, stereo.T], sampling_rate=SR, return_tensors="np")["input_features"]
    np.testing.assert_allclose(batch, np.concatenate([mono, mono]), atol=1e-5)


def test_many_channels_is_refused_as_probable_batch(fe, music):
    with pytest.raises(ValueError, match="list of 1-D arrays"):
        fe(np.stack([music[:4096]] * 16), sampling_rate=SR)


def test_dtypes_and_containers_agree(fe, music):
    clip = music[:8192]
    expected = fe(clip, sampling_rate=SR, return_tensors="np")["input_features"]
    pcm = np.round(clip * 32767).astype(np.int16)
    from_int16 = fe(pcm, sampling_rate=SR, return_tensors="np")["input_features"]
    from_float = fe(pcm.astype(np.float32) / 32768, sampling_rate=SR, return_tensors="np")["input_features"]
    np.testing.assert_array_equal(from_int16, from_float)
    # the same audio up to 16-bit quantisation, which only shows in the quietest CQT/mel bins
    assert np.abs(from_int16 - expected).mean() < 1e-2 and np.abs(from_int16 - expected).max() < 0.1
    variants = {
        "float64": clip.astype(np.float64),
        "list": clip.tolist(),
        "torch": torch.from_numpy(clip),
        "torch batch": [torch.from_numpy(clip)],
    }
    for name, audio in variants.items():
        got = fe(audio, sampling_rate=SR, return_tensors="np")["input_features"]
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=name)


def test_silence_is_finite(fe):
    out = fe([np.zeros(SR, dtype=np.float32), np.zeros(4096, dtype=np.int16)], sampling_rate=SR, return_tensors="np")
    x = out["input_features"]
    assert np.isfinite(x).all()
    assert np.abs(x).max() < 1e-3  # every channel is constant: CMVN maps it to 0


@pytest.mark.parametrize(
    "audio, message",
    [
        (np.array([], dtype=np.float32), "empty"),
        ([], "empty"),
        (np.zeros(1000, dtype=np.float32), r"too short: 1000 samples.*2048 samples \(0\.046 s"),
        (np.r_[np.zeros(4096), np.nan].astype(np.float32), "NaN or infinite"),
        (np.r_[np.zeros(4096), np.inf], "NaN or infinite"),
        (np.zeros((2, 3, 4096), dtype=np.float32), "shape"),
        (np.zeros(4096, dtype=np.int64), "int64"),
    ],
)
def test_invalid_audio_raises(fe, audio, message):
    with pytest.raises(ValueError, match=message):
        fe(audio, sampling_rate=SR)


def test_invalid_clip_in_batch_is_named(fe):
    with pytest.raises(ValueError, match="clip 1 of the batch is too short"):
        fe([np.zeros(4096, dtype=np.float32), np.zeros(10, dtype=np.float32)], sampling_rate=SR)


def test_inconsistent_feature_size_raises():
    with pytest.raises(ValueError, match=r"feature_size \(300\) must equal .* = 324"):
        MusiCoderFeatureExtractor(feature_size=300)
    with pytest.raises(ValueError, match="Nyquist"):
        MusiCoderFeatureExtractor(feature_size=12 + 40 + 128 + 24 * 10, cqt_n_octaves=10)  # top bin ~33 kHz


def test_save_and_load_round_trip(music):
    params = {
        "feature_size": 12 + 2 * 13 + 64 + 12 * 7, "n_mfcc": 13, "n_mels": 64, "cqt_bins_per_octave": 12,
        "cqt_n_octaves": 7, "cqt_fmin": 30.0, "log_eps": 1e-8, "padding_value": 0.0, "do_normalize": False,
        "return_attention_mask": False,
    }
    original = MusiCoderFeatureExtractor(**params)
    with tempfile.TemporaryDirectory() as tmp:
        original.save_pretrained(tmp)
        with open(os.path.join(tmp, "preprocessor_config.json")) as f:
            saved = json.load(f)
        loaded = MusiCoderFeatureExtractor.from_pretrained(tmp)
    for key, value in {**params, "sampling_rate": SR, "n_fft": 2048, "hop_length": 1024, "n_chroma": 12}.items():
        assert saved[key] == value and getattr(loaded, key) == value, key
    assert loaded.to_dict() == original.to_dict()
    assert loaded.feature_layout == original.feature_layout
    a = original(music[:8192], sampling_rate=SR, return_tensors="np")
    b = loaded(music[:8192], sampling_rate=SR, return_tensors="np")
    assert "attention_mask" not in b
    np.testing.assert_array_equal(a["input_features"], b["input_features"])


def test_return_tensors_pt(fe, music):
    out = fe([music[:5000], music[:9000]], sampling_rate=SR, return_tensors="pt")
    assert isinstance(out["input_features"], torch.Tensor) and isinstance(out["attention_mask"], torch.Tensor)
    assert out["input_features"].dtype == torch.float32
    assert tuple(out["input_features"].shape) == (2, 9, 324)
    assert out["attention_mask"].sum(dim=1).tolist() == [5, 9]


def test_modules_travel_with_checkpoints_for_remote_code():
    # `save_pretrained` copies the extractor's file, and the flat sibling modules it imports relatively, next to a
    # checkpoint for `trust_remote_code=True`: neither may import the rest of the package.
    standard_library = {"dataclasses", "functools", "math", "warnings"}
    allowed = standard_library | {"librosa", "numpy", "torch", "transformers"}
    relative_imports = {
        "feature_extraction_musicoder": ["feature_extraction_musicoder_torch"],
        "feature_extraction_musicoder_torch": [],
    }
    for name, siblings in relative_imports.items():
        tree = ast.parse(Path(fe_module.__file__).with_name(f"{name}.py").read_text())
        imports_from = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in imports_from if node.level == 0}
        assert [(node.level, node.module) for node in imports_from if node.level] == [(1, s) for s in siblings], name
        assert {module.split(".")[0] for module in imported} <= allowed, name
