"""The checkpoint shipped in the repository (`pretrained/musicoder-small`), as a user loads it: Auto classes, the
embedder, HEAR, fine-tuning with the defaults and the pipeline after it; its card; its code files; and the build
step that normalises its training frames."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import soundfile
import torch
from datasets import load_dataset
from huggingface_hub import ModelCard
from transformers import AutoFeatureExtractor, AutoModel, pipeline

import musicoder_hf
from musicoder_hf import MusiCoderEmbedder, MusiCoderFeatureExtractor, MusiCoderModel, hear
from musicoder_hf.finetuning import SHIPPED_CHECKPOINT, FinetuningArguments, finetune
from tests.test_hub_integration import music_like_clip

REPOSITORY = Path(__file__).resolve().parents[1]
SHIPPED = REPOSITORY / SHIPPED_CHECKPOINT


def test_shipped_checkpoint_loads_with_auto_classes_embedder_and_hear():
    model = AutoModel.from_pretrained(SHIPPED)
    assert isinstance(model, MusiCoderModel)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size) == (4, 256)
    assert config.classifier_pooling == "mean_std"
    # its window is the length of its pre-training crops: it never trained on longer sequences
    summary = json.loads((SHIPPED / "training_summary.json").read_text())
    assert config.max_position_embeddings == summary["arguments"]["max_frames"] == 300
    assert (SHIPPED / "model.safetensors").stat().st_size < 25 * 2**20
    feature_extractor = AutoFeatureExtractor.from_pretrained(SHIPPED)
    assert feature_extractor.normalization == "dataset"
    assert len(feature_extractor.feature_mean) == len(feature_extractor.feature_std) == config.feature_size
    assert min(feature_extractor.feature_std) > 0 and np.isfinite(feature_extractor.feature_mean).all()

    clip = music_like_clip(seconds=4.0, seed=3)
    embedder = MusiCoderEmbedder.from_pretrained(SHIPPED)
    embeddings = embedder(clip, sampling_rate=44100).embeddings
    assert embeddings.shape == (5, 2 * 256)  # every layer, mean and std over time: the checkpoint's pooling
    assert torch.isfinite(embeddings).all() and embeddings[-1, 256:].min() > 0
    model_for_hear = hear.load_model(str(SHIPPED))
    scene = hear.get_scene_embeddings(torch.from_numpy(np.stack([clip, clip[::-1].copy()])), model_for_hear)
    assert scene.shape == (2, model_for_hear.scene_embedding_size) == (2, 4 * 2 * 256)


def test_shipped_checkpoint_card_reports_measured_metrics_data_and_licences():
    card = ModelCard.load(SHIPPED / "README.md")
    results = card.data.eval_results or []
    if results:  # written by `make pretrained` from `training/experiments.py --shipped_only`
        assert {r.metric_type for r in results} >= {"accuracy", "roc_auc_macro"}
        assert all(0.0 <= r.metric_value <= 1.0 for r in results)
    else:  # the card says it is not evaluated, and how to evaluate it
        assert "Not evaluated yet" in card.text and "--shipped_only" in card.text
    for fact in ("CC-BY-SA-3.0", "GPL-2+", "wesnoth-1.16-music", "Rebuild: `make pretrained"):
        assert fact in card.text, fact
    summary = json.loads((SHIPPED / "training_summary.json").read_text())
    assert summary["corpus"]["hours"] > 15 and summary["pretraining"]["steps"] > 0


def test_shipped_code_files_are_the_packages_own():
    source = Path(musicoder_hf.__file__).resolve().parent
    for name in ("configuration_musicoder.py", "modeling_musicoder.py", "feature_extraction_musicoder.py",
                 "feature_extraction_musicoder_torch.py"):
        assert (SHIPPED / name).read_text() == (source / name).read_text(), (
            f"{SHIPPED_CHECKPOINT}/{name} differs from the package: refresh it with "
            "`python training/build_pretrained.py --card_only`")


def test_shipped_checkpoint_loads_with_remote_code_without_the_package(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["musicoder_hf"] = None
        import numpy as np
        from transformers import AutoFeatureExtractor, AutoModel
        model = AutoModel.from_pretrained({str(SHIPPED)!r}, trust_remote_code=True)
        extractor = AutoFeatureExtractor.from_pretrained({str(SHIPPED)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        inputs = extractor(np.random.default_rng(0).uniform(-0.1, 0.1, 44100).astype("float32"),
                           sampling_rate=44100, return_tensors="pt")
        print("OK", tuple(model(**inputs).last_hidden_state.shape))
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                               env={"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
                                    "PATH": "/usr/bin:/bin"}, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "OK (1, 44, 256)" in completed.stdout


def write_labeled_folder(root: Path, clips_per_class: int = 6) -> Path:
    """Two classes of music-like clips in different registers, as label subfolders."""
    for label, transpose in (("low", 0.5), ("high", 2.0)):
        (root / label).mkdir(parents=True)
        for k in range(clips_per_class):
            clip = music_like_clip(seconds=3.0, seed=10 * k + (label == "high"))
            stretched = np.interp(np.arange(0, len(clip), transpose) % len(clip), np.arange(len(clip)), clip)
            soundfile.write(root / label / f"{label}_{k}.wav", stretched[: len(clip)].astype(np.float32), 44100)
    return root


def test_finetune_defaults_start_from_the_shipped_checkpoint_and_serve_the_pipeline(tmp_path, monkeypatch):
    folder = write_labeled_folder(tmp_path / "my_music")
    monkeypatch.chdir(REPOSITORY)  # the default --model_name_or_path is relative to the repository root
    metrics = finetune(FinetuningArguments(data_dir=str(folder), output_dir=str(tmp_path / "run"), num_epochs=1,
                                           probe_epochs=5, max_frames=64, cpu=True))
    assert metrics["initialisation"] == SHIPPED_CHECKPOINT
    best = tmp_path / "run" / "best"
    # the fine-tuned model ships the checkpoint's own (dataset-normalising) extractor and statistics pooling
    assert MusiCoderFeatureExtractor.from_pretrained(best).to_dict()["feature_mean"] == \
        MusiCoderFeatureExtractor.from_pretrained(SHIPPED).to_dict()["feature_mean"]
    assert json.loads((best / "config.json").read_text())["classifier_pooling"] == "mean_std"
    prediction = pipeline("audio-classification", model=str(best))(str(folder / "high" / "high_0.wav"), top_k=2)
    assert {p["label"] for p in prediction} == {"low", "high"}
    assert abs(sum(p["score"] for p in prediction) - 1.0) < 1e-5


def test_default_checkpoint_outside_the_repository_is_named_in_the_error(tmp_path, monkeypatch):
    folder = write_labeled_folder(tmp_path / "my_music", clips_per_class=3)
    monkeypatch.chdir(tmp_path)
    try:
        finetune(FinetuningArguments(data_dir=str(folder), output_dir=str(tmp_path / "run"), cpu=True))
    except ValueError as error:
        assert SHIPPED_CHECKPOINT in str(error) and "--model_name_or_path" in str(error)
    else:
        raise AssertionError("fine-tuning without the shipped folder should name it")


def test_build_normalises_the_corpus_frames_as_the_saved_extractor_does(tmp_path):
    """`dataset_normalised_frames`: the training frames are exactly what the checkpoint's extractor gives on the
    same audio, and its statistics are the training split's."""
    from training.build_pretrained import dataset_normalised_frames

    corpus = tmp_path / "corpus"
    for split, count in (("train", 3), ("validation", 1)):
        (corpus / split).mkdir(parents=True)
        for k in range(count):
            soundfile.write(corpus / split / f"{k}.flac", music_like_clip(2.0, seed=k + 10 * (split == "train")),
                            44100, subtype="PCM_16")
    (corpus / "manifest.json").write_text(json.dumps({"clips": 4}))
    target, feature_extractor = dataset_normalised_frames(corpus, tmp_path)
    frames = __import__("datasets").load_from_disk(str(target))
    assert MusiCoderFeatureExtractor.from_pretrained(target).to_dict() == feature_extractor.to_dict()
    audio = load_dataset("audiofolder", data_dir=str(corpus))
    train_frames = np.concatenate([np.asarray(f) for f in frames["train"].with_format("numpy")["input_features"]])
    np.testing.assert_allclose(train_frames.mean(0), 0.0, atol=1e-4)  # the train split's own statistics
    clip = audio["validation"][0]["audio"]
    expected = feature_extractor(clip["array"], sampling_rate=clip["sampling_rate"])["input_features"][0]
    np.testing.assert_allclose(np.asarray(frames["validation"][0]["input_features"]), expected, atol=2e-4)
