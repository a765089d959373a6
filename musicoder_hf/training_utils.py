"""Pieces shared by the pre-training and fine-tuning loops (Accelerate)."""

import importlib.util
import logging
import math

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration

logger = logging.getLogger(__name__)


def available_trackers(report_to: str) -> list[str]:
    """Trackers from a comma list ("tensorboard,trackio", "all" or "none") that are actually installed."""
    wanted = ["tensorboard", "trackio"] if report_to == "all" else [t for t in report_to.split(",") if t and t != "none"]
    modules = {"tensorboard": "tensorboard", "trackio": "trackio"}
    found = [t for t in wanted if importlib.util.find_spec(modules.get(t, t)) is not None]
    for missing in sorted(set(wanted) - set(found)):
        logger.warning("Tracker %r is not installed; logging to it is skipped.", missing)
    return found


def build_accelerator(
    output_dir: str,
    mixed_precision: str | None,
    gradient_accumulation_steps: int,
    report_to: str,
    cpu: bool = False,
) -> Accelerator:
    trackers = available_trackers(report_to)
    return Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=trackers or None,
        project_dir=output_dir,
        # Shuffling depends only on (seed, epoch), so a resumed run sees batches in the same order.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        step_scheduler_with_optimizer=False,  # our schedules count optimizer steps, whatever the number of processes
    )


def check_finite_loss(accelerator: Accelerator, loss: torch.Tensor, step: int) -> None:
    """Stop every process with a clear message rather than step on (and checkpoint) a NaN/inf loss."""
    losses = accelerator.gather(loss.detach().float().reshape(1))
    if not torch.isfinite(losses).all():
        raise FloatingPointError(
            f"Loss became {losses.tolist()} at optimizer step {step}: training stopped before writing a poisoned "
            "checkpoint. The last good checkpoint is kept; lower the learning rate (or its scale), enable gradient "
            "clipping, or use bf16 instead of fp16, then rerun with --resume."
        )


def clip_and_check_gradients(accelerator: Accelerator, model: torch.nn.Module, max_grad_norm: float, step: int) -> None:
    """Clip gradients to `max_grad_norm` (0: no clipping) and stop if their norm is NaN/inf, before the optimizer turns
    a finite loss with overflowing gradients into NaN weights (which the next save would checkpoint). Under fp16 the
    grad scaler owns overflow handling (it skips the step), so that case is left to it."""
    norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm if max_grad_norm > 0 else float("inf"))
    if accelerator.scaler is None and norm is not None and not torch.isfinite(torch.as_tensor(norm)).all():
        raise FloatingPointError(
            f"The gradient norm became {float(norm)} at optimizer step {step} (the loss was finite): training stopped "
            "before the update and before writing a poisoned checkpoint. The last good checkpoint is kept; lower the "
            "learning rate (or its scale) or enable gradient clipping, then rerun with --resume."
        )


def total_optimizer_steps(max_steps: int, num_epochs: float, batches_per_epoch: int | None, accumulation: int) -> int:
    if max_steps > 0:
        return max_steps
    if batches_per_epoch is None:
        raise ValueError("A streaming dataset has no known length: set --max_steps.")
    return max(1, math.ceil(num_epochs * batches_per_epoch / accumulation))
