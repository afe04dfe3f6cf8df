"""Normalisation statistics of feature arrays and the one function that applies them.

Statistics are a single scalar mean and std over every value of the *training* split (as AST
and the ICBHI literature do). Each recording's block contributes its count, mean and sum of
squared deviations from *its own* mean (two passes, float64); blocks are combined by the law of
total variance with ``math.fsum``, so the result does not depend on which worker finished first
and a constant input gives a variance of (almost exactly) 0 instead of the cancellation error of
``E[x²] − E[x]²`` (which gave std 0.0072 on constant features). Training,
evaluation and single-file inference all call :func:`normalise` with the ``stats.json`` of the
features folder, so they apply the very same float32 arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lungpipe.features.config import AUDIOSET_MEAN, AUDIOSET_STD, NormConfig
from lungpipe.util.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import torch  # lazy: torch loads after pin_portable_numerics()


@dataclass(frozen=True)
class ValueSums:
    """Count, mean and sum of squared deviations from the mean (``m2``) of a set of values."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, values: torch.Tensor | np.ndarray) -> ValueSums:
        """Two-pass statistics of every element of ``values`` (float64)."""
        import torch  # lazy: torch loads after pin_portable_numerics()

        v = torch.as_tensor(values)
        if v.numel() == 0:
            return cls()
        x = v.reshape(-1).to(torch.float64)
        mean = x.mean()
        m2 = torch.square(x - mean).sum()
        return cls(int(v.numel()), float(mean), float(m2))


def combine(parts: Iterable[ValueSums]) -> ValueSums:
    """Order-independent combination: total mean, and M2 = Σ m2_b + Σ n_b (mean_b − mean)²."""
    parts = [p for p in parts if p.count]
    count = sum(p.count for p in parts)
    if count == 0:
        return ValueSums()
    mean = math.fsum(p.count * p.mean for p in parts) / count
    m2 = math.fsum([p.m2 for p in parts] + [p.count * (p.mean - mean) ** 2 for p in parts])
    return ValueSums(count, mean, m2)


#: std at or below this fraction of max(|mean|, 1) counts as constant features.
CONSTANT_RELATIVE_STD = 1e-6


def mean_std(sums: ValueSums) -> tuple[float, float]:
    """Population mean and standard deviation from ``sums``."""
    if sums.count == 0:
        raise ValueError("no values")
    return sums.mean, math.sqrt(max(sums.m2, 0.0) / sums.count)


def norm_constants(cfg: NormConfig, train_sums: ValueSums, where: str = "training split") -> dict[str, Any]:
    """The ``mean``/``std``/``std_scale``/``norm_mode`` entries of ``stats.json`` for ``cfg``.

    ``train_stats`` needs a non-empty training split with some variance (else DataError).
    """
    if cfg.mode == "audioset":
        return {"mean": AUDIOSET_MEAN, "std": AUDIOSET_STD, "std_scale": cfg.std_scale, "norm_mode": cfg.mode}
    if cfg.mode == "none":
        return {"mean": 0.0, "std": 1.0, "std_scale": 1.0, "norm_mode": cfg.mode}
    if train_sums.count == 0:
        raise DataError(
            f"{where}: norm mode 'train_stats' needs training rows but the manifest has none with "
            "split == 'train'. Add training rows or use norm mode 'audioset' or 'none'."
        )
    mean, std = mean_std(train_sums)
    if not std > CONSTANT_RELATIVE_STD * max(abs(mean), 1.0):
        raise DataError(
            f"{where}: the training features are constant (mean {mean:.6g}, std {std:.3g}), so they "
            "cannot be normalised. Check that the training audio is not silent or constant."
        )
    return {"mean": mean, "std": std, "std_scale": cfg.std_scale, "norm_mode": cfg.mode}


def _float32_constants(stats: Mapping[str, Any]) -> tuple[np.float32, np.float32]:
    mean = np.float32(stats["mean"])
    scale = np.float32(float(stats.get("std_scale", 1.0)) * float(stats["std"]))
    return mean, scale


def normalise(x: np.ndarray | torch.Tensor, stats: Mapping[str, Any]) -> np.ndarray | torch.Tensor:
    """``(x − mean) / (std_scale · std)`` in float32 with the constants of ``stats``
    (a ``stats.json`` mapping); returns a new array (or CPU tensor, for a tensor input).
    ``norm_mode == "none"`` returns a float32 copy unchanged. Tensors go through the same
    numpy arithmetic, so both kinds give bit-identical values."""
    if not isinstance(x, np.ndarray):
        import torch  # lazy: torch loads after pin_portable_numerics()

        return torch.from_numpy(normalise(torch.as_tensor(x).detach().cpu().numpy(), stats))
    x32 = np.array(x, dtype=np.float32, copy=True)
    if stats.get("norm_mode") == "none":
        return x32
    mean, scale = _float32_constants(stats)
    np.subtract(x32, mean, out=x32)
    np.divide(x32, scale, out=x32)
    return x32
