r"""Score a fine-tuned MusiCoder on a labeled split: accuracy, ROC-AUC macro, PR-AUC macro.

    python training/evaluate_checkpoint.py --model_dir runs/folk/best --data_dir data/tasks/folk --split test \
        [--group_column piece_id] [--output_file runs/folk/test_metrics.json]

Clips of any length are scored by chunks (mean of chunk logits); with --group_column, clip logits are averaged per
track/piece before scoring. Metrics use the `evaluate` modules shipped in musicoder_hf/metrics (offline).
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from musicoder_hf import MusiCoderForSequenceClassification
from musicoder_hf.data.labeled import label_info
from musicoder_hf.finetuning import evaluate_split, load_featurised, checkpoint_feature_extractor
from musicoder_hf.utils import command_line_parser, parse_command_line, write_json


@dataclass
class EvaluationArguments:
    model_dir: str = field(metadata={"help": "the fine-tuned model's folder (e.g. runs/folk/best)"})
    data_dir: str = field(metadata={"help": "labeled audio folder or featurised DatasetDict"})
    split: str = field(default="test", metadata={"help": "the split to score"})
    group_column: str | None = field(
        default=None, metadata={"help": "average clip logits per value of this column (e.g. piece_id) before scoring"}
    )
    batch_size: int = field(default=16, metadata={"help": "clips per forward pass"})
    output_file: str | None = field(default=None, metadata={"help": "also write the report to this JSON file"})




def main(argv=None) -> int:
    args = parse_command_line(command_line_parser(EvaluationArguments, description=__doc__), argv)
    if not Path(args.model_dir).is_dir():  # else from_pretrained would take the path for a Hub repo id
        raise SystemExit(f"evaluate_checkpoint: error: no model folder at {args.model_dir}")

    try:  # a missing or malformed folder: one line naming it, not a traceback
        data, _ = load_featurised(args.data_dir, feature_extractor=checkpoint_feature_extractor(args.model_dir))
        if args.split not in data:
            raise ValueError(f"No split {args.split!r} in {args.data_dir}; it has {list(data)}.")
        info = label_info(data[args.split])
        model = MusiCoderForSequenceClassification.from_pretrained(args.model_dir)
    except (OSError, ValueError) as err:
        raise SystemExit(f"evaluate_checkpoint: error: {err}") from None
    model_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if model_names != info.names:
        raise SystemExit(f"The model's labels {model_names} differ from the dataset's {info.names}.")
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    metrics = evaluate_split(
        model, data[args.split], info.label_column, len(info.names),
        info.problem_type == "multi_label_classification", info.problem_type, args.group_column, args.batch_size,
    )
    report = {"model": args.model_dir, "data": args.data_dir, "split": args.split, "problem_type": info.problem_type,
              "num_examples": len(data[args.split]), **metrics}
    print(json.dumps(report, indent=2))
    if args.output_file:
        write_json(args.output_file, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
