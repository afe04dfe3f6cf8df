"""Cutting annotated cycles out of a recording and bringing them to one fixed length.

Offsets are taken at the *target* rate: a cycle ``[start_s, end_s)`` covers samples
``b(start_s) … b(end_s) − 1`` where ``b(t) = int(t·sr)`` (``boundary="truncate"``, the patch-mix CL
/ ADD4RSC release) or ``floor(t·sr + 0.5)`` (``boundary="round"``). Cycles longer than the fixed
length are truncated (their start kept, no fade); shorter ones are tiled ("repeat", the
literature's repeat padding) or followed by zeros ("zero"), then faded out; a cycle of exactly the
fixed length is faded too unless ``fade_full_length`` is off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lungpipe.features.audio import linear_fade
from lungpipe.features.config import CycleConfig
from lungpipe.util.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import torch  # lazy: torch loads after pin_portable_numerics()


def sample_index(seconds: float, sample_rate: int) -> int:
    """``seconds`` as a sample index at ``sample_rate``, rounding half up."""
    return math.floor(seconds * sample_rate + 0.5)


def boundary_index(seconds: float, sample_rate: int, boundary: str) -> int:
    """A cycle boundary as a sample offset: ``int(seconds · sample_rate)`` for ``truncate`` (the
    same float product and truncation as the release), :func:`sample_index` for ``round``."""
    if boundary == "truncate":
        return int(seconds * sample_rate)
    if boundary == "round":
        return sample_index(seconds, sample_rate)
    raise ValueError(f"unknown boundary mode {boundary!r}")


def _fill(dst: torch.Tensor, segment: torch.Tensor, pad: str) -> bool:
    """Write ``segment`` brought to ``len(dst)`` into ``dst``; returns whether it was padded."""
    n, length = dst.shape[-1], segment.shape[-1]
    if length == 0:
        raise ValueError("cannot pad an empty cycle")
    if length >= n:
        dst.copy_(segment[:n])
        return False
    dst[:length] = segment
    if pad == "repeat":
        filled = length  # tile by doubling the filled prefix: log2(n / length) copies
        while filled < n:
            step = min(filled, n - filled)
            dst[filled:filled + step] = dst[:step]
            filled += step
    elif pad == "zero":
        dst[length:] = 0.0
    else:
        raise ValueError(f"unknown pad mode {pad!r}")
    return True


def fix_length(cycle: torch.Tensor, n_samples: int, pad: str) -> tuple[torch.Tensor, bool]:
    """Bring a 1-D ``cycle`` to ``n_samples``: truncate, tile ("repeat") or zero-pad ("zero").

    Returns a new tensor and whether padding happened.
    """
    import torch  # lazy: torch loads after pin_portable_numerics()

    out = torch.empty(n_samples, dtype=cycle.dtype)
    padded = _fill(out, cycle, pad)
    return out, padded


def cut_cycles(
    recording: torch.Tensor,
    spans_s: Sequence[tuple[float, float]],
    cfg: CycleConfig,
    where: Sequence[str] | None = None,
) -> torch.Tensor:
    """Cut ``spans_s`` (start, end in seconds) out of a 1-D ``recording`` at ``cfg.sample_rate``
    and return a (n_spans, cfg.n_samples) float32 tensor.

    ``where[i]`` names span i in error messages (file and manifest line). A span that ends more
    than ``cfg.end_tolerance_s`` past the recording, or is empty, raises :class:`DataError`.
    """
    import torch  # lazy: torch loads after pin_portable_numerics()

    sr = cfg.sample_rate
    total = recording.shape[-1]
    n_samples = cfg.n_samples
    tolerance = sample_index(cfg.end_tolerance_s, sr)
    out = torch.empty((len(spans_s), n_samples), dtype=torch.float32)
    for i, (start_s, end_s) in enumerate(spans_s):
        label = where[i] if where is not None else f"cycle {i}"
        start, end = boundary_index(start_s, sr, cfg.boundary), boundary_index(end_s, sr, cfg.boundary)
        if start < 0:
            raise DataError(f"{label}: cycle start {start_s:g} s is negative; fix the annotation.")
        if end > total + tolerance or start >= total:
            raise DataError(
                f"{label}: cycle {start_s:g}-{end_s:g} s ends past the recording "
                f"({total / sr:.3f} s at {sr} Hz). Fix the annotation's times or the audio file."
            )
        end = min(end, total)
        if end <= start:
            raise DataError(
                f"{label}: cycle {start_s:g}-{end_s:g} s is empty (end <= start after rounding "
                f"to {sr} Hz samples). Fix or drop this annotation row."
            )
        padded = _fill(out[i], recording[start:end], cfg.pad)
        full_length = end - start == n_samples and cfg.fade_full_length
        if (padded or full_length) and cfg.pad_fade_samples > 0:
            linear_fade(out[i], 0, cfg.pad_fade_samples)
    return out
