"""Score the test predictions of every run of one architecture (folds × seeds) for DVC.

Writes ``metrics/<arch>.json`` (DVC metrics), ``plots/<arch>/confusion.csv`` (DVC's confusion
template: one row per test item with ``label`` and ``pred`` class names), ``plots/<arch>/curves.csv``
(per-epoch validation values for DVC's line plots) and ``plots/<arch>/confusion.png`` for people.

Top-level metrics are computed on the pooled predictions of all runs (for ESC-50's folds that is
the usual cross-validated figure; for several seeds it averages their behaviour), with bootstrap
intervals over patients; ``<metric>_mean`` / ``<metric>_std`` summarise the spread across runs.

With runs on two or more cross-validation folds (``models/<arch>/<k>/seed<s>``, e.g. ESC-50's five)
the headline metrics (:data:`FOLD_METRICS`) are also summarised per fold: each fold's value is the
mean over its seeds, ``<metric>_fold_mean`` / ``<metric>_fold_std`` are the mean and sample
standard deviation (ddof=1) over folds (the "mean ± sd over 5 folds" of ESC-50 papers), and
``folds`` holds the per-fold values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lungpipe import atomic
from lungpipe.config import require
from lungpipe.errors import DataError


@dataclass
class EvaluationConfig:
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        require(self, "n_boot", self.n_boot >= 1, "must be >= 1 (bootstrap resamples)")


#: Metrics summarised per cross-validation fold, per metric task.
FOLD_METRICS: dict[str, tuple[str, ...]] = {
    "icbhi": ("score", "sp", "se", "accuracy", "macro_f1"),
    "multiclass": ("accuracy", "balanced_accuracy", "macro_f1"),
}


def _fold_order(fold: str) -> tuple[int, int | str]:
    return (0, int(fold)) if fold.isdigit() else (1, fold)


def fold_summary(per_run: Mapping[str, Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """Mean ± sd over folds of ``metrics``, from per-run metrics keyed ``<fold>/seed<k>``.

    A fold's value is the mean over its seeds (undefined values left out); the std over folds is
    the sample std (ddof=1), None with fewer than two defined folds. Returns ``n_folds``,
    ``<metric>_fold_mean``, ``<metric>_fold_std`` and ``folds`` ({fold: {metric: value}}).
    """
    by_fold: dict[str, list[Mapping[str, Any]]] = {}
    for key, values in per_run.items():
        by_fold.setdefault(key.split("/", 1)[0], []).append(values)
    folds = sorted(by_fold, key=_fold_order)
    table: dict[str, dict[str, Any]] = {}
    for fold in folds:
        row: dict[str, Any] = {"n_runs": len(by_fold[fold])}
        for name in metrics:
            vals = [float(r[name]) for r in by_fold[fold] if r.get(name) is not None]
            row[name] = float(np.mean(vals)) if vals else None
        table[fold] = row
    out: dict[str, Any] = {"n_folds": len(folds)}
    for name in metrics:
        vals = np.array([table[f][name] for f in folds if table[f][name] is not None], dtype=np.float64)
        out[f"{name}_fold_mean"] = float(vals.mean()) if vals.size else None
        out[f"{name}_fold_std"] = float(vals.std(ddof=1)) if vals.size >= 2 else None
    out["folds"] = table
    return out


def find_runs(models_dir: Path, folds: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[Path]:
    """Run folders (``<fold>/seed<k>``) under ``models/<arch>`` that hold test predictions.

    With ``folds`` and ``seeds`` (what params configure) exactly those runs, each required: folders
    left from an earlier configuration (another dataset's folds, dropped seeds) are not scored.
    Without them, every ``*/seed*`` folder found."""
    models_dir = Path(models_dir)
    if folds is not None and seeds is not None:
        runs = [models_dir / str(fold) / f"seed{seed}" for fold in folds for seed in seeds]
        missing = [str(r / "predictions.csv") for r in runs if not (r / "predictions.csv").is_file()]
        if missing:
            raise DataError(f"missing test predictions {missing}: run the train stage for these folds/seeds "
                            "first (dvc repro)")
        return runs
    runs = sorted(p.parent for p in models_dir.glob("*/seed*/predictions.csv"))
    if not runs:
        raise DataError(f"{models_dir}: no */seed*/predictions.csv found; run the train stage first (dvc repro)")
    return runs


def evaluate_architecture(arch: str, models_dir: Path, metrics_path: Path, plots_dir: Path, *, task: str,
                          class_names: list[str], cfg: EvaluationConfig, selection: str = "validation",
                          folds: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> dict:
    """Score the runs of ``arch`` (``folds`` × ``seeds`` when given, else every run found) and write
    the DVC metrics file and plots."""
    from lungpipe.metrics import compute_metrics, scalar_metric_keys, summarize_seeds
    from lungpipe.plots import plot_confusion
    from lungpipe.predictions import read_predictions

    runs = find_runs(models_dir, folds, seeds)
    k = len(class_names)
    per_run, pooled = {}, {"labels": [], "preds": [], "patients": []}
    for run in runs:
        pred = read_predictions(run / "predictions.csv", num_classes=k)
        if not pred.has_labels:
            raise DataError(f"{run / 'predictions.csv'}: test predictions without labels cannot be scored")
        m = compute_metrics(pred.labels, pred.preds, task=task, num_classes=k, class_names=class_names)
        per_run[f"{run.parent.name}/{run.name}"] = {key: m[key] for key in scalar_metric_keys(m)}
        # patients of different folds/seeds are the same people: keep ids, bootstrap pools them
        pooled["labels"].append(pred.labels)
        pooled["preds"].append(pred.preds)
        pooled["patients"].append(np.asarray(pred.patients).astype(str))
    labels, preds = np.concatenate(pooled["labels"]), np.concatenate(pooled["preds"])
    patients = np.concatenate(pooled["patients"])
    overall = compute_metrics(labels, preds, task=task, num_classes=k, class_names=class_names, patients=patients,
                              n_resamples=cfg.n_boot, seed=cfg.seed)
    scalars = scalar_metric_keys(overall)
    result: dict[str, Any] = {key: overall[key] for key in scalars}
    result.update({f"{key}{end}": overall.get(f"{key}{end}") for key in scalars for end in ("_ci_low", "_ci_high")})
    result.update({key: v for key, v in summarize_seeds(per_run.values()).items()})
    if len({key.split("/", 1)[0] for key in per_run}) >= 2:  # cross-validation: mean ± sd over folds
        wanted = [m for m in FOLD_METRICS.get(task, ("accuracy",)) if m in scalars]
        result.update(fold_summary(per_run, wanted))
    result.update({"architecture": arch, "selection": selection, "n_runs": len(runs),
                   "confusion": overall["confusion"], "runs": per_run})
    if selection == "test":
        result["warning"] = "checkpoints selected on the TEST set: optimistic, for reproducing published numbers"
    atomic.write_json(metrics_path, result)

    names = np.asarray(class_names)
    atomic.write_csv(Path(plots_dir) / "confusion.csv", pd.DataFrame({"label": names[labels], "pred": names[preds]}))
    plot_confusion(np.asarray(overall["confusion"]), class_names, Path(plots_dir) / "confusion.png",
                   title=f"{arch} · test · Score {_pct(result.get('score'))}" if task == "icbhi"
                   else f"{arch} · test · accuracy {_pct(result.get('accuracy'))}")
    history = json.loads((runs[0] / "history.json").read_text())
    curves = pd.DataFrame(history)
    keep = [c for c in ("epoch", "train_loss", "val_score", "val_sp", "val_se", "val_accuracy", "val_macro_f1")
            if c in curves.columns]
    atomic.write_csv(Path(plots_dir) / "curves.csv", curves[keep])
    return result


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
