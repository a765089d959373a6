"""Fine-tune MusiCoder for genre-like classification or multi-label tagging with Accelerate.

    accelerate launch training/finetune.py --data_dir data/tasks/folk --model_name_or_path runs/pretrain/final \
        --output_dir runs/folk [--grid] [--from_scratch]

Writes best/ (the model that is best on validation, with its feature extractor) and metrics.json (validation and
test metrics). Every option: `python training/finetune.py --help`. The loop lives in `musicoder_hf.finetuning`.
"""

import logging
import sys

from musicoder_hf.finetuning import FinetuningArguments, finetune
from musicoder_hf.utils import command_line_parser, parse_command_line


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    args = parse_command_line(command_line_parser(FinetuningArguments, description=__doc__), argv)
    metrics = finetune(args)
    print(f"best on validation: {metrics['validation']}; test: {metrics.get('test')}; model in {args.output_dir}/best")
    return 0


if __name__ == "__main__":
    sys.exit(main())
