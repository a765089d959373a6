"""Real kills of `training/pretrain.py`: a SIGKILL mid-run and one during a checkpoint save lose nothing.

The run is killed twice, then resumed with `--resume` to the end, and must reach the same weights and losses as an
uninterrupted run. Every wait has a deadline, and every process started here is killed in a `finally`.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from musicoder_hf import MusiCoderConfig, MusiCoderForPreTraining
from musicoder_hf.checkpointing import COMPLETE_MARKER, latest_checkpoint, list_checkpoints
from musicoder_hf.pretraining import parse_overrides, pretrain

from pretraining_helpers import TINY, arguments, command_line, save_features_dataset

REPOSITORY = Path(__file__).resolve().parent.parent
STEPS = 25
# Short logging/saving periods that divide each other, so a resumed run's loss windows line up with a straight one's.
RUN = dict(max_steps=STEPS, save_every=5, log_every=5, eval_every=1000, keep_checkpoints=3)
PROCESS_TIMEOUT = 180  # seconds; a healthy run takes a few
# One thread everywhere: the reference (run in this process) and the killed runs then do bit-identical arithmetic.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory):
    return save_features_dataset(tmp_path_factory.mktemp("features"))


@pytest.fixture(scope="module")
def reference(features_dir, tmp_path_factory):
    """The uninterrupted run."""
    output_dir = tmp_path_factory.mktemp("straight")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(arguments(features_dir, output_dir, **RUN))
    finally:
        torch.set_num_threads(threads)
    return output_dir


def start(features_dir, output_dir, log, resume=False):
    argv = command_line(features_dir, output_dir, resume=resume, **RUN)
    return subprocess.Popen(
        [sys.executable, str(REPOSITORY / "training" / "pretrain.py"), *argv],
        cwd=REPOSITORY,
        env={**os.environ, **THREAD_ENV},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_until(process, condition, what, timeout=PROCESS_TIMEOUT, interval=0.0005):
    """Poll `condition()` until it is true; fail if the process exits first or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(f"training exited (code {process.returncode}) before {what}")
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def kill(process):
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def step_of(path):
    return int(re.search(r"checkpoint-(\d+)", path.name).group(1))


def saves_in_progress(output_dir, after_step):
    """`.checkpoint-<step>.tmp` folders of steps after `after_step` whose weights are already (being) written."""
    return [
        path
        for path in output_dir.glob(".checkpoint-*.tmp")
        if step_of(path) > after_step and (path / "model.safetensors").exists()
    ]


def assert_checkpoint_loads(checkpoint):
    """A complete checkpoint: marker, JSON state of its step, and weights that fill a model of the run's config."""
    assert (checkpoint / COMPLETE_MARKER).exists()
    state = json.loads((checkpoint / "training_state.json").read_text())
    assert state["step"] == step_of(checkpoint)
    model = MusiCoderForPreTraining(MusiCoderConfig.from_preset("musicoder-base", **parse_overrides(TINY)))
    weights = load_file(checkpoint / "model.safetensors")
    model.load_state_dict(weights, strict=True)
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
    assert torch.load(checkpoint / "optimizer.bin", weights_only=True)["state"]


def test_killed_twice_then_resumed_matches_an_uninterrupted_run(features_dir, reference, tmp_path):
    output_dir = tmp_path / "run"
    log_path = tmp_path / "log.txt"
    process = None
    try:
        with open(log_path, "w") as log:
            # 1. Kill mid-run: once the first checkpoint exists, let training go on a little past it, then SIGKILL.
            process = start(features_dir, output_dir, log)
            first = wait_until(process, lambda: latest_checkpoint(output_dir), "the first checkpoint")
            time.sleep(0.1)
            kill(process)
            latest = latest_checkpoint(output_dir)
            assert latest is not None and step_of(latest) < STEPS, "the run ended before it could be killed"
            assert_checkpoint_loads(latest)

            # 2. Resume, and kill during a save: as soon as the next checkpoint's temporary folder holds weights (a
            # save takes some 20-40 ms; poll fast, and try again if the rename won the race).
            caught = None
            for _ in range(3):
                before = latest_checkpoint(output_dir)
                process = start(features_dir, output_dir, log, resume=True)
                saving = wait_until(process, lambda: saves_in_progress(output_dir, step_of(before)), "a save")
                kill(process)
                if any(path.exists() for path in saving):
                    caught = saving
                    break
            assert caught, "three kills all landed after the save's rename; no partial checkpoint was observed"
            # The interrupted save is invisible: the latest checkpoint is the previous complete one, and it loads.
            assert latest_checkpoint(output_dir) == before
            assert all(not path.name.endswith(".tmp") for path in list_checkpoints(output_dir))
            assert_checkpoint_loads(before)

            # 3. Resume to the end.
            process = start(features_dir, output_dir, log, resume=True)
            assert process.wait(timeout=PROCESS_TIMEOUT) == 0, log_path.read_text()[-3000:]
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=30)

    text = log_path.read_text()
    resumed_from = [int(step) for step in re.findall(r"Resumed from \S*checkpoint-(\d+) at step", text)]
    assert resumed_from[0] == step_of(latest) and resumed_from[-1] == step_of(before), resumed_from
    assert step_of(first) >= 5
    assert not list(output_dir.glob(".checkpoint-*.tmp"))  # cleaned up on resume

    straight = load_file(reference / "final" / "model.safetensors")
    resumed = load_file(output_dir / "final" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6, msg=name)
    straight_summary = json.loads((reference / "summary.json").read_text())
    resumed_summary = json.loads((output_dir / "summary.json").read_text())
    assert resumed_summary["steps"] == STEPS
    assert len(resumed_summary["history"]) == len(straight_summary["history"])
    for ours, theirs in zip(resumed_summary["history"], straight_summary["history"]):
        assert ours.keys() == theirs.keys() and ours["step"] == theirs["step"]
        for key in ("loss", "eval_loss", "lr"):
            if key in theirs:
                assert ours[key] == pytest.approx(theirs[key], rel=0, abs=1e-6), (ours, theirs)
