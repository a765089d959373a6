"""Score a fine-tuned MusiCoder on a labeled split: accuracy, ROC-AUC macro, PR-AUC macro.

    python training/evaluate.py --model_dir runs/folk/best --data_dir data/tasks/folk --split test \
        [--group_column piece_id] [--output_file runs/folk/test_metrics.json]

Clips of any length are scored by chunks (mean of chunk logits); with --group_column, clip logits are averaged per
track/piece before scoring. Metrics use the `evaluate` modules shipped in musicoder_hf/metrics (offline).
"""

import argparse
import json
import sys
from pathlib import Path


# Run as a script, this file's folder is sys.path[0] and "evaluate.py" would shadow the `evaluate` package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from musicoder_hf import MusiCoderForSequenceClassification  # noqa: E402
from musicoder_hf.finetuning import evaluate_split, label_schema, load_featurised  # noqa: E402
from musicoder_hf.training_utils import write_json  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--data_dir", required=True, help="labeled audio folder or featurised DatasetDict")
    parser.add_argument("--split", default="test")
    parser.add_argument("--group_column", default=None)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--output_file", default=None)
    args = parser.parse_args(argv)

    data = load_featurised(args.data_dir)
    if args.split not in data:
        raise SystemExit(f"No split {args.split!r} in {args.data_dir}; it has {list(data)}.")
    label_column, problem_type, names = label_schema(data[args.split])
    model = MusiCoderForSequenceClassification.from_pretrained(args.model_dir)
    model_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if model_names != names:
        raise SystemExit(f"The model's labels {model_names} differ from the dataset's {names}.")
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    metrics = evaluate_split(
        model, data[args.split], label_column, len(names), problem_type == "multi_label_classification",
        problem_type, args.group_column, args.batch_size,
    )
    report = {"model": args.model_dir, "data": args.data_dir, "split": args.split, "problem_type": problem_type,
              "num_examples": len(data[args.split]), **metrics}
    print(json.dumps(report, indent=2))
    if args.output_file:
        write_json(args.output_file, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
