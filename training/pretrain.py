"""Pre-train MusiCoder (CFM + CCM masked reconstruction) with Accelerate.

    accelerate launch training/pretrain.py --data_dir data/corpus_features --output_dir runs/pretrain \
        --preset musicoder-base --max_steps 200000

Every option: `python training/pretrain.py --help`. The loop lives in `musicoder_hf.pretraining`.
"""

import logging
import sys
from pathlib import Path

# training/evaluate.py would shadow the `evaluate` package for scripts run from this folder (sys.path[0]).
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from transformers import HfArgumentParser  # noqa: E402

from musicoder_hf.pretraining import PretrainingArguments, pretrain  # noqa: E402


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file otherwise
    (args,) = HfArgumentParser(PretrainingArguments).parse_args_into_dataclasses(args=argv)
    summary = pretrain(args)
    print(f"pre-training done: {summary['steps']} steps, final loss {summary['final_loss']}, "
          f"model in {args.output_dir}/final")
    return 0


if __name__ == "__main__":
    sys.exit(main())
