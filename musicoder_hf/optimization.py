"""The paper's optimiser and learning-rate schedule (paper section 4.2, eq. 4)."""

import torch
from torch.optim.lr_scheduler import LambdaLR


def noam_learning_rate(step: int, hidden_size: int, warmup_steps: int, scale: float = 1.0) -> float:
    """`scale * hidden_size^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)` (Vaswani et al.); step counts from 1."""
    step = max(step, 1)
    return scale * hidden_size**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def create_noam_optimizer_and_schedule(
    model: torch.nn.Module,
    hidden_size: int,
    warmup_steps: int = 8000,
    scale: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    weight_decay: float = 0.0,
) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """Adam(0.9, 0.999, eps 1e-6) whose learning rate follows the Noam schedule exactly.

    The optimizer's base learning rate is 1, so `LambdaLR`'s factor *is* the learning rate; the scheduler is saved
    and restored with the optimizer by Accelerate's `save_state`/`load_state`.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=1.0, betas=betas, eps=eps, weight_decay=weight_decay)
    schedule = LambdaLR(optimizer, lambda index: noam_learning_rate(index + 1, hidden_size, warmup_steps, scale))
    return optimizer, schedule
