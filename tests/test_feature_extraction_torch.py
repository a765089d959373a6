"""The torch backend of `MusiCoderFeatureExtractor`: parity with the librosa reference block by block, padded batches,
devices, saving, and the bulk `featurize_dataset` path.

The audio is synthetic but musical (melody with vibrato, chords, bass, noise-burst hi-hats, decaying harmonics, a
noise floor), generated in the test: no data files are needed.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import test_feature_extraction_musicoder as reference_tests
import torch
from datasets import load_dataset
from transformers import AutoFeatureExtractor
from transformers.testing_utils import CaptureLogger

from musicoder_hf import MusiCoderFeatureExtractor
from musicoder_hf import feature_extraction_musicoder as fe_module
from musicoder_hf.data.features import featurize_dataset, featurize_once
from musicoder_hf.utils import single_threaded


SR = 44100

# Largest |torch - librosa| allowed per block, on music without digital silence. Measured on `band_music`: about 1e-5
# for the first four blocks and 6e-4 for log-CQT after CMVN; before it, 7e-4 on MFCCs (values of hundreds), 1e-4 on
# their deltas and 9e-4 on log-CQT.
CMVN_TOLERANCE = {"chroma": 1e-4, "mfcc": 1e-4, "mfcc_delta": 1e-4, "log_mel": 1e-4, "log_cqt": 5e-3}
RAW_TOLERANCE = {"chroma": 1e-5, "mfcc": 5e-3, "mfcc_delta": 1e-3, "log_mel": 1e-3, "log_cqt": 5e-3}

# Near-silent log-CQT bins hold float32 round-off of the loud parts (soxr's in the reference, torch's in the torch
# backend), so the difference grows as a bin's level falls: it stays within RAW_TOLERANCE down to this many nepers
# (about 87 dB) under the clip's loudest bin, and reaches ~9 at digital silence next to sound.
NOISE_FLOOR_NEPERS = 10.0


def band_music(seconds=6.0, seed=0, sr=SR, silent_gap=None):
    """A few seconds of a little band, float32, peak 0.3; `silent_gap=(start, stop)` in seconds is digital silence.

    Lengths are `seconds * sr + 1` samples: at 44.1 kHz and whole seconds that is 1 more than a multiple of 4, the case
    where soxr's 4:1 resampler returns one sample fewer than librosa keeps (zero-padded).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sr) + 1
    t = np.arange(n) / sr
    y = np.zeros(n)
    beat = 0.25
    for index, start in enumerate(np.arange(0.0, seconds, beat)):
        first = int(start * sr)
        span = slice(first, min(n, first + int(1.5 * sr)))
        local_t = t[span] - start
        envelope = np.exp(-4.0 * local_t) * np.minimum(1.0, local_t / 0.005)
        note = rng.choice([60, 62, 64, 65, 67, 69, 71, 72])
        f0 = 440.0 * 2 ** ((note - 69) / 12) * (1 + 0.003 * np.sin(2 * np.pi * 5.5 * local_t))  # vibrato
        phase = 2 * np.pi * np.cumsum(f0) / sr
        for harmonic in range(1, 8):
            y[span] += 0.5 * envelope * 0.7**harmonic * np.sin(harmonic * phase)
        if index % 4 == 0:  # a bass note and a chord every bar
            for note in (36 + rng.integers(0, 12), 48, 52, 55):
                f = 440.0 * 2 ** ((note - 69) / 12)
                for harmonic in range(1, 5):
                    y[span] += 0.3 * envelope * 0.6**harmonic * np.sin(2 * np.pi * harmonic * f * local_t)
        if index % 2 == 1:  # hi-hat: a short noise burst
            burst = min(n - first, int(0.03 * sr))
            y[first : first + burst] += 0.2 * rng.standard_normal(burst) * np.exp(-np.arange(burst) / (0.005 * sr))
    y += 0.003 * rng.standard_normal(n)
    y = (0.3 * y / np.abs(y).max()).astype(np.float32)
    if silent_gap:
        y[int(silent_gap[0] * sr) : int(silent_gap[1] * sr)] = 0.0
    return y


@pytest.fixture(scope="module")
def librosa_fe():
    return MusiCoderFeatureExtractor(backend="librosa")


@pytest.fixture(scope="module")
def torch_fe():
    return MusiCoderFeatureExtractor(backend="torch")


@pytest.fixture(scope="module")
def music():
    return band_music()


def assert_blocks_close(layout, reference, candidate, tolerance, min_correlation=None):
    for name, (start, stop) in layout.items():
        ref, got = reference[:, start:stop].ravel(), candidate[:, start:stop].ravel()
        error = np.abs(ref.astype(np.float64) - got).max()
        assert error <= tolerance[name], f"{name}: max |torch - librosa| = {error:.2e} > {tolerance[name]}"
        if min_correlation is not None:
            correlation = np.corrcoef(ref, got)[0, 1]
            assert correlation >= min_correlation, f"{name}: correlation {correlation:.7f}"


def test_blocks_match_librosa_after_cmvn(librosa_fe, torch_fe, music):
    ref = librosa_fe(music, sampling_rate=SR, return_tensors="np")["input_features"][0]
    got = torch_fe(music, sampling_rate=SR, return_tensors="np")["input_features"][0]
    assert got.shape == ref.shape == (1 + len(music) // 1024, 324) and got.dtype == np.float32
    assert_blocks_close(librosa_fe.feature_layout, ref, got, CMVN_TOLERANCE, min_correlation=0.99999)


def test_raw_blocks_match_librosa(librosa_fe, torch_fe, music):
    # `_extract_frames` (un-normalised) dispatches on the backend
    assert_blocks_close(
        librosa_fe.feature_layout, librosa_fe._extract_frames(music), torch_fe._extract_frames(music), RAW_TOLERANCE
    )


@pytest.mark.parametrize("num_samples", [2048, 3071, 4410, 10001])
def test_short_clips_match_librosa(librosa_fe, torch_fe, music, num_samples):
    # 3 to 10 frames: the narrower delta windows of short clips, and CQT octaves shorter than their FFT
    clip = music[SR : SR + num_samples]  # cut mid-note: it starts loud, so soxr's start-up transient shows
    ref, got = librosa_fe._extract_frames(clip), torch_fe._extract_frames(clip)
    assert got.shape == ref.shape == (1 + num_samples // 1024, 324)
    assert_blocks_close(librosa_fe.feature_layout, ref, got, RAW_TOLERANCE)


def test_two_frame_clips_match_librosa(music):
    # hop_length == n_fft gives 2 frames for a clip of one window: librosa's delta falls back to edge padding
    params = {"n_fft": 2048, "hop_length": 2048}
    clip = music[:3000]
    ref = MusiCoderFeatureExtractor(**params, backend="librosa")._extract_frames(clip)
    got = MusiCoderFeatureExtractor(**params, backend="torch")._extract_frames(clip)
    assert got.shape == ref.shape == (2, 324)
    assert_blocks_close(MusiCoderFeatureExtractor().feature_layout, ref, got, RAW_TOLERANCE)


def real_music_files(limit=6):
    """Clips of real music if built here (`make demo` renders the folk task into data/tasks/folk and cuts the
    soundtrack corpus into data/corpus), or from $MUSICODER_TEST_AUDIO_DIR; none on a fresh checkout."""
    repo = Path(__file__).resolve().parents[1]
    folders = [os.environ.get("MUSICODER_TEST_AUDIO_DIR"), repo / "data" / "tasks" / "folk", repo / "data" / "corpus"]
    files = []
    for folder in filter(None, folders):
        files += sorted(Path(folder).glob("**/*.flac"))[: limit // 2]
    return files


@pytest.mark.skipif(not real_music_files(), reason="no real music built here (make demo)")
def test_real_music_matches_librosa(librosa_fe, torch_fe):
    layout = librosa_fe.feature_layout
    start, stop = layout["log_cqt"]
    for path in real_music_files():
        y, sr = sf.read(path, dtype="float32", always_2d=True)
        assert sr == SR
        ref, got = librosa_fe._extract_frames(y.mean(axis=1)), torch_fe._extract_frames(y.mean(axis=1))
        # Measured over 391 real clips: chroma 2e-6, MFCC 1.3e-3, delta 1.5e-4, log-mel 8e-3 (in bands 110 dB under
        # the frame's loudest, at float32 round-off: librosa's STFT is float64 inside).
        others = {"chroma": 1e-4, "mfcc": 1e-2, "mfcc_delta": 1e-2, "log_mel": 3e-2}
        assert_blocks_close({name: layout[name] for name in others}, ref, got, others)
        # log-CQT: within float32 round-off down to the noise floor (see NOISE_FLOOR_NEPERS)
        ref_cqt, got_cqt = ref[:, start:stop], got[:, start:stop]
        audible = np.maximum(ref_cqt, got_cqt) >= ref_cqt.max() - NOISE_FLOOR_NEPERS
        assert np.abs(ref_cqt - got_cqt)[audible].max() < RAW_TOLERANCE["log_cqt"], path.name
        ref_cmvn, got_cmvn = (MusiCoderFeatureExtractor.cmvn(x)[:, start:stop].ravel() for x in (ref, got))
        assert np.corrcoef(ref_cmvn, got_cmvn)[0, 1] > 0.999, path.name


def test_non_default_configuration_matches_librosa():
    # 22.05 kHz, n_fft 1024, 40 mels, 13 MFCCs, 12 x 7 CQT bins: another early-downsampling count and octave plan
    params = reference_tests.MusiCoderFeatureExtractionTester(None).prepare_feat_extract_dict()
    librosa_fe = MusiCoderFeatureExtractor(**params)
    torch_fe = MusiCoderFeatureExtractor(**{**params, "backend": "torch"})
    y = band_music(seconds=4.0, sr=22050, seed=3)
    ref, got = librosa_fe._extract_frames(y), torch_fe._extract_frames(y)
    assert_blocks_close(librosa_fe.feature_layout, ref, got, RAW_TOLERANCE)


def test_digital_silence_deviates_only_below_the_noise_floor(librosa_fe, torch_fe):
    y = band_music(seed=1, silent_gap=(2.0, 3.5))
    start, stop = librosa_fe.feature_layout["log_cqt"]
    ref, got = librosa_fe._extract_frames(y)[:, start:stop], torch_fe._extract_frames(y)[:, start:stop]
    quiet = np.maximum(ref, got) < ref.max() - NOISE_FLOOR_NEPERS
    assert quiet.any()  # the gap has bins down at the noise floor...
    assert np.abs(ref - got)[~quiet].max() < RAW_TOLERANCE["log_cqt"]  # ...and everything else matches
    # Deep in the gap, where no octave's decimators or wavelets reach sound, both give exactly ln(log_eps).
    deep = slice(int(2.6 * SR) // 1024, int(2.9 * SR) // 1024)
    top_octaves = slice(-48, None)
    np.testing.assert_allclose(ref[deep, top_octaves], np.log(1e-10), atol=1e-4)
    np.testing.assert_allclose(got[deep, top_octaves], np.log(1e-10), atol=1e-4)
    # after CMVN, the clip as a whole still correlates closely
    ref_cmvn, got_cmvn = MusiCoderFeatureExtractor.cmvn(ref), MusiCoderFeatureExtractor.cmvn(got)
    assert np.corrcoef(ref_cmvn.ravel(), got_cmvn.ravel())[0, 1] > 0.99


def test_long_clips_are_computed_block_by_block_as_a_whole(monkeypatch, librosa_fe, torch_fe):
    """A clip longer than `LONG_CLIP_BLOCK_SAMPLES` is computed block by block with context on both sides, so memory
    does not grow with the track: the features are the whole clip's, the MFCC floor included (the clip's peak)."""
    from musicoder_hf import feature_extraction_musicoder_torch as torch_module

    y = band_music(seconds=12.0, seed=2, silent_gap=(5.0, 6.5))
    whole = torch_fe._extract_frames(y)
    blocks = []
    spectra = torch_module.TorchFeatureBackend._frame_spectra
    monkeypatch.setattr(torch_module.TorchFeatureBackend, "_frame_spectra",
                        lambda self, audio, *args: blocks.append(audio.shape[1]) or spectra(self, audio, *args))
    monkeypatch.setattr(torch_module, "LONG_CLIP_BLOCK_SAMPLES", 2**16)  # 1.5 s blocks
    blocked = torch_fe._extract_frames(y)
    assert len(blocks) == 9 and max(blocks) < len(y) / 2
    assert blocked.shape == whole.shape == (1 + len(y) // 1024, 324)
    layout = torch_fe.feature_layout
    others = {name: span for name, span in layout.items() if name != "log_cqt"}
    assert_blocks_close(others, whole, blocked, dict.fromkeys(others, 1e-5))
    # Log-CQT: the same up to float32 round-off, which differs (FFT blocks fall elsewhere) below the noise floor.
    start, stop = layout["log_cqt"]
    quiet = np.maximum(whole, blocked)[:, start:stop] < whole[:, start:stop].max() - NOISE_FLOOR_NEPERS
    assert np.abs(whole - blocked)[:, start:stop][~quiet].max() < RAW_TOLERANCE["log_cqt"]
    deep = slice(int(5.6 * SR) // 1024, int(5.9 * SR) // 1024)
    np.testing.assert_array_equal(blocked[deep, stop - 48 : stop], whole[deep, stop - 48 : stop])
    # ... and so they match the librosa reference on music, as the whole clip's do.
    y = band_music(seconds=12.0)
    assert_blocks_close(layout, librosa_fe._extract_frames(y), torch_fe._extract_frames(y), RAW_TOLERANCE)


def test_silence_is_finite_and_exact(torch_fe):
    raw = torch_fe._extract_frames(np.zeros(SR, dtype=np.float32))
    layout = torch_fe.feature_layout
    np.testing.assert_array_equal(raw[:, slice(*layout["log_cqt"])], np.float32(np.log(1e-10)))
    np.testing.assert_array_equal(raw[:, slice(*layout["log_mel"])], np.float32(np.log(1e-10)))
    out = torch_fe([np.zeros(SR, dtype=np.float32), np.zeros(4096, dtype=np.int16)], sampling_rate=SR,
                   return_tensors="np")["input_features"]  # fmt: skip
    assert np.isfinite(out).all() and np.abs(out).max() < 1e-3  # constant channels: CMVN maps them to 0


def test_padded_batch_equals_clips_one_by_one(torch_fe, music):
    clips = [music[: 2 * SR + 3], music, music[5000 : 5000 + 2048], music[7 : 7 + 4097]]
    batch = torch_fe(clips, sampling_rate=SR, return_tensors="np")
    assert batch["input_features"].shape == (4, 1 + len(music) // 1024, 324)
    for i, clip in enumerate(clips):
        alone = torch_fe(clip, sampling_rate=SR, return_tensors="np")["input_features"][0]
        n = int(batch["attention_mask"][i].sum())
        assert n == len(alone) == 1 + len(clip) // 1024
        np.testing.assert_allclose(batch["input_features"][i, :n], alone, atol=1e-4)
        assert (batch["input_features"][i, n:] == 0.0).all()  # padding exactly padding_value
    # the same clips in padded batches of 2 (longest first, so the batches differ) give the same features
    small_batches = torch_fe(clips, sampling_rate=SR, return_tensors="np", batch_size=2)
    np.testing.assert_allclose(small_batches["input_features"], batch["input_features"], atol=1e-4)
    np.testing.assert_array_equal(small_batches["attention_mask"], batch["attention_mask"])


def test_features_do_not_depend_on_torch_threads_or_batch_size(torch_fe, music):
    # Batches run one after another on torch's intra-op threads: the thread count and the batching change nothing but
    # float32 round-off, and the extractor leaves the process-wide thread count as the caller set it.
    clips = [music[: SR + 1000 * i] for i in range(4)]
    previous = torch.get_num_threads()
    features = {}
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for batch_size in (1, 3, None):
                output = torch_fe(clips, sampling_rate=SR, batch_size=batch_size, return_tensors="np")
                features[threads, batch_size] = output["input_features"]
                assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(previous)
    reference = features[1, None]
    for (threads, batch_size), got in features.items():
        np.testing.assert_allclose(got, reference, atol=1e-4, err_msg=f"{threads} threads, batch_size={batch_size}")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"padding": "max_length", "max_length": 300},
        {"pad_to_multiple_of": 64},
        {"padding": "max_length", "max_length": 100, "truncation": True},  # CMVN over the 100 kept frames
        {"max_length": 50, "truncation": True, "pad_to_multiple_of": 16},  # 50 rounds up to 64 kept frames
        {"padding": False, "return_attention_mask": False},
    ],
)
def test_padding_and_truncation_as_librosa(librosa_fe, torch_fe, music, kwargs):
    clips = [music[: 3 * SR // 2], music]
    ref = librosa_fe(clips, sampling_rate=SR, **kwargs)
    got = torch_fe(clips, sampling_rate=SR, **kwargs)
    assert ref.keys() == got.keys()
    if "attention_mask" in ref:
        np.testing.assert_array_equal(np.stack(got["attention_mask"]), np.stack(ref["attention_mask"]))
    for ref_clip, got_clip in zip(ref["input_features"], got["input_features"]):
        assert got_clip.shape == ref_clip.shape
        np.testing.assert_allclose(got_clip, ref_clip, atol=CMVN_TOLERANCE["log_cqt"])


def test_left_padding_as_librosa(music):
    clips = [music[: 3 * SR // 2], music]
    ref = MusiCoderFeatureExtractor(padding_side="left", backend="librosa")(clips, sampling_rate=SR, return_tensors="np")
    got = MusiCoderFeatureExtractor(padding_side="left", backend="torch")(clips, sampling_rate=SR, return_tensors="np")
    np.testing.assert_array_equal(got["attention_mask"], ref["attention_mask"])
    assert (got["input_features"][ref["attention_mask"] == 0] == 0.0).all()
    np.testing.assert_allclose(got["input_features"], ref["input_features"], atol=CMVN_TOLERANCE["log_cqt"])


def test_backend_and_device_are_saved_and_loaded(tmp_path):
    original = MusiCoderFeatureExtractor(backend="torch", device=torch.device("cuda", 0))
    original.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["backend"] == "torch" and saved["device"] == "cuda:0"
    for loader in (MusiCoderFeatureExtractor, AutoFeatureExtractor):
        loaded = loader.from_pretrained(tmp_path)
        assert isinstance(loaded, MusiCoderFeatureExtractor)
        assert loaded.backend == "torch" and loaded.device == "cuda:0"
        assert loaded.to_dict() == original.to_dict()
    default = MusiCoderFeatureExtractor().to_dict()
    assert default["backend"] == "torch" and default["device"] == "cpu"


def test_invalid_backend_and_device_raise():
    with pytest.raises(ValueError, match="backend must be one of"):
        MusiCoderFeatureExtractor(backend="numpy")
    with pytest.raises(ValueError, match="device must be a torch device"):
        MusiCoderFeatureExtractor(backend="torch", device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback of a machine without CUDA")
def test_cuda_configuration_falls_back_to_cpu_without_gpu(torch_fe, music):
    clip = music[:8192]
    cuda_fe = MusiCoderFeatureExtractor(backend="torch", device="cuda")
    with CaptureLogger(fe_module.logger) as captured:
        got = cuda_fe(clip, sampling_rate=SR, return_tensors="np")["input_features"]
    assert "CUDA is not available" in captured.out
    np.testing.assert_array_equal(got, torch_fe(clip, sampling_rate=SR, return_tensors="np")["input_features"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu_and_librosa(librosa_fe, torch_fe, music):
    clips = [music, music[: 2 * SR + 3]]
    cpu = torch_fe(clips, sampling_rate=SR, return_tensors="np")["input_features"]
    cuda = MusiCoderFeatureExtractor(backend="torch", device="cuda")(clips, sampling_rate=SR, return_tensors="np")
    np.testing.assert_allclose(cuda["input_features"], cpu, atol=1e-3)
    ref = librosa_fe(music, sampling_rate=SR, return_tensors="np")["input_features"][0]
    assert_blocks_close(librosa_fe.feature_layout, ref, cuda["input_features"][0], CMVN_TOLERANCE)


class MusiCoderTorchFeatureExtractionTester(reference_tests.MusiCoderFeatureExtractionTester):
    def prepare_feat_extract_dict(self):
        return {**super().prepare_feat_extract_dict(), "backend": "torch"}


class MusiCoderTorchFeatureExtractionTest(reference_tests.MusiCoderFeatureExtractionTest):
    """transformers' conformance mixin and the reference's own checks, on the torch backend (non-default config)."""

    def setUp(self):
        self.feat_extract_tester = MusiCoderTorchFeatureExtractionTester(self)


# ---------------------------------------------------------------------------------------------------------------------
# Bulk path: featurize_dataset


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    """An audiofolder of three clips (0.5 to 2.5 s) with a `clip` metadata column naming them."""
    root = tmp_path_factory.mktemp("audio_folder")
    (root / "train").mkdir()
    clips = {f"clip{i}": band_music(seconds=seconds, seed=i) for i, seconds in enumerate((1.0, 2.5, 0.5))}
    rows = []
    for name, y in clips.items():
        sf.write(root / "train" / f"{name}.wav", y, SR, subtype="FLOAT")
        rows.append(json.dumps({"file_name": f"{name}.wav", "clip": name}))
    (root / "train" / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root, clips


def test_featurize_dataset_with_the_torch_backend(audio_folder, librosa_fe, torch_fe):
    root, clips = audio_folder
    dataset = load_dataset("audiofolder", data_dir=str(root))
    by_torch = featurize_dataset(dataset)["train"].with_format("numpy")  # the default backend
    by_librosa = featurize_dataset(dataset, backend="librosa")["train"].with_format("numpy")
    assert set(by_torch.column_names) == {"clip", "input_features", "num_frames"}
    for row, reference in zip(by_torch, by_librosa):
        y = clips[row["clip"]]
        assert row["num_frames"] == len(row["input_features"]) == 1 + len(y) // 1024
        expected = torch_fe(y, sampling_rate=SR, return_tensors="np")["input_features"][0]
        np.testing.assert_allclose(row["input_features"], expected, atol=1e-5)
        layout = librosa_fe.feature_layout
        assert_blocks_close(layout, reference["input_features"], row["input_features"], CMVN_TOLERANCE)


def test_featurize_once_reuses_until_the_data_or_settings_change(audio_folder, tmp_path):
    root, clips = audio_folder
    manifest = {"clips": sorted(clips), "build": {"started": 1.0}, "build_wall_seconds": 3.0}
    (root / "manifest.json").write_text(json.dumps(manifest))
    loads = []

    def loader(source_dir):
        loads.append(source_dir)
        return load_dataset("audiofolder", data_dir=str(source_dir))

    def featurised(**kwargs):
        return featurize_once(root, tmp_path / "features", loader, num_proc=None, **kwargs)["train"]

    first = featurised()
    assert len(loads) == 1 and sorted(first["clip"]) == sorted(clips)
    normalised = first.with_format("numpy")[0]["input_features"]  # read now: the folder is rewritten below
    # A resumed build rewrites only its timings: the features are reused, not recomputed.
    manifest["build"], manifest["build_wall_seconds"] = {"started": 2.0}, 9.0
    (root / "manifest.json").write_text(json.dumps(manifest, indent=4))
    assert featurised()["num_frames"] == first["num_frames"] and len(loads) == 1
    # Other data, or other extractor settings, are featurised again.
    (root / "manifest.json").write_text(json.dumps({**manifest, "clips": sorted(clips)[:2]}))
    featurised()
    assert len(loads) == 2
    unnormalised = featurised(feature_extractor=MusiCoderFeatureExtractor(do_normalize=False))
    assert len(loads) == 3
    assert not np.allclose(unnormalised.with_format("numpy")[0]["input_features"], normalised)


def test_featurize_dataset_argument_errors(audio_folder):
    dataset = load_dataset("audiofolder", data_dir=str(audio_folder[0]))
    with pytest.raises(ValueError, match="configure that one instead"):
        featurize_dataset(dataset, feature_extractor=MusiCoderFeatureExtractor(), backend="librosa")
    with pytest.raises(ValueError, match="num_proc=2 with CUDA"):
        featurize_dataset(dataset, backend="torch", device="cuda", num_proc=2)


def test_single_threaded_limits_torch_and_blas_then_restores_them():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    np.ones((64, 64)) @ np.ones((64, 64))  # numpy's OpenBLAS is loaded
    previous_torch, previous_blas = torch.get_num_threads(), blas_threads()
    assert previous_blas, "no BLAS library found"
    with single_threaded():
        assert torch.get_num_threads() == 1
        assert blas_threads() == [1] * len(previous_blas)
    assert torch.get_num_threads() == previous_torch and blas_threads() == previous_blas


def test_featurize_dataset_torch_backend_in_worker_processes(audio_folder):
    # A fresh interpreter: forking the test process after its torch thread pools have run can deadlock.
    script = textwrap.dedent(f"""
        import numpy as np, torch
        from datasets import load_dataset
        from musicoder_hf.data.features import featurize_dataset, featurize_once
        dataset = load_dataset("audiofolder", data_dir={str(audio_folder[0])!r})
        threads = torch.get_num_threads()
        one = featurize_dataset(dataset, backend="torch")["train"].with_format("numpy")
        two = featurize_dataset(dataset, backend="torch", num_proc=2)["train"].with_format("numpy")
        assert torch.get_num_threads() == threads
        for a, b in zip(one, two):
            assert a["clip"] == b["clip"]
            np.testing.assert_allclose(a["input_features"], b["input_features"], atol=1e-5)
        print("same features")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "same features" in result.stdout
