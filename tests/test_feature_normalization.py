"""Tests of `MusiCoderFeatureExtractor(normalization=...)` and of `feature_statistics` (dataset statistics)."""

import json

import numpy as np
import pytest
from datasets import Array2D, Dataset, DatasetDict, Features, Value

from musicoder_hf.data.features import feature_statistics
from musicoder_hf.feature_extraction_musicoder import MusiCoderFeatureExtractor

SR = 44100
FEATURE_SIZE = 324
BACKENDS = ("librosa", "torch")


def synthetic_clip(seconds, seed):
    """A few sines and a little noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = sum(0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in rng.uniform(80, 4000, size=3))
    y = y + 0.02 * rng.standard_normal(len(t))
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


CLIPS = [synthetic_clip(1.0, 0), synthetic_clip(2.0, 1), synthetic_clip(1.5, 2)]


@pytest.fixture(scope="module")
def raw_batches():
    """Per backend: the un-normalised padded batch of CLIPS (features, mask)."""
    out = {}
    for backend in BACKENDS:
        extractor = MusiCoderFeatureExtractor(backend=backend, do_normalize=False)
        batch = extractor(CLIPS, sampling_rate=SR, return_tensors="np")
        out[backend] = (batch["input_features"], batch["attention_mask"])
    return out


@pytest.fixture(scope="module")
def statistics(raw_batches):
    """Per-channel statistics of the valid raw frames (librosa), as lists of floats."""
    features, mask = raw_batches["librosa"]
    frames = features[mask > 0].astype(np.float64)
    return frames.mean(axis=0).tolist(), frames.std(axis=0).tolist()


def dataset_extractor(statistics, **kwargs):
    mean, std = statistics
    return MusiCoderFeatureExtractor(normalization="dataset", feature_mean=mean, feature_std=std, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dataset_mode_matches_statistics_by_hand(backend, raw_batches, statistics):
    raw, raw_mask = raw_batches[backend]
    mean, std = (np.asarray(s) for s in statistics)
    batch = dataset_extractor(statistics, backend=backend)(CLIPS, sampling_rate=SR, return_tensors="np")
    features, mask = batch["input_features"], batch["attention_mask"]
    assert features.dtype == np.float32 and features.shape == raw.shape
    np.testing.assert_array_equal(mask, raw_mask)
    lengths = mask.sum(axis=1)
    assert len(set(lengths.tolist())) == len(CLIPS)  # clips of different lengths: padding in the batch
    for i in range(len(CLIPS)):
        valid = mask[i] > 0
        expected = (raw[i][valid].astype(np.float64) - mean) / std
        np.testing.assert_allclose(features[i][valid], expected, rtol=1e-5, atol=1e-5)
        assert (features[i][~valid] == 0.0).all()  # padding is exactly padding_value
    # the valid frames are not per-clip CMVN: the clips keep their differences in envelope and loudness
    assert np.abs(features[0][mask[0] > 0].mean(axis=0)).max() > 0.1


@pytest.mark.parametrize("backend", BACKENDS)
def test_dataset_mode_independent_of_batch(backend, statistics):
    extractor = dataset_extractor(statistics, backend=backend)
    batch = extractor(CLIPS, sampling_rate=SR, return_tensors="np")
    for i, clip in enumerate(CLIPS):
        alone = extractor(clip, sampling_rate=SR, return_tensors="np")["input_features"][0]
        valid = batch["attention_mask"][i] > 0
        assert valid.sum() == len(alone)
        if backend == "librosa":
            np.testing.assert_array_equal(batch["input_features"][i][valid], alone)
        else:  # the torch backend's batched FFTs round differently from one batch to another
            np.testing.assert_allclose(batch["input_features"][i][valid], alone, rtol=1e-4, atol=1e-4)


def test_dataset_mode_padding_value_and_max_length(statistics):
    extractor = dataset_extractor(statistics, padding_value=-3.0)
    batch = extractor(CLIPS[:2], sampling_rate=SR, padding="max_length", max_length=200, return_tensors="np")
    features, mask = batch["input_features"], batch["attention_mask"]
    assert features.shape == (2, 200, FEATURE_SIZE)
    assert (features[mask == 0] == -3.0).all()
    unpadded = extractor(CLIPS[0], sampling_rate=SR, return_tensors="np")["input_features"][0]
    np.testing.assert_array_equal(features[0][mask[0] > 0], unpadded)


@pytest.mark.parametrize("backend", BACKENDS)
def test_do_normalize_false_gives_raw_frames_whatever_normalization(backend, raw_batches, statistics):
    raw, _ = raw_batches[backend]
    extractor = dataset_extractor(statistics, backend=backend, do_normalize=False)
    features = extractor(CLIPS, sampling_rate=SR, return_tensors="np")["input_features"]
    np.testing.assert_array_equal(features, raw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_mode_is_the_default_and_unchanged(backend, raw_batches):
    raw, raw_mask = raw_batches[backend]
    extractor = MusiCoderFeatureExtractor(backend=backend)
    assert extractor.normalization == "clip"
    assert extractor.feature_mean is None and extractor.feature_std is None
    batch = extractor(CLIPS, sampling_rate=SR, return_tensors="np")
    explicit = MusiCoderFeatureExtractor(backend=backend, normalization="clip")(
        CLIPS, sampling_rate=SR, return_tensors="np"
    )
    np.testing.assert_array_equal(batch["input_features"], explicit["input_features"])
    for i in range(len(CLIPS)):
        expected = MusiCoderFeatureExtractor.cmvn(raw[i], raw_mask[i], 0.0)
        if backend == "librosa":
            np.testing.assert_array_equal(batch["input_features"][i], expected)
        else:  # CMVN on the torch device, in float32
            np.testing.assert_allclose(batch["input_features"][i], expected, rtol=1e-4, atol=1e-4)
        assert (batch["input_features"][i][raw_mask[i] == 0] == 0.0).all()


GOOD_MEAN, GOOD_STD = [0.0] * FEATURE_SIZE, [1.0] * FEATURE_SIZE


def _with(values, index, value):
    values = list(values)
    values[index] = value
    return values


BAD_CONFIGURATIONS = {
    "missing mean": ({"normalization": "dataset", "feature_std": GOOD_STD}, "feature_mean is missing"),
    "missing std": ({"normalization": "dataset", "feature_mean": GOOD_MEAN}, "feature_std is missing"),
    "missing both": ({"normalization": "dataset"}, "feature_mean is missing"),
    "short mean": (
        {"normalization": "dataset", "feature_mean": GOOD_MEAN[:-1], "feature_std": GOOD_STD},
        "323 values",
    ),
    "long std": (
        {"normalization": "dataset", "feature_mean": GOOD_MEAN, "feature_std": GOOD_STD + [1.0]},
        "325 values",
    ),
    "nan mean": (
        {"normalization": "dataset", "feature_mean": _with(GOOD_MEAN, 5, float("nan")), "feature_std": GOOD_STD},
        "NaN or infinite",
    ),
    "inf std": (
        {"normalization": "dataset", "feature_mean": GOOD_MEAN, "feature_std": _with(GOOD_STD, 7, float("inf"))},
        "NaN or infinite",
    ),
    "zero std": (
        {"normalization": "dataset", "feature_mean": GOOD_MEAN, "feature_std": _with(GOOD_STD, 3, 0.0)},
        "must be positive",
    ),
    "negative std": (
        {"normalization": "dataset", "feature_mean": GOOD_MEAN, "feature_std": _with(GOOD_STD, 3, -1.0)},
        "must be positive",
    ),
    "not flat": ({"normalization": "dataset", "feature_mean": [GOOD_MEAN], "feature_std": GOOD_STD}, "flat list"),
    "unknown mode": ({"normalization": "global"}, "normalization must be one of"),
    "statistics with clip": (
        {"normalization": "clip", "feature_mean": GOOD_MEAN, "feature_std": GOOD_STD},
        'pass normalization="dataset"',
    ),
    "mean with default clip": ({"feature_mean": GOOD_MEAN}, 'pass normalization="dataset"'),
}


@pytest.mark.parametrize("kwargs, message", BAD_CONFIGURATIONS.values(), ids=BAD_CONFIGURATIONS.keys())
def test_bad_configuration_raises_with_the_fix(kwargs, message):
    with pytest.raises(ValueError) as error:
        MusiCoderFeatureExtractor(**kwargs)
    text = str(error.value)
    assert message in text
    if kwargs.get("normalization") == "dataset":
        assert "feature_statistics" in text  # names the fix
    elif kwargs.get("normalization") == "global":
        assert '"dataset"' in text and '"clip"' in text
    else:
        assert "drop them" in text


def test_statistics_accept_arrays_and_save_as_floats(tmp_path):
    mean = np.linspace(-1, 1, FEATURE_SIZE, dtype=np.float32)
    extractor = MusiCoderFeatureExtractor(
        normalization="dataset", feature_mean=mean, feature_std=np.ones(FEATURE_SIZE)
    )
    assert isinstance(extractor.feature_mean, list) and all(type(v) is float for v in extractor.feature_mean)
    json.loads(extractor.to_json_string())  # JSON-serialisable


@pytest.mark.parametrize("backend", BACKENDS)
def test_save_load_round_trip(backend, statistics, tmp_path):
    original = dataset_extractor(statistics, backend=backend)
    original.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["normalization"] == "dataset"
    assert saved["feature_mean"] == statistics[0] and saved["feature_std"] == statistics[1]
    loaded = MusiCoderFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.normalization == "dataset"
    assert loaded.feature_mean == statistics[0] and loaded.feature_std == statistics[1]
    assert loaded.to_dict() == original.to_dict()
    expected = original(CLIPS[:2], sampling_rate=SR, return_tensors="np")["input_features"]
    np.testing.assert_array_equal(loaded(CLIPS[:2], sampling_rate=SR, return_tensors="np")["input_features"], expected)


def test_clip_config_round_trip_has_no_statistics(tmp_path):
    MusiCoderFeatureExtractor().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["normalization"] == "clip" and saved["feature_mean"] is None and saved["feature_std"] is None
    assert MusiCoderFeatureExtractor.from_pretrained(tmp_path).normalization == "clip"


# ---------------------------------------------------------------------------------------------------------------------
# feature_statistics


def frames_dataset(clips, channels=6):
    features = Features(
        {"input_features": Array2D(shape=(None, channels), dtype="float32"), "num_frames": Value("int32")}
    )
    return Dataset.from_dict({"input_features": clips, "num_frames": [len(c) for c in clips]}, features=features)


def synthetic_frames(lengths=(7, 1, 13, 4, 9, 2, 11), channels=6, seed=0):
    """Frames with large, differing channel means (as MFCC 0 near -500) and small spreads: a test of stability."""
    rng = np.random.default_rng(seed)
    offsets = np.array([-500.0, 1e3, 0.0, 3.0, -20.0, 1e4])[:channels]
    scales = np.array([1.0, 0.01, 2.0, 0.5, 5.0, 0.1])[:channels]
    return [(offsets + scales * rng.standard_normal((n, channels))).astype(np.float32) for n in lengths]


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_feature_statistics_matches_numpy(batch_size):
    clips = synthetic_frames()
    result = feature_statistics(frames_dataset(clips), batch_size=batch_size)
    frames = np.concatenate(clips).astype(np.float64)
    np.testing.assert_allclose(result["feature_mean"], frames.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(result["feature_std"], frames.std(axis=0), rtol=1e-6)
    assert result["num_frames"] == len(frames) and result["num_clips"] == len(clips)
    assert all(type(v) is float for v in result["feature_mean"] + result["feature_std"])


def test_feature_statistics_independent_of_batch_size_and_uses_train_split():
    clips = synthetic_frames(seed=1)
    results = [feature_statistics(frames_dataset(clips), batch_size=b) for b in (1, 3, 64)]
    for result in results[1:]:
        np.testing.assert_allclose(result["feature_mean"], results[0]["feature_mean"], rtol=1e-9)
        np.testing.assert_allclose(result["feature_std"], results[0]["feature_std"], rtol=1e-9)
    splits = DatasetDict({"train": frames_dataset(clips), "test": frames_dataset(synthetic_frames(seed=2))})
    from_dict = feature_statistics(splits, batch_size=3)
    np.testing.assert_allclose(from_dict["feature_mean"], results[0]["feature_mean"], rtol=1e-9)


def test_feature_statistics_errors():
    with pytest.raises(ValueError, match="no frames"):
        feature_statistics(frames_dataset([]))
    clips = synthetic_frames(lengths=(3, 4))
    clips[1][2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        feature_statistics(frames_dataset(clips))
    clips[1][2, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        feature_statistics(frames_dataset(clips), batch_size=1)
    with pytest.raises(ValueError, match="featurize_dataset"):
        feature_statistics(frames_dataset(synthetic_frames()), column="frames")
    with pytest.raises(ValueError, match="train"):
        feature_statistics(DatasetDict({"test": frames_dataset(synthetic_frames())}))


def test_feature_statistics_of_extracted_frames_configure_the_extractor():
    raw = MusiCoderFeatureExtractor(do_normalize=False)
    clips = [raw(clip, sampling_rate=SR)["input_features"][0] for clip in CLIPS]
    result = feature_statistics(frames_dataset(clips, channels=FEATURE_SIZE), batch_size=2)
    extractor = MusiCoderFeatureExtractor(
        normalization="dataset", feature_mean=result["feature_mean"], feature_std=result["feature_std"]
    )
    frames = np.concatenate([extractor(clip, sampling_rate=SR)["input_features"][0] for clip in CLIPS])
    # over the dataset the statistics were computed on, the normalised frames have mean 0 and std 1 per channel
    np.testing.assert_allclose(frames.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(frames.std(axis=0), 1.0, atol=1e-4)


def test_feature_stats_command_saves_a_dataset_extractor(tmp_path):
    """`musicoder-data feature-stats`: one pass over an audio folder's train split gives the extractor whose
    normalisation uses that folder's per-channel statistics."""
    import soundfile

    from musicoder_hf.builders.cli import main as musicoder_data
    from musicoder_hf.data.features import feature_statistics

    rng = np.random.default_rng(0)
    folder = tmp_path / "audio" / "train"
    folder.mkdir(parents=True)
    clips = []
    for index, seconds in enumerate((1.0, 1.5, 2.0)):
        t = np.arange(int(44100 * seconds)) / 44100
        clip = (0.3 * np.sin(2 * np.pi * 220 * (index + 1) * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)
        soundfile.write(folder / f"clip{index}.wav", clip, 44100, subtype="FLOAT")  # exact samples
        clips.append(clip)
    assert musicoder_data(["feature-stats", "--input_dir", str(tmp_path / "audio"),
                           "--output_dir", str(tmp_path / "preprocessor")]) == 0

    saved = MusiCoderFeatureExtractor.from_pretrained(tmp_path / "preprocessor")
    assert saved.normalization == "dataset"
    raw = MusiCoderFeatureExtractor(do_normalize=False)
    frames = [raw(clip, sampling_rate=44100)["input_features"][0] for clip in clips]
    expected = feature_statistics(Dataset.from_dict({"input_features": frames}))
    np.testing.assert_allclose(saved.feature_mean, expected["feature_mean"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(saved.feature_std, np.maximum(expected["feature_std"], 1e-3), rtol=1e-5, atol=1e-5)


def test_featurize_command_records_its_feature_extractor(tmp_path):
    """`musicoder-data featurize` saves the extractor beside the frames, and training reads it back from there."""
    import soundfile
    from datasets import load_from_disk

    from musicoder_hf.builders.cli import main as musicoder_data
    from musicoder_hf.data.features import feature_extractor_of

    folder = tmp_path / "audio" / "train"
    folder.mkdir(parents=True)
    t = np.arange(44100) / 44100
    for index in range(2):
        soundfile.write(folder / f"clip{index}.wav", (0.3 * np.sin(2 * np.pi * 330 * (index + 1) * t)).astype(np.float32),
                        44100, subtype="FLOAT")
    assert musicoder_data(["featurize", "--input_dir", str(tmp_path / "audio"), "--output_dir",
                           str(tmp_path / "features"), "--backend", "torch"]) == 0
    frames = load_from_disk(tmp_path / "features")["train"]
    assert len(frames) == 2 and frames[0]["num_frames"] == 44
    from musicoder_hf.finetuning import same_features

    recorded = feature_extractor_of(tmp_path / "features")
    assert recorded.backend == "torch" and same_features(recorded, MusiCoderFeatureExtractor(backend="torch"))
    assert not same_features(recorded, MusiCoderFeatureExtractor(backend="librosa"))
