"""Write a Hub-ready folder (and optionally upload it) from a trained MusiCoder.

    python training/push.py --model_dir runs/folk/best --output_dir runs/folk/hub --repo_id you/musicoder-folk \
        --metrics_file runs/folk/metrics.json [--pretraining_summary runs/pretrain/summary.json] [--push]

The folder holds safetensors weights, the feature extractor, the code files and `auto_map` for
`trust_remote_code=True`, and a README.md model card whose `model-index` carries the measured metrics.
"""

import argparse
import sys
from pathlib import Path

# training/evaluate.py would shadow the `evaluate` package for scripts run from this folder (sys.path[0]).
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from musicoder_hf.hub import prepare_hub_folder, push_folder_to_hub  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--repo_id", required=True, help="namespace/name on the Hub (also names the card)")
    parser.add_argument("--metrics_file", default=None, help="metrics.json written by training/finetune.py")
    parser.add_argument("--pretraining_summary", default=None, help="summary.json written by training/pretrain.py")
    parser.add_argument("--dataset_name", default=None)
    parser.add_argument("--base_model", default=None)
    parser.add_argument("--push", action="store_true", help="upload with push_to_hub (needs network and a token)")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    folder = prepare_hub_folder(
        args.model_dir, args.output_dir, args.repo_id, metrics_file=args.metrics_file,
        pretraining_summary_file=args.pretraining_summary, dataset_name=args.dataset_name, base_model=args.base_model,
    )
    print(f"Hub-ready folder: {folder}")
    if args.push:
        push_folder_to_hub(folder, args.repo_id, private=args.private or None)
        print(f"pushed to https://huggingface.co/{args.repo_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
