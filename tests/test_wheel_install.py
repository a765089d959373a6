"""The release artefacts: `python -m build` makes an sdist and a wheel of a copy of the repository, `twine check` passes
on both, and an installed copy of the wheel, away from the source tree, finds its package data (the model-card template
and the `evaluate` metric modules, both read by path) and reads its version from its metadata.
"""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

REPO = Path(__file__).resolve().parents[1]

# Run in the fresh interpreter; prints the scores as JSON on the last line.
CHECK = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    target = Path(sys.argv[1]).resolve()
    sys.path.insert(0, str(target))
    import musicoder_hf
    assert Path(musicoder_hf.__file__).resolve().is_relative_to(target), musicoder_hf.__file__
    wheel_version = sys.argv[2]
    assert musicoder_hf.__version__ == wheel_version, (musicoder_hf.__version__, wheel_version)

    from musicoder_hf import MusiCoderConfig, MusiCoderForSequenceClassification
    from musicoder_hf.evaluation import load_metric
    from musicoder_hf.hub import build_model_card

    config = MusiCoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                             id2label={0: "german", 1: "irish"}, label2id={"german": 0, "irish": 1})
    card = build_model_card(MusiCoderForSequenceClassification(config), "someone/tiny-musicoder",
                            metrics={"test": {"accuracy": 0.75}}, dataset_name="tiny")
    text = str(card)
    assert "model-index" in text and "someone/tiny-musicoder" in text and "german, irish" in text, text

    labels = [0, 1, 1, 0, 1]
    scores = [[0.9, 0.2], [0.3, 0.6], [0.6, 0.7], [0.8, 0.1], [0.2, 0.4]]
    multi_hot = [[1, 0], [0, 1], [0, 1], [1, 0], [0, 1]]
    print(json.dumps({
        "accuracy": load_metric("accuracy").compute(predictions=[0, 1, 0, 0, 1], references=labels)["accuracy"],
        "roc_auc_macro": load_metric("roc_auc_macro").compute(
            prediction_scores=scores, references=multi_hot)["roc_auc_macro"],
        "pr_auc_macro": load_metric("pr_auc_macro").compute(
            prediction_scores=scores, references=multi_hot)["pr_auc_macro"],
    }))
    """
)


def _run(what, command, **kwargs):
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def distributions(tmp_path_factory):
    """The sdist and the wheel `python -m build` makes of a copy of the repository, as a release would."""
    work = tmp_path_factory.mktemp("build")
    source = work / "source"
    source.mkdir()
    # A copy: building in the checkout would leave build/ and *.egg-info there.
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "musicoder_hf", source / "musicoder_hf",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    _run("python -m build", [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(work / "dist"),
                             str(source)])
    (sdist,) = (work / "dist").glob("musicoder_hf-*.tar.gz")
    (wheel,) = (work / "dist").glob("musicoder_hf-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def installed(distributions, tmp_path_factory):
    """The folder `pip install --target` filled from the built wheel."""
    target = tmp_path_factory.mktemp("wheel") / "target"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    _run("pip install", [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(distributions[1])])
    return target


def test_sdist_and_wheel_pass_twine_check_and_carry_the_package_data(distributions):
    import tarfile
    import zipfile

    sdist, wheel = distributions
    done = _run("twine check", [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])
    assert done.stdout.count("PASSED") == 2, done.stdout
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata).decode()
    for needed in ("musicoder_hf/templates/model_card.md", "musicoder_hf/metrics/accuracy/accuracy.py",
                   "musicoder_hf/metrics/auc_macro/auc_macro.py", "musicoder_hf/feature_extraction_musicoder_torch.py"):
        assert needed in names, needed
    # What PyPI shows: the README as the description, ranges (not pins), the Python versions tested.
    assert "Content-Type: text/markdown" in metadata and "# musicoder-hf" in metadata
    assert "Requires-Dist: transformers<6,>=5.23" in metadata and "Requires-Dist: torch<3,>=2.13" in metadata
    assert "Classifier: Programming Language :: Python :: 3.13" in metadata
    with tarfile.open(sdist) as archive:
        assert any(name.endswith("musicoder_hf/templates/model_card.md") for name in archive.getnames())


def test_installed_wheel_builds_a_model_card_and_loads_the_metrics(installed, distributions, tmp_path):
    assert (installed / "musicoder_hf" / "templates" / "model_card.md").is_file()
    (entry_points,) = installed.glob("musicoder_hf-*.dist-info/entry_points.txt")
    assert "musicoder-data = musicoder_hf.builders.cli:main" in entry_points.read_text()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),  # evaluate copies the metric modules into its cache
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
    }
    # -I: no PYTHONPATH, no user site, neither the working directory nor the script's folder on sys.path; run away
    # from the checkout, so that only the installed copy can be imported.
    version = distributions[1].name.split("-")[1]  # musicoder_hf-<version>-py3-none-any.whl
    done = _run("the installed copy", [sys.executable, "-I", "-c", CHECK, str(installed), version], cwd=tmp_path,
                env=env)
    scores = json.loads(done.stdout.strip().splitlines()[-1])
    multi_hot = np.array([[1, 0], [0, 1], [0, 1], [1, 0], [0, 1]])
    probabilities = np.array([[0.9, 0.2], [0.3, 0.6], [0.6, 0.7], [0.8, 0.1], [0.2, 0.4]])
    assert scores["accuracy"] == pytest.approx(0.8)
    assert scores["roc_auc_macro"] == pytest.approx(roc_auc_score(multi_hot, probabilities, average="macro"))
    assert scores["pr_auc_macro"] == pytest.approx(
        average_precision_score(multi_hot, probabilities, average="macro")
    )
