"""`musicoder-data`: build the embedded corpus and tasks (`musicoder-data build-corpus --help`)."""

import sys

COMMANDS = {
    "build-corpus": ("musicoder_hf.data.corpus", "unlabeled pre-training clips from Debian game-soundtrack packages"),
    "build-tasks": ("musicoder_hf.data.tasks", "labeled folk-tradition and instrument-tagging tasks from music21"),
    "featurize": ("musicoder_hf.data.features", "precompute 324-dim frames of an audio folder into Arrow"),
}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print("usage: musicoder-data {" + ",".join(COMMANDS) + "} [options]\n")
        for name, (_, summary) in COMMANDS.items():
            print(f"  {name:14s} {summary}")
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    import importlib

    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
