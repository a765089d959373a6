"""Macro ROC-AUC or PR-AUC over tags (MTG-Jamendo protocol), shipped in the package so that it loads offline.

    evaluate.load(".../metrics/auc_macro", config_name="roc_auc_macro")  # or config_name="pr_auc_macro"
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


# config_name -> the per-class score it averages
SCORES = {"roc_auc_macro": roc_auc_score, "pr_auc_macro": average_precision_score}

_DESCRIPTION = """Area under the ROC curve (`roc_auc_macro`) or under the precision-recall curve, i.e. average precision
(`pr_auc_macro`), of each class (one-vs-rest), averaged with equal weight per class. Classes whose references are all
positive or all negative have no such curve: they are left out of the average and counted in `num_classes_skipped`."""
_KWARGS_DESCRIPTION = """
Args:
    prediction_scores (`list[list[float]]`): per-class scores (probabilities or logits), shape (n, num_classes).
    references (`list[list[int]]`): multi-hot ground truth, shape (n, num_classes).
Returns:
    roc_auc_macro or pr_auc_macro (`float`, after the config name), num_classes_scored (`int`),
    num_classes_skipped (`int`).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AucMacro(evaluate.Metric):
    def _info(self):
        if self.config_name not in SCORES:
            raise ValueError(f"config_name must be one of {sorted(SCORES)}, got {self.config_name!r}.")
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
        scores, references = np.asarray(prediction_scores, dtype=np.float64), np.asarray(references, dtype=np.int64)
        score_function = SCORES[self.config_name]
        values = [
            score_function(references[:, k], scores[:, k])
            for k in range(references.shape[1])
            if 0 < references[:, k].sum() < len(references)
        ]
        return {
            self.config_name: float(np.mean(values)) if values else float("nan"),
            "num_classes_scored": len(values),
            "num_classes_skipped": references.shape[1] - len(values),
        }
