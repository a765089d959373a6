"""Make transformers' own conformance test mixins importable as the package `transformers_tests`.

`ModelTesterMixin`, `ConfigTester` and `SequenceFeatureExtractionTestMixin` ship in the `tests/` folder of the
transformers sdist, not in the wheel. We download the sdist of the installed version from the package index (the
only network we have), extract the four common files, and add small shims for the three modules they import that the
sdist leaves out (export, generation and config-kwargs helpers, none of which apply to an encoder like ours).
"""

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers


COMMON_FILES = (
    "test_modeling_common.py",
    "test_configuration_common.py",
    "test_feature_extraction_common.py",
    "test_sequence_feature_extraction_common.py",
)
SHIMS = Path(__file__).parent / "transformers_shims"
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / ".cache" / "transformers_tests"


def ensure_transformers_tests(root: Path = DEFAULT_ROOT) -> Path:
    """Build `root/transformers_tests/` once for the installed transformers version; return `root` (for sys.path)."""
    package = root / "transformers_tests"
    stamp = package / "VERSION"
    if stamp.exists() and stamp.read_text() == transformers.__version__:
        return root
    with tempfile.TemporaryDirectory() as download_dir:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"transformers=={transformers.__version__}", "--dest", download_dir],
            check=True,
        )
        (sdist,) = Path(download_dir).glob("transformers-*.tar.gz")
        if package.exists():
            shutil.rmtree(package)
        shutil.copytree(SHIMS, package, ignore=shutil.ignore_patterns("__pycache__"))
        with tarfile.open(sdist) as archive:
            for name in COMMON_FILES:
                member = archive.getmember(f"transformers-{transformers.__version__}/tests/{name}")
                (package / name).write_bytes(archive.extractfile(member).read())
    stamp.write_text(transformers.__version__)
    return root


if __name__ == "__main__":
    print(ensure_transformers_tests())
