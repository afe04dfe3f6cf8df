"""Learning-rate schedules, as multipliers of the base lr. Every schedule is a ``LambdaLR`` that the
engine steps once per optimizer step; the per-epoch ones hold one value for all steps of an epoch.

- ``warmup_cosine`` (lungpipe's default): linear warm-up over ``warmup_epochs``, then a half cosine
  per step down to ``min_lr_ratio``.
- ``cosine_per_epoch`` (patch-mix / ADD4RSC): epoch e (0-based) runs at
  ``r + (1 - r) * (1 + cos(pi * (e + 1) / E)) / 2`` with r = ``min_lr_ratio``: the release counts
  epochs from 1 and sets the lr before each, so its first epoch is already a little below lr and its
  last is at lr * r. No warm-up. Today's ``warmup_cosine`` does not match it (it warms up, decays per
  step and reaches the floor only after the last step), hence this separate schedule.
- ``htsat_steps`` (HTS-AT, which MRINet trains with): per-epoch multipliers 0.02, 0.05, 0.1 for
  epochs 0-2, 0.1 up to epoch 10, 0.05 up to 20, 0.02 up to 30 (bounds inclusive), then 0.03.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

import torch

#: HTS-AT's warm-up multipliers of epochs 0, 1, 2 ...
HTSAT_WARMUP = (0.02, 0.05, 0.1)
#: ... then the multiplier holds HTSAT_WARMUP[-1 - i] up to and including epoch HTSAT_BOUNDS[i] ...
HTSAT_BOUNDS = (10, 20, 30)
#: ... and this one after the last bound.
HTSAT_FINAL = 0.03


def htsat_factor(epoch: int) -> float:
    if epoch < len(HTSAT_WARMUP):
        return HTSAT_WARMUP[epoch]
    stage = bisect.bisect_left(HTSAT_BOUNDS, epoch)
    return HTSAT_WARMUP[-1 - stage] if stage < len(HTSAT_BOUNDS) else HTSAT_FINAL


def cosine_epoch_factor(epoch: int, epochs: int, min_lr_ratio: float) -> float:
    progress = min(1.0, (epoch + 1) / max(1, epochs))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    total_steps = max(1, total_steps)
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(schedule: str, *, epochs: int, steps_per_epoch: int, warmup_epochs: float,
              min_lr_ratio: float) -> Callable[[int], float]:
    """The multiplier of the base lr at optimizer step ``step`` (0-based) of ``schedule``."""
    spe = max(1, steps_per_epoch)
    if schedule == "warmup_cosine":
        total, warmup = spe * epochs, round(warmup_epochs * spe)
        return lambda step: warmup_cosine_factor(step, total, warmup, min_lr_ratio)
    if schedule == "cosine_per_epoch":
        return lambda step: cosine_epoch_factor(step // spe, epochs, min_lr_ratio)
    if schedule == "htsat_steps":
        return lambda step: htsat_factor(step // spe)
    raise ValueError(f"unknown schedule {schedule!r}; use warmup_cosine, cosine_per_epoch or htsat_steps")


def build_schedule(optimizer: torch.optim.Optimizer, schedule: str, *, epochs: int, steps_per_epoch: int,
                   warmup_epochs: float = 0.0, min_lr_ratio: float = 1e-3) -> torch.optim.lr_scheduler.LambdaLR:
    factor = lr_factor(schedule, epochs=epochs, steps_per_epoch=steps_per_epoch, warmup_epochs=warmup_epochs,
                       min_lr_ratio=min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
