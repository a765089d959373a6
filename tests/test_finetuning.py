"""Fine-tuning loop, chunked evaluation and the shipped metrics."""

import json

import numpy as np
import pytest
import torch
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features, List, Value
from sklearn.metrics import average_precision_score, roc_auc_score
from pretraining_helpers import TINY, structured_clips

from musicoder_hf import MusiCoderConfig, MusiCoderForSequenceClassification
from musicoder_hf.audio import chunk_spans
from musicoder_hf.evaluation import aggregate_by_group, compute_metrics, predict_logits
from musicoder_hf.finetuning import FinetuningArguments, finetune, grid_points

NAMES = ["german", "chinese", "irish"]


def labeled_features(path, multi_label=False):
    def split(count, seed):
        clips = structured_clips(count, seed)
        if multi_label:
            tags = [[i % 3] if i % 2 else [i % 3, (i + 1) % 3] for i in range(count)]
            for clip, tag in zip(clips, tags):
                for t in tag:  # each tag lifts its own band of channels
                    clip[:, 100 * t : 100 * t + 100] += 1.0
            label_feature, labels = {"labels": List(ClassLabel(names=NAMES))}, {"labels": tags}
        else:
            classes = [i % 3 for i in range(count)]
            clips = [c + 0.8 * (k - 1) for c, k in zip(clips, classes)]
            label_feature, labels = {"label": ClassLabel(names=NAMES)}, {"label": classes}
        features = Features({"input_features": Array2D(shape=(None, 324), dtype="float32"),
                             "piece_id": Value("int64"), **label_feature})
        return Dataset.from_dict({"input_features": clips, "piece_id": list(range(count)), **labels}, features)

    DatasetDict({"train": split(36, 0), "validation": split(12, 1), "test": split(12, 2)}).save_to_disk(path)
    return path


@pytest.mark.parametrize("multi_label", [False, True])
def test_finetune_learns_keeps_best_and_writes_metrics(tmp_path, multi_label):
    data = labeled_features(tmp_path / "data", multi_label)
    metrics = finetune(FinetuningArguments(
        data_dir=str(data), output_dir=str(tmp_path / "run"), from_scratch=True, config_overrides=TINY,
        learning_rate=1e-3, num_epochs=4, per_device_train_batch_size=8, cpu=True, max_frames=64,
        grid_overrides="learning_rate=1e-3|1e-6",
    ))
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["validation"] == metrics["validation"] and "test" in written
    assert len(written["runs"]) == 2 and written["best_hyperparameters"]["learning_rate"] == 1e-3
    model = MusiCoderForSequenceClassification.from_pretrained(tmp_path / "run" / "best")
    assert [model.config.id2label[i] for i in range(3)] == NAMES
    if multi_label:
        assert model.config.problem_type == "multi_label_classification"
        assert metrics["test"]["roc_auc_macro"] > 0.8
    else:
        assert metrics["metric_for_best_model"] == "accuracy"
        assert metrics["test"]["accuracy"] > 0.6  # chance is 1/3
    assert not any(p.name.startswith("run-") for p in (tmp_path / "run").rglob("*"))  # only one model kept


def test_table4_grid_has_the_papers_54_settings():
    points = grid_points(FinetuningArguments(data_dir="-", output_dir="-", grid=True))
    assert len(points) == 54
    assert {p["learning_rate"] for p in points} == {2e-5, 3e-5, 5e-5}
    assert {p["per_device_train_batch_size"] for p in points} == {16, 24, 32}


def test_chunk_spans_cover_every_frame_with_half_overlap():
    spans = chunk_spans(3500, window=1600, hop=800)
    assert spans == [(0, 1600), (800, 2400), (1600, 3200), (1900, 3500)]
    covered = np.zeros(3500, bool)
    for start, stop in spans:
        covered[start:stop] = True
    assert covered.all()
    assert chunk_spans(900, 1600, 800) == [(0, 900)]


def test_predict_logits_is_the_mean_of_chunk_logits():
    torch.manual_seed(0)
    model = MusiCoderForSequenceClassification(MusiCoderConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, num_labels=3,
        max_position_embeddings=64)).eval()
    long_clip, short_clip = torch.randn(150, 324), torch.randn(20, 324)
    logits = predict_logits(model, [long_clip, short_clip], batch_size=2)
    with torch.no_grad():
        by_hand = torch.stack([model(long_clip[a:b][None]).logits[0] for a, b in chunk_spans(150, 64, 32)]).mean(0)
        short = model(short_clip[None]).logits[0]
    np.testing.assert_allclose(logits[0], by_hand.numpy(), atol=1e-5)
    np.testing.assert_allclose(logits[1], short.numpy(), atol=1e-5)


def test_metrics_match_sklearn_and_groups_average():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((40, 4))
    multi_hot = (rng.random((40, 4)) > 0.6).astype(int)
    metrics = compute_metrics(logits, multi_hot, "multi_label_classification")
    scores = 1 / (1 + np.exp(-logits))
    assert metrics["roc_auc_macro"] == pytest.approx(roc_auc_score(multi_hot, scores, average="macro"))
    assert metrics["pr_auc_macro"] == pytest.approx(average_precision_score(multi_hot, scores, average="macro"))
    labels = rng.integers(0, 4, 40)
    assert compute_metrics(logits, labels, "single_label_classification")["accuracy"] == pytest.approx(
        np.mean(logits.argmax(1) == labels))
    groups, means = aggregate_by_group(np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]]), ["a", "b", "a"])
    assert groups == ["a", "b"] and means.tolist() == [[3.0, 2.5], [3.0, 2.0]]
