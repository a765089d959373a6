"""What a Hub user does with a saved folder: pipelines, Auto classes, and `trust_remote_code` without our package."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile
import torch
from transformers import pipeline

from musicoder_hf import MusiCoderConfig, MusiCoderFeatureExtractor, MusiCoderForSequenceClassification

SAMPLING_RATE = 44100
LABELS = ["folk", "jazz", "rock", "choral"]


def music_like_clip(seconds=3.0, seed=0):
    """A few chords with harmonics and a little noise: enough structure for real CQT/chroma content."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    clip = np.zeros_like(t)
    for start, root in zip(np.arange(0, seconds, 0.75), rng.choice([220.0, 261.6, 293.7, 329.6], size=8)):
        active = (t >= start) & (t < start + 0.75)
        for ratio in (1.0, 1.25, 1.5):
            for harmonic in (1, 2, 3):
                clip[active] += np.sin(2 * np.pi * root * ratio * harmonic * t[active]) / harmonic
    clip += 0.01 * rng.standard_normal(t.shape)
    return (0.2 * clip / np.abs(clip).max()).astype(np.float32)


def save_classifier(folder, problem_type="single_label_classification", seed=0):
    torch.manual_seed(seed)
    config = MusiCoderConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
        problem_type=problem_type,
    )
    model = MusiCoderForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    feature_extractor = MusiCoderFeatureExtractor()
    feature_extractor.save_pretrained(folder)
    return model, feature_extractor


def direct_scores(model, feature_extractor, clip, activation):
    inputs = feature_extractor(clip, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    return dict(zip(LABELS, activation(logits).tolist()))


@pytest.fixture(scope="module")
def single_label_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("single_label")
    model, feature_extractor = save_classifier(folder)
    return folder, model, feature_extractor


def test_saved_folder_has_code_and_full_auto_map(single_label_folder):
    folder, _, _ = single_label_folder
    for code_file in ("configuration_musicoder.py", "modeling_musicoder.py", "feature_extraction_musicoder.py"):
        assert (folder / code_file).exists(), code_file
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_musicoder.MusiCoderConfig",
        "AutoModel": "modeling_musicoder.MusiCoderModel",
        "AutoModelForPreTraining": "modeling_musicoder.MusiCoderForPreTraining",
        "AutoModelForAudioClassification": "modeling_musicoder.MusiCoderForSequenceClassification",
    }
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"] == {"AutoFeatureExtractor": "feature_extraction_musicoder.MusiCoderFeatureExtractor"}


def test_pipeline_on_wav_path_array_and_dict(single_label_folder, tmp_path):
    folder, model, feature_extractor = single_label_folder
    clip = music_like_clip()
    wav_path = tmp_path / "clip.wav"
    soundfile.write(wav_path, clip, SAMPLING_RATE, subtype="FLOAT")
    expected = direct_scores(model, feature_extractor, clip, lambda logits: logits.softmax(-1))

    classifier = pipeline("audio-classification", model=str(folder))
    for audio in (str(wav_path), clip, {"array": clip, "sampling_rate": SAMPLING_RATE}):
        result = classifier(audio, top_k=None)
        assert [r["label"] for r in result] == sorted(expected, key=expected.get, reverse=True)
        for r in result:
            assert r["score"] == pytest.approx(expected[r["label"]], abs=1e-4)
        assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)

    top_two = classifier(clip, top_k=2)
    assert len(top_two) == 2 and top_two[0]["score"] >= top_two[1]["score"]


def test_pipeline_multi_label_uses_sigmoid(tmp_path):
    model, feature_extractor = save_classifier(tmp_path, problem_type="multi_label_classification", seed=1)
    clip = music_like_clip(seed=3)
    expected = direct_scores(model, feature_extractor, clip, torch.sigmoid)
    result = pipeline("audio-classification", model=str(tmp_path))(clip, top_k=None)
    assert len(result) == len(LABELS)
    for r in result:
        assert r["score"] == pytest.approx(expected[r["label"]], abs=1e-4)
    assert sum(r["score"] for r in result) != pytest.approx(1.0, abs=1e-3)  # independent tags, not a distribution


def test_trust_remote_code_loads_without_the_package(single_label_folder, tmp_path):
    import shutil
    from pathlib import Path

    from musicoder_hf import feature_extraction_musicoder

    folder, model, feature_extractor = single_label_folder
    # The extractor's torch backend is a sibling module, which `save_pretrained` copies next to the extractor's file.
    torch_folder = tmp_path / "torch_backend_checkpoint"
    shutil.copytree(folder, torch_folder)
    torch_extractor = MusiCoderFeatureExtractor(backend="torch")
    torch_extractor.save_pretrained(torch_folder)
    source = Path(feature_extraction_musicoder.__file__)
    for saved in (folder, torch_folder):
        for name in ("feature_extraction_musicoder.py", "feature_extraction_musicoder_torch.py"):
            assert (saved / name).read_text() == source.with_name(name).read_text(), f"{name} not saved in {saved}"
    clip = music_like_clip(seconds=2.0, seed=5)
    np.save(tmp_path / "clip.npy", clip)
    with torch.no_grad():
        expected = model(**feature_extractor(clip, sampling_rate=SAMPLING_RATE, return_tensors="pt")).logits
    np.save(tmp_path / "expected.npy", expected.numpy())
    np.save(tmp_path / "torch_features.npy", torch_extractor(clip, sampling_rate=SAMPLING_RATE)["input_features"][0])

    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["musicoder_hf"] = None  # any import of our package now fails, as on a machine without it
        import numpy as np, torch
        from transformers import (AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification,
                                  AutoModelForPreTraining, pipeline)
        folder = {str(folder)!r}
        try:
            import musicoder_hf
            raise SystemExit("musicoder_hf should not be importable here")
        except ImportError:
            pass
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        feature_extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
        classifier = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
        base = AutoModel.from_pretrained(folder, trust_remote_code=True)
        pretraining = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True)
        for obj in (config, feature_extractor, classifier, base, pretraining):
            assert type(obj).__module__.startswith("transformers_modules"), type(obj).__module__
        clip = np.load({str(tmp_path / "clip.npy")!r})
        with torch.no_grad():
            logits = classifier(**feature_extractor(clip, sampling_rate=44100, return_tensors="pt")).logits
        np.testing.assert_allclose(logits.numpy(), np.load({str(tmp_path / "expected.npy")!r}), atol=1e-5)
        result = pipeline("audio-classification", model=folder, trust_remote_code=True)(clip, top_k=2)
        assert len(result) == 2
        # the torch backend, from the sibling module copied next to the checkpoint
        torch_extractor = AutoFeatureExtractor.from_pretrained({str(torch_folder)!r}, trust_remote_code=True)
        assert torch_extractor.backend == "torch"
        backend_module = type(torch_extractor._torch_backend()).__module__
        assert backend_module.startswith("transformers_modules") and backend_module.endswith(
            "feature_extraction_musicoder_torch"
        ), backend_module
        features = torch_extractor(clip, sampling_rate=44100)["input_features"][0]
        np.testing.assert_allclose(features, np.load({str(tmp_path / "torch_features.npy")!r}), atol=1e-6)
        print("REMOTE_CODE_OK", type(classifier).__name__)
        """
    )
    environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "REMOTE_CODE_OK MusiCoderForSequenceClassification" in completed.stdout
