r"""Write a Hub-ready folder (and optionally upload it) from a trained MusiCoder.

    python training/push.py --model_dir runs/folk/best --output_dir runs/folk/hub --repo_id you/musicoder-folk \
        --metrics_file runs/folk/metrics.json [--pretraining_summary runs/pretrain/summary.json] [--push]

The folder holds safetensors weights, the feature extractor, the code files and `auto_map` for
`trust_remote_code=True`, and a README.md model card whose `model-index` carries the measured metrics.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path


from musicoder_hf.hub import prepare_hub_folder, push_folder_to_hub
from musicoder_hf.utils import command_line_parser, parse_command_line


@dataclass
class PushArguments:
    model_dir: str = field(metadata={"help": "the trained model's folder (e.g. runs/folk/best)"})
    output_dir: str = field(metadata={"help": "where the Hub-ready folder is written"})
    repo_id: str = field(metadata={"help": "namespace/name on the Hub (also names the card)"})
    metrics_file: str | None = field(default=None, metadata={"help": "metrics.json written by training/finetune.py"})
    pretraining_summary: str | None = field(
        default=None, metadata={"help": "summary.json written by training/pretrain.py"}
    )
    dataset_name: str | None = field(default=None, metadata={"help": "the fine-tuning dataset's name, for the card"})
    base_model: str | None = field(default=None, metadata={"help": "the pre-trained model fine-tuned, for the card"})
    push: bool = field(default=False, metadata={"help": "upload with push_to_hub (needs network and a token)"})
    private: bool = field(default=False, metadata={"help": "with --push: create the repo as private"})




def main(argv=None) -> int:
    args = parse_command_line(command_line_parser(PushArguments, description=__doc__), argv)
    if not Path(args.model_dir).is_dir():  # else from_pretrained would take the path for a Hub repo id
        raise SystemExit(f"push: error: no model folder at {args.model_dir}")
    try:
        folder = prepare_hub_folder(
            args.model_dir, args.output_dir, args.repo_id, metrics_file=args.metrics_file,
            pretraining_summary_file=args.pretraining_summary, dataset_name=args.dataset_name,
            base_model=args.base_model,
        )
        print(f"Hub-ready folder: {folder}")
        if args.push:
            push_folder_to_hub(folder, args.repo_id, private=args.private or None)
            print(f"pushed to https://huggingface.co/{args.repo_id}")
    except (OSError, ValueError) as err:  # a missing or foreign folder, a bad metrics file, a refused upload
        raise SystemExit(f"push: error: {err}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
