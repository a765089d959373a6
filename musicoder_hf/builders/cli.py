"""`musicoder-data`: build the corpus and the labeled tasks, featurise an audio folder.

    musicoder-data build-corpus --output_dir data/corpus --minutes 60
    musicoder-data build-tasks --output_dir data/tasks --limit 30
    musicoder-data featurize --input_dir data/corpus --output_dir data/corpus_features
    musicoder-data feature-stats --input_dir data/corpus --output_dir runs/preprocessor

`musicoder-data <command> --help` lists a command's options. Exit status: 0 success, 2 bad usage (an unknown command
or option), 1 failure (a one-line message on stderr).
"""

import argparse
import importlib
import sys

# command -> ("module:function" that runs it with argv, summary)
COMMANDS = {
    "build-corpus": ("musicoder_hf.builders.corpus:main", "unlabeled pre-training clips from Debian soundtrack packages"),
    "build-tasks": ("musicoder_hf.builders.tasks:main", "labeled folk-tradition and instrument-tagging tasks from music21"),
    "featurize": ("musicoder_hf.data.features:main", "precompute 324-dim frames of an audio folder into Arrow"),
    "feature-stats": ("musicoder_hf.data.features:statistics_main",
                      "per-channel statistics of an audio folder: a normalization='dataset' feature extractor"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="musicoder-data",
        usage="%(prog)s [-h] {" + ",".join(COMMANDS) + "} [options]",
        description="Build the pre-training corpus and the labeled tasks; featurise an audio folder.",
        epilog="commands:\n" + "\n".join(f"  {name:14s} {summary}" for name, (_, summary) in COMMANDS.items())
        + "\n\n`musicoder-data <command> --help` lists a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS), help="what to run (see below)")
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        # The command's own parser reads the rest (its --help included).
        module, function = COMMANDS[argv[0]][0].split(":")
        return getattr(importlib.import_module(module), function)(argv[1:])
    _parser().parse_args(argv)  # --help: exit 0; no or an unknown command: exit 2 with the list of commands
    return 2


if __name__ == "__main__":
    sys.exit(main())
