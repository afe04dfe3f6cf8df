"""MRINet's in-model SpecAugment, as released (HTS-AT's torchlibrosa ``SpecAugmentation``).

Applied in training mode only, after ``bn0`` and before the time resize: ``time_stripes`` stripes
along time, then ``freq_stripes`` along frequency, each drawn per sample with a width uniform on
``[0, width)`` (so at most ``width − 1``) and a start uniform on ``[0, size − width)``, filled with
zeros. (The engine's own SpecAugment fills with the mean and is switched off in MRINet's recipe.)
"""

from __future__ import annotations

import torch


def _stripe_mask(batch: int, size: int, stripes: int, width: int, device: torch.device) -> torch.Tensor:
    """``(batch, size)`` boolean mask, True inside any of the ``stripes`` stripes of a sample."""
    pos = torch.arange(size, device=device)
    masked = torch.zeros(batch, size, dtype=torch.bool, device=device)
    for _ in range(stripes):
        distance = torch.randint(0, max(min(width, size), 1), (batch,), device=device)
        start = (torch.rand(batch, device=device) * (size - distance).float()).long()
        masked |= (pos >= start[:, None]) & (pos < (start + distance)[:, None])
    return masked


def drop_stripes(
    x: torch.Tensor, time_stripes: int, time_width: int, freq_stripes: int, freq_width: int
) -> torch.Tensor:
    """Zero random time and frequency stripes of ``(B, 1, frames, mels)``; a new tensor."""
    b, _, n_t, n_f = x.shape
    keep = torch.ones(b, 1, n_t, n_f, dtype=x.dtype, device=x.device)
    if time_stripes and time_width:
        keep = keep * ~_stripe_mask(b, n_t, time_stripes, time_width, x.device)[:, None, :, None]
    if freq_stripes and freq_width:
        keep = keep * ~_stripe_mask(b, n_f, freq_stripes, freq_width, x.device)[:, None, None, :]
    return x * keep
