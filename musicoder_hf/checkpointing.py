"""Crash-safe training checkpoints: a checkpoint either exists completely or not at all.

Each checkpoint is written by Accelerate's `save_state` into a temporary folder, marked complete, and only then
renamed to `checkpoint-<step>`: a kill during the save leaves a `.tmp` folder that is ignored and cleaned up, never a
broken "latest" checkpoint.
"""

import json
import os
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

COMPLETE_MARKER = "checkpoint_complete.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _CHECKPOINT_NAME.match(path.name)
        if match and (path / COMPLETE_MARKER).exists():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | os.PathLike, step: int, state: dict, keep: int | None = 3
) -> Path:
    """Save model, optimizer, scheduler, RNG states and `state` (JSON: step, epoch, history...) atomically."""
    root = Path(output_dir)
    final = root / f"checkpoint-{step}"
    temporary = root / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process and temporary.exists():
        shutil.rmtree(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(temporary / "training_state.json", "w") as handle:
            json.dump(state, handle)
        # The marker is written last, inside the temporary folder, and fsynced before the rename publishes it.
        with open(temporary / COMPLETE_MARKER, "w") as handle:
            json.dump({"step": step}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        if keep is not None:
            for old in list_checkpoints(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, checkpoint: str | os.PathLike) -> dict:
    """Restore what `save_checkpoint` saved; returns the JSON training state."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / COMPLETE_MARKER).exists():
        raise ValueError(f"{checkpoint} is not a complete checkpoint (no {COMPLETE_MARKER}); it cannot be resumed.")
    accelerator.load_state(str(checkpoint))
    with open(checkpoint / "training_state.json") as handle:
        return json.load(handle)


def remove_incomplete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Delete the `.tmp` folders of saves that were interrupted."""
    root = Path(output_dir)
    removed = [path for path in root.glob(".checkpoint-*.tmp")] if root.is_dir() else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
