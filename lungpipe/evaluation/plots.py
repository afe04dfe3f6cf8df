"""Figures for evaluation and reports, written as PNG files atomically.

Figures are built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``), which renders
with the Agg canvas and touches no global backend state, so it works headless and in threads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lungpipe.util.atomic import atomic_path

_DPI = 120
# Confusion matrices with more classes than this get no per-cell numbers (ESC-50 has 50).
_MAX_ANNOTATED_CLASSES = 20


def _new_figure(width: float, height: float):
    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _save(fig, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return Path(path)


# --------------------------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------------------------
def plot_confusion(confusion, class_names: Sequence[str], path: str | os.PathLike,
                   title: str | None = None) -> Path:
    """Confusion matrix (rows true, columns predicted) as a PNG.

    Cell shading is the row-normalised fraction (the recall of each true class spread over the
    predictions), the text is the count and that percentage. Rows without cycles stay blank.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square K×K, got shape {cm.shape}")
    k = cm.shape[0]
    names = [str(n) for n in class_names]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names given for a {k}×{k} confusion matrix")
    row_sums = cm.sum(axis=1, keepdims=True)
    fractions = np.divide(cm, row_sums, out=np.zeros(cm.shape, dtype=np.float64), where=row_sums > 0)

    side = max(4.0, 0.6 * k + 2.0)
    fig = _new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(k), labels=names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if k <= _MAX_ANNOTATED_CLASSES:
        for i in range(k):
            for j in range(k):
                colour = "white" if fractions[i, j] > 0.5 else "black"
                text = f"{cm[i, j]}\n{100 * fractions[i, j]:.1f}%" if row_sums[i, 0] else "0"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# training curves
# --------------------------------------------------------------------------------------------
def plot_curves(history: Mapping[str, Sequence[float | None]], path: str | os.PathLike,
                title: str | None = None, *, split_losses: bool = True, ylabel: str = "value") -> Path:
    """Per-epoch curves as a PNG: series whose name contains ``loss`` on a left panel, all other
    series (scores, accuracy, learning rate) on a right panel labelled ``ylabel``; a panel is left
    out when empty. ``split_losses=False``: every series on one panel (for series of one quantity
    whose names may contain "loss", e.g. a model's ``loss_beta`` setting).

    ``history`` maps a series name to one value per epoch (epochs count from 1); ``None`` or NaN
    leaves a gap (e.g. an epoch without validation). Series may differ in length.
    """
    if not history:
        raise ValueError("history is empty: nothing to plot")
    losses = {k: v for k, v in history.items() if split_losses and "loss" in k.lower()}
    others = {k: v for k, v in history.items() if k not in losses}
    panels = [(group, label) for group, label in ((losses, "loss"), (others, ylabel)) if group]

    # readable at the report's width: 7.5 x 5 in per panel, 11-13 pt text, the legend below
    # the axes when it has many entries
    n_series = max(len(group) for group, _ in panels)
    fig = _new_figure(7.5 * len(panels), 5.0 + 0.22 * max(0, n_series - 4))
    for index, (group, panel_label) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), index)
        for name, values in group.items():
            series = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
            epochs = np.arange(1, series.size + 1)
            ax.plot(epochs, series, marker="o" if series.size <= 30 else None, markersize=4, linewidth=1.8,
                    label=name)
        ax.set_xlabel("epoch", fontsize=12)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(panel_label, fontsize=12)
        ax.tick_params(labelsize=11)
        ax.grid(alpha=0.3)
        if len(group) > 4:
            ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
        else:
            ax.legend(fontsize=10)
    if title:
        fig.suptitle(title, fontsize=13)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# score bars with interval whiskers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreBar:
    """One bar: a value (fraction in [0, 1]) with an optional interval and a published value."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None
    reference: float | None = None


def _as_bar(row: ScoreBar | Mapping) -> ScoreBar:
    if isinstance(row, ScoreBar):
        return row
    unknown = set(row) - {"label", "value", "low", "high", "reference"}
    if unknown or "label" not in row or "value" not in row:
        raise ValueError(f"score bar rows need 'label' and 'value' (optional 'low', 'high', 'reference'); "
                         f"got keys {sorted(row)}")
    return ScoreBar(**row)


def plot_score_bars(rows: Sequence[ScoreBar | Mapping], path: str | os.PathLike,
                    ylabel: str = "ICBHI Score", title: str | None = None) -> Path:
    """Bar chart of one metric per model/run with whiskers from ``low`` to ``high``.

    ``rows``: :class:`ScoreBar` objects or mappings with keys ``label``, ``value`` and optional
    ``low``, ``high`` (interval bounds, e.g. bootstrap CI or mean ± std) and ``reference`` (a
    published figure, drawn as a black marker). Values are fractions and drawn as percentages.
    """
    bars = [_as_bar(r) for r in rows]
    if not bars:
        raise ValueError("no rows to plot")
    for bar in bars:
        for name in ("value", "low", "high", "reference"):
            v = getattr(bar, name)
            if v is not None and not (math.isfinite(v) and -1e-9 <= v <= 1 + 1e-9):
                raise ValueError(f"{bar.label}: {name} {v!r} is not a fraction in [0, 1]")

    x = np.arange(len(bars))
    values = np.array([100 * b.value for b in bars])
    fig = _new_figure(max(4.0, 0.9 * len(bars) + 2.0), 4.0)
    ax = fig.add_subplot()
    ax.bar(x, values, color="tab:blue", alpha=0.8)
    for i, bar in enumerate(bars):
        if bar.low is not None and bar.high is not None:
            ax.errorbar(i, 100 * bar.value,
                        yerr=[[100 * (bar.value - bar.low)], [100 * (bar.high - bar.value)]],
                        color="black", capsize=5, linewidth=1.2)
        ax.text(i, 2.0, f"{100 * bar.value:.1f}", ha="center", va="bottom", color="white", fontsize=8,
                fontweight="bold")
    refs = [(i, 100 * b.reference) for i, b in enumerate(bars) if b.reference is not None]
    if refs:
        ax.scatter([i for i, _ in refs], [v for _, v in refs], marker="D", color="black", zorder=3,
                   label="published")
        ax.legend(fontsize=8)
    ax.set_xticks(x, labels=[b.label for b in bars], rotation=30 if len(bars) > 4 else 0,
                  ha="right" if len(bars) > 4 else "center")
    ax.set_ylabel(f"{ylabel} (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    return _save(fig, path)
