"""Macro PR-AUC (average precision) over tags (MTG-Jamendo protocol), shipped in the repo so it loads offline."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import average_precision_score


_DESCRIPTION = """Area under the precision-recall curve (average precision) of each class, averaged with equal weight per class.
Classes whose references are all positive or all negative have no meaningful PR curve: they are left out of the average and
counted in `num_classes_skipped`."""
_KWARGS_DESCRIPTION = """
Args:
    prediction_scores (`list[list[float]]`): per-class scores (probabilities or logits), shape (n, num_classes).
    references (`list[list[int]]`): multi-hot ground truth, shape (n, num_classes).
Returns:
    pr_auc_macro (`float`), num_classes_scored (`int`), num_classes_skipped (`int`).
"""


def per_class_scores(score_function, scores, references):
    scores, references = np.asarray(scores, dtype=np.float64), np.asarray(references, dtype=np.int64)
    values = [
        score_function(references[:, k], scores[:, k])
        for k in range(references.shape[1])
        if 0 < references[:, k].sum() < len(references)
    ]
    return values, references.shape[1] - len(values)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PrAucMacro(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "prediction_scores": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, prediction_scores, references):
        values, skipped = per_class_scores(average_precision_score, prediction_scores, references)
        return {
            "pr_auc_macro": float(np.mean(values)) if values else float("nan"),
            "num_classes_scored": len(values),
            "num_classes_skipped": skipped,
        }
