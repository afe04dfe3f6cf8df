"""The report's pictures, drawn from the pipeline outputs with :mod:`lungpipe.evaluation.plots`: score bars
(pooled value, pooled interval), each architecture's pooled confusion matrix and training curves,
and one overlay of every architecture's validation curve (also written as the DVC plot
``plots/validation_curves.csv``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from lungpipe.evaluation.plots import plot_confusion, plot_curves, plot_score_bars
from lungpipe.report.outputs import ArchOutputs
from lungpipe.util import atomic

#: Columns of the overlay CSV (DVC's top-level plot with the ``overlay`` template).
OVERLAY_COLUMNS = ("architecture", "epoch", "value", "n_runs")


def slug(name: str) -> str:
    """A file-name-safe form of an architecture name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "unnamed"


def metric_label(key: str) -> str:
    return {"sp": "Sp", "se": "Se", "score": "Score", "accuracy": "Accuracy", "macro_f1": "Macro-F1",
            "balanced_accuracy": "Balanced accuracy"}.get(key, key)


def score_bars(archs: list[ArchOutputs], path: Path) -> Path | None:
    """The pooled headline metric per architecture with its pooled bootstrap interval."""
    rows = []
    for a in archs:
        value = a.metrics.get(a.headline)
        if value is None:
            continue
        low, high = a.metrics.get(f"{a.headline}_lo"), a.metrics.get(f"{a.headline}_hi")
        rows.append({"label": a.architecture, "value": value, "low": low, "high": high})
    if not rows:
        return None
    label = metric_label(archs[0].headline)
    return plot_score_bars(rows, path, ylabel=label, title=f"Test {label}, pooled runs (95% CI)")


def confusion_figure(arch: ArchOutputs, path: Path) -> Path:
    d = arch.details
    return plot_confusion(np.asarray(d["confusion"]), d["class_names"], path,
                          title=f"{arch.display_name}\ntest, {d['n_runs']} run(s) pooled")


def _series(history: list[dict], key: str) -> list[float | None]:
    return [record.get(key) for record in history]


def curves_figure(arch: ArchOutputs, path: Path) -> Path | None:
    """``train_loss`` and ``val_<headline>`` per epoch of every run."""
    series: dict[str, list[float | None]] = {}
    several = len(arch.runs) > 1
    for run in arch.runs:
        suffix = f" (fold {run.fold}, seed {run.seed})" if several else ""
        for key in ("train_loss", f"val_{arch.headline}"):
            values = _series(run.history, key)
            if any(v is not None for v in values):
                series[f"{key}{suffix}"] = values
    if not series:
        arch.notes.append("no per-epoch history (history.json) in its runs")
        return None
    return plot_curves(series, path, title=f"{arch.display_name}: training curves")


def overlay_table(archs: list[ArchOutputs]) -> pd.DataFrame:
    """Long table of the mean validation headline metric per architecture and epoch (epochs count
    from 1; an epoch's mean uses the runs that reached it)."""
    rows = []
    for a in archs:
        key = f"val_{a.headline}"
        values: dict[int, list[float]] = {}
        for run in a.runs:
            for i, record in enumerate(run.history):
                if record.get(key) is not None:
                    values.setdefault(int(record.get("epoch", i)) + 1, []).append(float(record[key]))
        for epoch in sorted(values):
            rows.append({"architecture": a.display_name, "epoch": epoch, "value": float(np.mean(values[epoch])),
                         "n_runs": len(values[epoch])})
    return pd.DataFrame(rows, columns=list(OVERLAY_COLUMNS))


def write_overlay_csv(archs: list[ArchOutputs], path: Path) -> Path:
    return atomic.write_csv(path, overlay_table(archs))


def overlay_figure(archs: list[ArchOutputs], path: Path) -> Path | None:
    """The overlay table's curves in one panel, each labelled with its architecture's name (the
    display names, with the preset's description, are too long for a legend: the table beside
    the figure gives them)."""
    table = overlay_table(archs)
    if table.empty:
        return None
    short = {a.display_name: a.architecture for a in archs}
    series = {}
    for name, group in table.groupby("architecture", sort=False):
        by_epoch = dict(zip(group["epoch"], group["value"]))
        series[short.get(name, name)] = [by_epoch.get(e) for e in range(1, int(group["epoch"].max()) + 1)]
    label = metric_label(archs[0].headline)
    return plot_curves(series, path, title=f"Validation {label} per epoch, mean over runs", split_losses=False,
                       ylabel=f"validation {label}")
