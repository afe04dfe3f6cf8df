"""Weight moving average after every optimizer step, as patch-mix and ADD4RSC train.

After each step every floating-point tensor of the model's state dict (parameters and buffers,
BatchNorm running statistics included) becomes ``beta * before + (1 - beta) * after``, where
*before* is its value when the training step began (before the forward pass, so BatchNorm
statistics updated by that forward pass are averaged too) and *after* its value once the optimizer
has stepped.

The release keeps three deep copies of the state dicts per step. Here one set of buffers is
allocated once and both halves are fused ``torch._foreach`` ops on the tensors in place.

Integer buffers (BatchNorm's ``num_batches_tracked``) are left as the step leaves them, so they
keep counting batches. (The release averages them as floats and loads the result back into the
integer buffer, which truncates 0.5 * n + 0.5 * (n + 1) to n: its counter never moves from 0.
The counter is only read by BatchNorm layers built with ``momentum=None``; no zoo model has one.)
"""

from __future__ import annotations

import torch
from torch import nn


def averaged_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The floating-point tensors of ``model.state_dict()``, each storage once (tied weights)."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    out = []
    for tensor in model.state_dict(keep_vars=False).values():
        if not tensor.is_floating_point():
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            out.append(tensor)
    return out


class WeightMovingAverage:
    """Call :meth:`begin_step` before the forward pass and :meth:`end_step` after ``optimizer.step()``.

    Build it after the model has reached its device and memory format: it holds views of the
    model's tensors, which ``model.to(...)`` would replace.
    """

    def __init__(self, model: nn.Module, beta: float):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"ma_beta must be in [0, 1), got {beta}")
        self.beta = float(beta)
        self._live = averaged_tensors(model)
        with torch.no_grad():
            self._before = [torch.empty_like(t) for t in self._live]

    @torch.no_grad()
    def begin_step(self) -> None:
        torch._foreach_copy_(self._before, self._live)

    @torch.no_grad()
    def end_step(self) -> None:
        # live + beta * (before - live) = beta * before + (1 - beta) * live
        torch._foreach_lerp_(self._live, self._before, self.beta)
