"""Batch augmentation on spectrograms (B, 1, frames, mels): SpecAugment masking and mixup.

Shared by the training engine (training batches) and by models that build their own augmented
view (ADD4RSC's bias denoising loss), so it depends on neither.

Mask widths are fractions of the axis they cut, so one value fits every frontend: the largest
width of a frequency mask is ``round(freq_mask_frac * mel bins)``, of a time mask
``round(time_mask_frac * frames)``. Two draws are offered (``AugmentConfig.mode``):

- ``lungpipe``: every spectrogram is masked; each width is an integer uniform in ``[0, W]``;
  all masked cells get the spectrogram's own mean (or zero).
- ``release``: the SpecAugment of the patch-mix / ADD4RSC code. The whole augmentation is applied
  to a spectrogram with probability P(z <= 1), z ~ N(0, 1) (about 0.841); each width is an integer
  uniform in ``[0, W)`` (48 of 128 bins and 160 of 798 frames with the release's fractions);
  frequency masks come first and are filled with the spectrogram's mean, then the time masks are
  filled with the mean of the frequency-masked spectrogram.

Masks are built on the batch's device from a few numbers drawn on the CPU ``generator``, without
a host synchronisation, so augmentation does not stall a GPU loop.
"""

from __future__ import annotations

import torch

from lungpipe.training.augment_config import (
    AUGMENT_MODES,
    FILLS,
    RELEASE_APPLY_PROB,
    RELEASE_APPLY_Z,
    RELEASE_FREQ_MASK_FRAC,
    RELEASE_TIME_MASK_FRAC,
    AugmentConfig,
)

# The settings live in lungpipe.training.augment_config, without torch (the report stage reads
# the training defaults); they are importable from here as well.
__all__ = ["AUGMENT_MODES", "FILLS", "RELEASE_APPLY_PROB", "RELEASE_APPLY_Z", "RELEASE_FREQ_MASK_FRAC",
           "RELEASE_TIME_MASK_FRAC", "AugmentConfig", "max_mask_width", "mixup", "spec_augment"]


def max_mask_width(frac: float, size: int) -> int:
    """The largest mask width on an axis of ``size`` cells: ``round(frac * size)``, at most ``size``."""
    return min(size, round(frac * size))


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small CPU tensor to ``device`` without blocking the host (pinned, asynchronous)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _draw_bands(count: int, width_high: int, size: int, b: int, generator: torch.Generator | None) -> torch.Tensor:
    """(count, 2, b) CPU int64: start and width of ``count`` masks per sample; widths in [0, width_high)."""
    rows = []
    for _ in range(count):
        width = torch.randint(0, width_high, (b,), generator=generator)
        start = (torch.rand(b, generator=generator) * (size - width + 1).float()).long()
        rows.append(torch.stack([start, width]))
    return torch.stack(rows) if rows else torch.zeros(0, 2, b, dtype=torch.long)


def _band_mask(bands: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """(b, size) bool on ``device``: True where any of the drawn bands covers the cell."""
    bands = _to_device(bands, device)
    pos = torch.arange(size, device=device)
    start, width = bands[:, 0, :, None], bands[:, 1, :, None]  # (count, b, 1)
    return ((pos >= start) & (pos < start + width)).any(dim=0)


def _fill_value(x: torch.Tensor, fill: str) -> torch.Tensor:
    if fill == "mean":
        return x.mean(dim=(1, 2, 3), keepdim=True)
    return torch.zeros((), dtype=x.dtype, device=x.device)


def spec_augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask random frequency bands and time spans of every spectrogram independently (see the module
    docstring for the two modes). Returns a new tensor; ``x`` is not modified."""
    if x.dim() != 4:
        raise ValueError(f"spec_augment expects (B, 1, frames, mels), got {tuple(x.shape)}")
    if cfg.mode == "release":
        return _spec_augment_release(x, cfg, generator)
    b, _, n_t, n_f = x.shape
    t_width = max_mask_width(cfg.time_mask_frac, n_t) if cfg.time_masks else 0
    f_width = max_mask_width(cfg.freq_mask_frac, n_f) if cfg.freq_masks else 0
    if not t_width and not f_width:
        return x.clone()
    masked = torch.zeros(b, n_t, n_f, dtype=torch.bool, device=x.device)
    if t_width:  # widths in [0, W]: W + 1 possible values
        masked |= _band_mask(_draw_bands(cfg.time_masks, t_width + 1, n_t, b, generator), n_t, x.device)[:, :, None]
    if f_width:
        masked |= _band_mask(_draw_bands(cfg.freq_masks, f_width + 1, n_f, b, generator), n_f, x.device)[:, None, :]
    return torch.where(masked[:, None], _fill_value(x, cfg.fill), x)


def _spec_augment_release(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    b, _, n_t, n_f = x.shape
    applied = _to_device(torch.randn(b, generator=generator) <= RELEASE_APPLY_Z, x.device)[:, None, None, None]
    out = x
    f_width = max_mask_width(cfg.freq_mask_frac, n_f) if cfg.freq_masks else 0
    if f_width:  # widths in [0, W)
        band = _band_mask(_draw_bands(cfg.freq_masks, f_width, n_f, b, generator), n_f, x.device)
        out = torch.where(band[:, None, None, :] & applied, _fill_value(out, cfg.fill), out)
    t_width = max_mask_width(cfg.time_mask_frac, n_t) if cfg.time_masks else 0
    if t_width:  # the mean is taken after the frequency masks, as the release does
        band = _band_mask(_draw_bands(cfg.time_masks, t_width, n_t, b, generator), n_t, x.device)
        out = torch.where(band[:, None, :, None] & applied, _fill_value(out, cfg.fill), out)
    return out if out is not x else x.clone()


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mix each sample with a random partner: returns (x_mixed, y, y_partner, lam).

    ``lam`` ~ Beta(alpha, alpha) (1.0 when ``alpha`` is 0); sample i is mixed with sample
    ``perm[i]`` of a random permutation drawn from ``generator``."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample().item()) if alpha > 0 else 1.0
    perm = _to_device(torch.randperm(x.shape[0], generator=generator), x.device)
    return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam
