"""Learning-rate schedules: the factor that multiplies the learning rate at each optimizer step."""

from __future__ import annotations

import math

from .config import FINAL_LR_RATIO


def lr_factor(schedule: str, step: int, warmup: int, progress: float) -> float:
    """The learning-rate multiplier for optimizer step ``step`` (1 for the first).

    A warm-up rises linearly over its first ``warmup`` steps; then ``progress`` (0 to 1: the fraction of the
    run after the warm-up, in steps, or the elapsed fraction of a time budget) drives the decay to
    FINAL_LR_RATIO. A pure function of its arguments, so a resumed run follows the same curve.
    """
    if warmup and step <= warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    p = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return FINAL_LR_RATIO + (1 - FINAL_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "linear":
        return 1.0 - (1 - FINAL_LR_RATIO) * p
    raise ValueError(f"unknown schedule {schedule!r}")


def step_progress(step: int, warmup: int, total: int) -> float:
    """The fraction of a step budget of ``total`` steps done after the warm-up, at step ``step``."""
    span = total - warmup
    return (step - warmup) / span if span > 0 else 1.0
