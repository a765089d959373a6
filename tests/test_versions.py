"""Dependency ranges: pyproject.toml's floors are the versions `make test-oldest` installs, and a torchcodec that does
not load next to torch gets an error that names the fix instead of a traceback from inside `datasets`."""

import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from packaging.requirements import Requirement
from packaging.version import Version

from musicoder_hf import versions
from musicoder_hf.data.labeled import load_labeled_dataset

REPO = Path(__file__).resolve().parents[1]
# Dependencies whose next major release may break us: their ranges stop below it.
BOUNDED = ("torch", "transformers", "datasets", "accelerate", "evaluate", "huggingface_hub", "librosa", "torchcodec")


def project_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {Requirement(line).name: Requirement(line) for line in project["dependencies"]}


def test_every_floor_is_the_version_the_oldest_target_tests():
    pins = versions.pinned_versions(REPO / "constraints" / "oldest.txt")
    requirements = project_requirements()
    assert set(pins) == set(requirements), "constraints/oldest.txt must pin every dependency of pyproject.toml"
    for name, requirement in requirements.items():
        floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert floors, f"{name} has no floor"
        assert Version(floors[0]) == Version(pins[name]), (  # 2.13 == 2.13.0
            f"{name}: pyproject.toml's floor {floors[0]} is not the tested {pins[name]}")
        if name in BOUNDED:
            assert any(spec.operator == "<" for spec in requirement.specifier), f"{name} has no upper bound"
        assert not any(spec.operator in ("==", "~=") for spec in requirement.specifier), f"{name} is pinned"


def test_installed_versions_satisfy_the_ranges():
    installed = versions.installed_versions(tuple(project_requirements()))
    for name, requirement in project_requirements().items():
        assert installed[name] is not None, f"{name} is not installed"
        assert requirement.specifier.contains(installed[name].split("+")[0], prereleases=True), (name, installed[name])


def test_version_report_and_expected_pins(tmp_path, capsys):
    installed = versions.installed_versions(("torch", "transformers"))
    matching = tmp_path / "matching.txt"
    torch_version = installed["torch"].split("+")[0]
    matching.write_text(f"# pins\ntorch=={torch_version}\ntransformers=={installed['transformers']}\n")
    assert versions.main(["--expect", str(matching)]) == 0
    report = capsys.readouterr().out
    assert f"python {sys.version.split()[0]}" in report and f"transformers {installed['transformers']}" in report
    other = tmp_path / "other.txt"
    other.write_text("transformers==4.0.0\n")
    assert versions.main(["--expect", str(other)]) == 1
    assert "transformers" in capsys.readouterr().err


@pytest.fixture
def broken_torchcodec(monkeypatch):
    """torchcodec as it behaves next to a torch it was not built for: its decoders fail to import."""
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)


@pytest.mark.parametrize("cuda", [None, "13.0"])
def test_a_torchcodec_that_does_not_load_gets_an_error_that_names_the_fix(broken_torchcodec, monkeypatch, cuda):
    monkeypatch.setattr(torch.version, "cuda", cuda)
    with pytest.raises(ImportError, match=r"torchcodec \S+ does not load next to torch \S+") as error:
        versions.check_torchcodec()
    message = str(error.value)
    if cuda is None:
        assert 'pip install "torchcodec==0.13.*"' in message and "CPU-only build" in message
    else:
        assert "built for this torch" in message
    assert "docs/install.md" in message


def test_loading_a_folder_checks_torchcodec_first(broken_torchcodec, tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        soundfile.write(tmp_path / label / "clip.wav", np.zeros(4410, np.float32), 44100)
    with pytest.raises(ImportError, match="does not load next to torch"):
        load_labeled_dataset(str(tmp_path))
