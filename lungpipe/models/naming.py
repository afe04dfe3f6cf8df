"""Honest names: an architecture named with the preset that actually ran.

At the default ``small`` preset "resnet50" is a 1-1-1-1 width-16 net; outputs (metric details,
plot titles, MLflow run names and tags, the report) say so:
``resnet50 (small preset: 1-1-1-1 bottleneck blocks, width 16 (lungpipe's CPU size))``.

The preset's line is the model registry's own one-line summary (``lungpipe.models.preset_summary``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lungpipe.models.registry import get_spec


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "-".join(_text(v) for v in value)
    if isinstance(value, Mapping):
        return str(value.get("preset", "")) or ",".join(f"{k}={_text(v)}" for k, v in value.items())
    return str(value)


def preset_summary(arch: str, model: Mapping[str, Any] | None = None) -> str:
    """``small preset: 1-1-1-1 bottleneck blocks, width 16 (lungpipe's CPU size)``: the preset named
    in ``model`` (default ``small``, as the registry resolves it) with the registry's one-line
    summary of it; keys set in ``model`` besides the preset are listed as overrides."""
    model = dict(model or {})
    preset = str(model.pop("preset", "small"))
    summary = get_spec(arch).summaries.get(preset)
    overrides = [f"{k}={_text(v)}" for k, v in model.items() if k not in ("num_classes", "n_frames", "n_mels")]
    text = f"{preset} preset" + (f": {summary}" if summary else "")
    return text + (f"; {', '.join(overrides)}" if overrides else "")


def display_name(arch: str, model: Mapping[str, Any] | None = None) -> str:
    """``resnet50 (small preset: layers 1-1-1-1, base_width 16)``."""
    return f"{arch} ({preset_summary(arch, model)})"
