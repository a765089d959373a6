"""The versions musicoder-hf runs with, and the one pairing pip cannot check: torchcodec must suit torch.

    python -m musicoder_hf.versions                                   # print them; fail if torchcodec does not load
    python -m musicoder_hf.versions --expect constraints/oldest.txt   # ... and check they are the pinned ones

`datasets` decodes audio with torchcodec, whose wheels on PyPI from 0.14 on are linked against CUDA libraries
(libnvrtc) that only torch's CUDA build installs, and whose metadata says nothing of it: next to a CPU-only torch,
pip installs a torchcodec that does not load, and `datasets` fails deep in a traceback. `check_torchcodec` turns that
into an error that names the versions and the fix. docs/install.md has the tested pairs.
"""

import argparse
import importlib.metadata
import re
import sys
from pathlib import Path

# Distributions whose versions matter to musicoder-hf (pyproject.toml's dependencies, and numpy under all of them).
DEPENDENCIES = (
    "torch", "torchcodec", "transformers", "datasets", "accelerate", "evaluate", "huggingface_hub", "librosa",
    "soundfile", "soxr", "tqdm", "scikit-learn", "threadpoolctl", "numpy",
)  # fmt: skip

# The last torchcodec release on PyPI that loads next to a CPU-only torch build.
TORCHCODEC_FOR_CPU_TORCH = "0.13"


def installed_versions(names=DEPENDENCIES) -> dict[str, str | None]:
    """`{distribution: version}` of the installed distributions (None for one that is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def check_torchcodec() -> None:
    """Raise an `ImportError` that names the fix if torchcodec (datasets' audio decoder) does not load next to the
    installed torch."""
    try:
        from torchcodec.decoders import AudioDecoder  # noqa: F401
    except Exception as error:  # a mismatched build fails with OSError or RuntimeError from its shared library
        import torch

        versions = installed_versions(("torch", "torchcodec"))
        if torch.version.cuda is None:
            fix = ("this torch is a CPU-only build, and torchcodec's PyPI wheels from 0.14 on need the CUDA libraries "
                   "that only torch's CUDA build installs: "
                   f'`pip install "torchcodec=={TORCHCODEC_FOR_CPU_TORCH}.*"`, '
                   "or torchcodec from the index your torch came from (e.g. `pip install torchcodec --index-url "
                   "https://download.pytorch.org/whl/cpu`)")
        else:
            fix = "install the torchcodec release built for this torch (torchcodec's README has the table)"
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise ImportError(
            f"torchcodec {versions['torchcodec']} does not load next to torch {versions['torch']}, so `datasets` "
            f"cannot decode audio: {fix}. docs/install.md lists the tested pairs. "
            f"({type(error).__name__}: {first_line})"
        ) from error


def pinned_versions(constraints: Path) -> dict[str, str]:
    """`name==version` lines of a pip constraints file, names normalised as importlib.metadata spells them."""
    pins = {}
    for line in constraints.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--expect", type=Path, help="a pip constraints file whose pins must be the installed versions")
    args = parser.parse_args(argv)
    pins = pinned_versions(args.expect) if args.expect else {}
    versions = installed_versions(tuple(dict.fromkeys((*DEPENDENCIES, *pins))))
    print(f"python {sys.version.split()[0]}; " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    check_torchcodec()
    wrong = [f"{name} {versions[name]} (constraints: {version})" for name, version in pins.items()
             if versions[name] is None or versions[name].split("+")[0] != version]
    if wrong:
        print(f"Not the versions of {args.expect}: " + "; ".join(wrong), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
