"""Pre-train MusiCoder (CFM + CCM masked reconstruction) with Accelerate.

    accelerate launch training/pretrain.py --data_dir data/corpus_features --output_dir runs/pretrain \
        --preset musicoder-base --max_steps 200000

Every option: `python training/pretrain.py --help`. The loop lives in `musicoder_hf.pretraining`.
"""

import logging
import sys

from musicoder_hf.pretraining import PretrainingArguments, pretrain
from musicoder_hf.utils import command_line_parser, parse_command_line


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file otherwise
    args = parse_command_line(command_line_parser(PretrainingArguments, description=__doc__), argv)
    summary = pretrain(args)
    print(f"pre-training done: {summary['steps']} steps, final loss {summary['final_loss']}, "
          f"model in {args.output_dir}/final")
    return 0


if __name__ == "__main__":
    sys.exit(main())
