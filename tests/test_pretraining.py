"""The Accelerate pre-training loop: data parallelism, exact resume, schedule, atomic checkpoints, NaN guard."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import PartialState
from safetensors.torch import load_file

from musicoder_hf import MusiCoderForPreTraining
from musicoder_hf.checkpointing import COMPLETE_MARKER, latest_checkpoint, list_checkpoints
from musicoder_hf.optimization import noam_learning_rate
from musicoder_hf.pretraining import pretrain

from pretraining_helpers import arguments, save_features_dataset


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory):
    return save_features_dataset(tmp_path_factory.mktemp("features"))


def _data_parallel_worker(features_dir, output_dir):
    summary = pretrain(arguments(features_dir, output_dir, per_device_train_batch_size=4, max_steps=24))
    rank = PartialState().process_index
    torch.save(summary["model"].state_dict(), f"{output_dir}/rank{rank}.pt")
    with open(f"{output_dir}/rank{rank}.json", "w") as handle:
        json.dump({"num_processes": summary["num_processes"], "history": summary["history"]}, handle)


def test_two_process_data_parallel_keeps_weights_identical_and_learns(features_dir, tmp_path):
    # A fresh interpreter: debug_launcher forks, and forking a process whose torch thread pools already ran (as
    # pytest's does after earlier tests) can deadlock the children.
    script = (
        "import sys; from accelerate import debug_launcher; from test_pretraining import _data_parallel_worker; "
        "debug_launcher(_data_parallel_worker, args=(sys.argv[1], sys.argv[2]), num_processes=2)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(features_dir), str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    report = json.loads((tmp_path / "rank0.json").read_text())
    assert report["num_processes"] == 2
    losses = [record["loss"] for record in report["history"] if "loss" in record]
    assert np.mean(losses[-2:]) < 0.75 * np.mean(losses[:2]), losses
    initial = MusiCoderForPreTraining.from_pretrained(tmp_path / "final")  # the saved model is the trained one
    assert torch.equal(initial.state_dict()["reconstruction_head.decoder.weight"], rank0["reconstruction_head.decoder.weight"])


def test_resumed_run_reaches_the_same_weights(features_dir, tmp_path):
    pretrain(arguments(features_dir, tmp_path / "straight", max_steps=12))
    pretrain(arguments(features_dir, tmp_path / "interrupted", max_steps=7))  # stops mid-epoch (6 batches per epoch)
    resumed = pretrain(arguments(features_dir, tmp_path / "interrupted", max_steps=12, resume=True))
    assert resumed["steps"] == 12
    straight = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    again = load_file(tmp_path / "interrupted" / "final" / "model.safetensors")
    for name in straight:
        assert torch.equal(straight[name], again[name]), name


def test_checkpoints_are_complete_and_pruned(features_dir, tmp_path):
    (tmp_path / ".checkpoint-3.tmp").mkdir(parents=True)  # what a kill during a save leaves behind
    pretrain(arguments(features_dir, tmp_path, max_steps=20, save_every=5, keep_checkpoints=2))
    assert not (tmp_path / ".checkpoint-3.tmp").exists()
    assert [path.name for path in list_checkpoints(tmp_path)] == ["checkpoint-15", "checkpoint-20"]
    assert all((path / COMPLETE_MARKER).exists() for path in list_checkpoints(tmp_path))
    (tmp_path / "checkpoint-25").mkdir()  # no completion marker: never picked as "latest"
    assert latest_checkpoint(tmp_path).name == "checkpoint-20"


def test_non_finite_loss_stops_before_checkpointing(features_dir, tmp_path, monkeypatch):
    original_forward = MusiCoderForPreTraining.forward
    calls = {"n": 0}

    def poisoned_forward(self, *args, **kwargs):
        output = original_forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 6:
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(MusiCoderForPreTraining, "forward", poisoned_forward)
    with pytest.raises(FloatingPointError, match="step 6"):
        pretrain(arguments(features_dir, tmp_path, max_steps=20, save_every=5))
    assert [path.name for path in list_checkpoints(tmp_path)] == ["checkpoint-5"]


def test_real_divergence_never_leaves_a_non_finite_checkpoint(features_dir, tmp_path):
    # A learning rate far too high, no clipping: the loss reaches ~3e11 (finite) at step 4, whose update is NaN.
    with pytest.raises(FloatingPointError, match="before writing a poisoned checkpoint"):
        pretrain(
            arguments(
                features_dir, tmp_path, max_steps=12, save_every=1, log_every=1, eval_every=1000, lr_scale=1e6,
                max_grad_norm=0, warmup_steps=1,
            )
        )
    latest = latest_checkpoint(tmp_path).name
    for checkpoint in list_checkpoints(tmp_path):
        weights = load_file(checkpoint / "model.safetensors")
        poisoned = [name for name, tensor in weights.items() if not torch.isfinite(tensor).all()]
        assert not poisoned, f"{checkpoint.name} (latest: {latest}) holds non-finite weights: {poisoned[:3]}"


def test_noam_schedule_matches_paper_equation_4():
    hidden, warmup = 768, 8000
    assert noam_learning_rate(1, hidden, warmup) == pytest.approx(hidden**-0.5 * warmup**-1.5)
    assert noam_learning_rate(warmup, hidden, warmup) == pytest.approx(hidden**-0.5 * warmup**-0.5)
    assert noam_learning_rate(4 * warmup, hidden, warmup) == pytest.approx(hidden**-0.5 / math.sqrt(4 * warmup))
    peak = max(noam_learning_rate(s, hidden, warmup) for s in range(1, 3 * warmup))
    assert peak == pytest.approx(noam_learning_rate(warmup, hidden, warmup))


def test_streaming_trains_across_epochs_and_resumes_identically(features_dir, tmp_path):
    # 48 clips in shards, batch 8: 6 batches per pass, so 9 steps cross an epoch boundary of the IterableDataset.
    straight = pretrain(arguments(features_dir, tmp_path / "straight", streaming=True, max_steps=9))
    assert straight["steps"] == 9 and np.isfinite(straight["final_loss"])
    pretrain(arguments(features_dir, tmp_path / "interrupted", streaming=True, max_steps=5))
    pretrain(arguments(features_dir, tmp_path / "interrupted", streaming=True, max_steps=9, resume=True))
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "interrupted" / "final" / "model.safetensors")
    assert all(torch.equal(a[name], b[name]) for name in a)
