"""Batch augmentation on spectrograms (B, 1, frames, mels): SpecAugment masking and mixup.

Shared by the training engine (training batches) and by models that build their own augmented
view (ADD4RSC's bias denoising loss), so it depends on neither."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lungpipe.config import require, require_choice


@dataclass
class AugmentConfig:
    """SpecAugment-style masking and mixup, applied to training batches only."""

    freq_masks: int = 2
    freq_mask_width: int = 16  # maximum width in mel bins of each frequency mask
    time_masks: int = 2
    time_mask_width: int = 40  # maximum width in frames of each time mask
    fill: str = "mean"  # "mean" (of each spectrogram) or "zero"
    mixup_alpha: float = 0.0  # 0 disables mixup; Beta(alpha, alpha) mixing weights otherwise
    mixup_prob: float = 0.5  # chance that a batch is mixed when mixup_alpha > 0

    def __post_init__(self) -> None:
        for name in ("freq_masks", "time_masks"):
            require(self, name, getattr(self, name) >= 0, "must be >= 0")
        require_choice(self, "fill", ("mean", "zero"))
        require(self, "mixup_alpha", self.mixup_alpha >= 0, "must be >= 0 (0 disables mixup)")
        require(self, "mixup_prob", 0 <= self.mixup_prob <= 1, "must be between 0 and 1")


def spec_augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask random frequency bands and time spans of every spectrogram independently.

    Each of ``freq_masks`` masks has a width drawn uniformly from [0, freq_mask_width] and a random
    start; likewise in time. Masked cells are filled with the spectrogram's mean (or zero).
    Returns a new tensor; ``x`` is not modified.
    """
    if x.dim() != 4:
        raise ValueError(f"spec_augment expects (B, 1, frames, mels), got {tuple(x.shape)}")
    b, _, n_t, n_f = x.shape
    out = x.clone()
    keep = torch.ones(b, n_t, n_f, dtype=torch.bool)

    def _masks(count: int, max_width: int, size: int, axis: int) -> None:
        max_width = min(max_width, size)
        for _ in range(count):
            width = torch.randint(0, max_width + 1, (b,), generator=generator)
            start = (torch.rand(b, generator=generator) * (size - width + 1).float()).long()
            pos = torch.arange(size)
            band = (pos[None, :] >= start[:, None]) & (pos[None, :] < (start + width)[:, None])  # (b, size)
            if axis == 1:
                keep.logical_and_(~band[:, :, None])
            else:
                keep.logical_and_(~band[:, None, :])

    if cfg.time_masks and cfg.time_mask_width:
        _masks(cfg.time_masks, cfg.time_mask_width, n_t, axis=1)
    if cfg.freq_masks and cfg.freq_mask_width:
        _masks(cfg.freq_masks, cfg.freq_mask_width, n_f, axis=2)
    mask = ~keep.to(x.device)[:, None]
    if cfg.fill == "mean":
        fill = x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
    elif cfg.fill == "zero":
        fill = torch.zeros_like(x)
    else:
        raise ValueError(f"augment.fill must be 'mean' or 'zero', got {cfg.fill!r}")
    out[mask] = fill[mask]
    return out


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mix each sample with a random partner: returns (x_mixed, y, y_partner, lam)."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample().item()) if alpha > 0 else 1.0
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam
