"""One convention for every command: `HfArgumentParser` over a dataclass (`musicoder_hf.utils.command_line_parser`),
`--help` exits 0 and lists the options, a bad option exits 2 naming it."""

import importlib

import pytest

from musicoder_hf.builders.cli import COMMANDS
from musicoder_hf.builders.cli import main as musicoder_data


def exit_status(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_musicoder_data_commands(command, capsys):
    assert exit_status(musicoder_data, [command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"musicoder-data {command}" in out and "--output_dir" in out
    required = ["--input_dir", "in", "--output_dir", "out"] if command in ("featurize", "feature-stats") else []
    assert exit_status(musicoder_data, [command, *required, "--no_such_option", "1"]) == 2
    assert "unrecognized arguments: --no_such_option 1" in capsys.readouterr().err


def test_musicoder_data_dispatcher(capsys):
    for argv in (["--help"], ["-h"]):
        assert exit_status(musicoder_data, argv) == 0
        out = capsys.readouterr().out
        assert all(name in out for name in COMMANDS)
    for argv in ([], ["build-everything"], ["--output_dir", "x"]):
        assert exit_status(musicoder_data, argv) == 2
        err = capsys.readouterr().err
        assert all(name in err for name in COMMANDS)


@pytest.mark.parametrize(
    ("script", "option"),
    [("pretrain", "--max_steps"), ("finetune", "--freeze_base_model"), ("experiments", "--scale"),
     ("demo", "--pretrained_model"), ("push", "--repo_id"), ("evaluate_checkpoint", "--group_column"),
     ("build_pretrained", "--card_only")],
)
def test_training_scripts(script, option, capsys):
    main = importlib.import_module(f"training.{script}").main
    assert exit_status(main, ["--help"]) == 0
    assert option in capsys.readouterr().out
    assert exit_status(main, ["--no_such_option", "1"]) == 2
    assert "error:" in capsys.readouterr().err  # the unknown option, or the required ones missing
