"""Fine-tune MusiCoder for genre-like classification or multi-label tagging with Accelerate.

    accelerate launch training/finetune.py --data_dir data/tasks/folk --model_name_or_path runs/pretrain/final \
        --output_dir runs/folk [--grid] [--from_scratch]

Writes best/ (the model that is best on validation, with its feature extractor) and metrics.json (validation and
test metrics). Every option: `python training/finetune.py --help`. The loop lives in `musicoder_hf.finetuning`.
"""

import logging
import sys
from pathlib import Path

# training/evaluate.py would shadow the `evaluate` package for scripts run from this folder (sys.path[0]).
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from transformers import HfArgumentParser  # noqa: E402

from musicoder_hf.finetuning import FinetuningArguments, finetune  # noqa: E402


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    (args,) = HfArgumentParser(FinetuningArguments).parse_args_into_dataclasses(args=argv)
    metrics = finetune(args)
    print(f"best on validation: {metrics['validation']}; test: {metrics.get('test')}; model in {args.output_dir}/best")
    return 0


if __name__ == "__main__":
    sys.exit(main())
