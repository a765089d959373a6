"""Clip-level evaluation: inference over any length, per-track aggregation, the paper's metrics, and the
linear probe of frozen embeddings.

Metrics go through `evaluate` with modules shipped in `musicoder_hf/metrics/` (the Hub copies do not load offline):
accuracy for single-label tasks (GTZAN protocol), ROC-AUC macro and PR-AUC macro for tagging (MTG-Jamendo protocol).
"""

import math
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path

import evaluate
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .audio import refuse_window_arguments
from .data.labeled import MULTI_LABEL
from .data_collator import pad_frames

METRICS_DIR = Path(__file__).parent / "metrics"
# metric name -> (module folder under METRICS_DIR, config name)
SHIPPED_METRICS = {
    "accuracy": ("accuracy", None),
    "roc_auc_macro": ("auc_macro", "roc_auc_macro"),
    "pr_auc_macro": ("auc_macro", "pr_auc_macro"),
}


@cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """One of the shipped metrics: "accuracy", "roc_auc_macro" or "pr_auc_macro"."""
    if name not in SHIPPED_METRICS:
        raise ValueError(f"Unknown metric {name!r}; the shipped metrics are {sorted(SHIPPED_METRICS)}.")
    folder, config_name = SHIPPED_METRICS[name]
    return evaluate.load(str(METRICS_DIR / folder), config_name=config_name)


def compute_metrics(logits: np.ndarray, references: np.ndarray, problem_type: str) -> dict[str, float]:
    """Single-label: accuracy (+ one-vs-rest ROC/PR-AUC macro); multi-label: ROC-AUC and PR-AUC macro."""
    logits = np.asarray(logits, dtype=np.float64)
    if problem_type == "multi_label_classification":
        scores = 1.0 / (1.0 + np.exp(-logits))
        multi_hot = np.asarray(references).astype(np.int64)
        metrics = {}
    else:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
        labels = np.asarray(references).astype(np.int64)
        multi_hot = np.eye(logits.shape[1], dtype=np.int64)[labels]
        metrics = load_metric("accuracy").compute(predictions=logits.argmax(axis=1), references=labels)
    metrics["roc_auc_macro"] = load_metric("roc_auc_macro").compute(prediction_scores=scores, references=multi_hot)[
        "roc_auc_macro"
    ]
    metrics["pr_auc_macro"] = load_metric("pr_auc_macro").compute(prediction_scores=scores, references=multi_hot)[
        "pr_auc_macro"
    ]
    return metrics


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module,
    clips: Sequence[np.ndarray | torch.Tensor],
    batch_size: int = 8,
    window=None,
    hop=None,
    frame_stride: int = 1,
) -> np.ndarray:
    """Clip logits from a sequence-classification model, for featurised clips (frames x 324) of any length.

    Clips are padded into batches of `batch_size` and passed to the model, which reads clips longer than its window in
    windows itself (`window_spans`) and pools over every frame: the logits are `model(**feature_extractor(clip))`'s,
    as in the pipeline. `frame_stride` N > 1 reads frames 0, N, 2N, ... at their positions (inference patchout), as
    `feature_extractor(clip, frame_stride=N)` does.
    """
    refuse_window_arguments(window, hop)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits = []
    for first in range(0, len(clips), batch_size):
        batch = pad_frames([torch.as_tensor(np.asarray(clip), dtype=torch.float32)
                            for clip in clips[first : first + batch_size]], frame_stride=frame_stride)
        logits.append(model(**{key: value.to(device) for key, value in batch.items()}).logits.float().cpu())
    model.train(was_training)
    return torch.cat(logits).numpy()


def aggregate_by_group(values: np.ndarray, groups: Sequence) -> tuple[list, np.ndarray]:
    """Mean of `values` rows per group (e.g. the clips of one track), groups in order of first appearance."""
    order = list(dict.fromkeys(groups))
    index = {group: i for i, group in enumerate(order)}
    rows = np.array([index[group] for group in groups])
    totals = np.zeros((len(order), values.shape[1]))
    np.add.at(totals, rows, values)
    return order, totals / np.bincount(rows, minlength=len(order))[:, None]


# Inverse L2 strengths tried by `linear_probe`, one decade apart.
PROBE_C_VALUES = (0.01, 0.1, 1.0, 10.0)


def selection_metric(problem_type: str) -> str:
    """The metric that picks a model on validation: accuracy (single-label) or PR-AUC macro (multi-label)."""
    return "pr_auc_macro" if problem_type == MULTI_LABEL else "accuracy"


def estimator_logits(estimator, features: np.ndarray, problem_type: str) -> np.ndarray:
    """A fitted scikit-learn estimator's scores as logits, so that `compute_metrics` applies softmax or sigmoid as it
    does for the model's logits."""
    if hasattr(estimator, "decision_function"):
        scores = np.asarray(estimator.decision_function(features), dtype=np.float64).reshape(len(features), -1)
        if problem_type != MULTI_LABEL and scores.shape[1] == 1:  # binary: one score, the second class's logit
            scores = np.concatenate([np.zeros_like(scores), scores], axis=1)
        return scores
    probabilities = np.clip(np.asarray(estimator.predict_proba(features), dtype=np.float64), 1e-7, 1 - 1e-7)
    if problem_type == MULTI_LABEL:
        return np.log(probabilities / (1 - probabilities))
    return np.log(probabilities)


def select_on_validation(make_estimator: Callable, values: Sequence, features: Mapping[str, np.ndarray],
                         targets: Mapping[str, np.ndarray], problem_type: str) -> dict:
    """
    Fit `make_estimator(value)` on the `"train"` split for each value, keep the one with the best `selection_metric` on
    `"validation"` (a NaN score never wins), and score `"test"` with it if that split is given.

    Args:
        features, targets: split name -> one row per clip (targets: class ids, or multi-hot rows for multi-label).

    Returns:
        `{"selected": {"value": ...}, "validation": metrics, "test": metrics, "test_logits": list}` (the last two only
        with a `"test"` split).
    """
    metric = selection_metric(problem_type)
    best = None
    for value in values:
        estimator = make_estimator(value).fit(features["train"], targets["train"])
        validation = compute_metrics(estimator_logits(estimator, features["validation"], problem_type),
                                     targets["validation"], problem_type)
        score = validation[metric]
        if best is None or (not math.isnan(score) and (math.isnan(best[0]) or score > best[0])):
            best = (score, value, validation, estimator)
    _, value, validation, estimator = best
    result = {"selected": {"value": value}, "validation": validation}
    if "test" in features:
        logits = estimator_logits(estimator, features["test"], problem_type)
        result.update(test=compute_metrics(logits, targets["test"], problem_type), test_logits=logits.tolist())
    return result


def linear_probe(features: Mapping[str, np.ndarray], targets: Mapping[str, np.ndarray], problem_type: str,
                 c_values: Sequence[float] = PROBE_C_VALUES) -> dict:
    """
    The linear probe of frozen embeddings (e.g. `MusiCoderEmbedder` outputs, flattened) or of any clip features:
    standardisation, then logistic regression (one-vs-rest for multi-label tagging), its inverse L2 strength `C`
    chosen on validation. The same protocol scores the hand-crafted baselines, so the two compare fairly.

        embeddings = {split: np.stack([e.embeddings.flatten().numpy() for e in embedder(clips[split])])
                      for split in ("train", "validation", "test")}
        linear_probe(embeddings, labels, "single_label_classification")["test"]["accuracy"]

    Args:
        features, targets: split name (`"train"`, `"validation"`, optionally `"test"`) -> one row per clip; targets
            are class ids, or multi-hot rows for `"multi_label_classification"`.
        c_values: the values of `C` tried.

    Returns: as [`select_on_validation`], with the chosen `C` under `"selected"`.
    """
    def make_estimator(c):
        model = LogisticRegression(C=c, max_iter=5000)
        return make_pipeline(StandardScaler(), OneVsRestClassifier(model) if problem_type == MULTI_LABEL else model)

    return select_on_validation(make_estimator, c_values, features, targets, problem_type)
