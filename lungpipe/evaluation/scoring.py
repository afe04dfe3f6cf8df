"""Score the test predictions of every run of one architecture (folds × seeds) for DVC.

Writes

- ``metrics/<arch>.json`` (the DVC metric): headline numbers only, flat, no strings, sized so
  ``dvc metrics show`` stays readable (:func:`headline_metrics`);
- ``metrics/details/<arch>.json`` (not a DVC metric): every metric of the pooled predictions with
  its interval, the confusion matrix, per-run and per-fold values, the model's preset summary;
- ``plots/<arch>/confusion.csv`` (DVC's confusion template: one row per pooled test item),
  ``plots/<arch>/curves.csv`` (per-epoch validation values, mean over runs) and
  ``plots/<arch>/confusion.png``.

Two kinds of numbers, both in the metric file:

- ``<m>`` with ``<m>_lo`` / ``<m>_hi``: the metric of the **pooled** test predictions of all runs
  (seeds, and folds for cross-validation) with a 95% percentile bootstrap interval that resamples
  patients *and* runs (:func:`lungpipe.evaluation.metrics.bootstrap_intervals` with ``runs``), so it covers
  the training variance; never an average of per-run bounds.
- ``<m>_mean`` / ``<m>_sd``: mean and sample sd (ddof=1) of the per-run values over seeds, or over
  folds for cross-validation (a fold's value is the mean over its seeds); ``None`` with one value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lungpipe.evaluation.metrics import AUTO_METRIC, compute_metrics, scalar_metric_keys
from lungpipe.evaluation.plots import plot_confusion
from lungpipe.evaluation.predictions import read_predictions
from lungpipe.util import atomic
from lungpipe.util.errors import DataError
from lungpipe.util.typed_config import require


@dataclass
class EvaluationConfig:
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        require(self, "n_boot", self.n_boot >= 1, "must be >= 1 (bootstrap resamples)")


#: Suffixes of the metric file: pooled interval bounds, spread over seeds (or folds).
LOW, HIGH, MEAN, SD = "_lo", "_hi", "_mean", "_sd"
_FULL = ("", LOW, HIGH, MEAN, SD)
#: The DVC metric file's keys per metric task: (metric, suffixes). Sp and Se leave out ``_mean``:
#: on one test split their pooled value equals the mean over seeds (same denominators), and the
#: row must fit 200 columns in ``dvc metrics show``; the details file has every value.
HEADLINE: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "icbhi": (("sp", ("", LOW, HIGH, SD)), ("se", ("", LOW, HIGH, SD)), ("score", _FULL),
              ("accuracy", ("",)), ("macro_f1", ("",))),
    "multiclass": (("accuracy", _FULL), ("macro_f1", _FULL), ("balanced_accuracy", ("",))),
}
#: Metrics summarised per cross-validation fold, per metric task.
FOLD_METRICS: dict[str, tuple[str, ...]] = {
    "icbhi": ("score", "sp", "se", "accuracy", "macro_f1"),
    "multiclass": ("accuracy", "balanced_accuracy", "macro_f1"),
}
_DIGITS = 6  # stored precision of the metric file (DVC prints 5 decimals)
CI_METHOD = ("95% percentile bootstrap of the pooled test predictions, resampling patients and, with "
             "several seeds, the seeds (runs)")


def headline_keys(task: str) -> list[str]:
    """The keys of ``metrics/<arch>.json`` for ``task``, in order."""
    return [f"{name}{end}" for name, ends in HEADLINE[task] for end in ends]


def headline_metric(task: str) -> str:
    """The metric that ranks architectures (ICBHI Score; macro-F1 for multiclass tasks)."""
    return AUTO_METRIC[task]


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


def spread(per_run: Mapping[str, Mapping[str, Any]], name: str) -> tuple[float | None, float | None]:
    """(mean, sample sd) of metric ``name`` over seeds, or over folds when runs span several folds
    (each fold's value being the mean over its seeds). None where undefined."""
    folds = {key.split("/", 1)[0] for key in per_run}
    if len(folds) >= 2:
        table = fold_summary(per_run, [name])
        return table[f"{name}_fold_mean"], table[f"{name}_fold_std"]
    vals = np.array([float(r[name]) for r in per_run.values() if r.get(name) is not None], dtype=np.float64)
    return (float(vals.mean()) if vals.size else None, float(vals.std(ddof=1)) if vals.size >= 2 else None)


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


def score_test_predictions(labels, preds, patients, *, task: str, class_names: Sequence[str], n_boot: int,
                           seed: int, runs=None) -> dict[str, Any]:
    """Test metrics of (pooled) predictions with patient (and run) bootstrap intervals: the one
    function behind every reported test number (the training job's MLflow metrics and the
    evaluate stage's metric files)."""
    return compute_metrics(labels, preds, task=task, num_classes=len(class_names), class_names=list(class_names),
                           patients=patients, n_resamples=n_boot, seed=seed, runs=runs)


def headline_metrics(task: str, pooled: Mapping[str, Any], per_run: Mapping[str, Mapping[str, Any]]) -> dict:
    """The DVC metric file's content: flat numbers (or None), rounded to 6 decimals."""
    out: dict[str, float | None] = {}
    for name, ends in HEADLINE[task]:
        mean, sd = spread(per_run, name)
        values = {"": pooled.get(name), LOW: pooled.get(f"{name}_ci_low"), HIGH: pooled.get(f"{name}_ci_high"),
                  MEAN: mean, SD: sd}
        out.update({f"{name}{end}": values[end] for end in ends})
    return {k: (None if v is None else round(float(v), _DIGITS)) for k, v in out.items()}


def run_display_name(run_dir: Path, arch: str) -> str:
    """The run's model named with its preset (written by the training job into config.json)."""
    config = run_dir / "config.json"
    if config.is_file():
        name = json.loads(config.read_text(encoding="utf-8")).get("display_name")
        if name:
            return str(name)
    return arch


def evaluate_architecture(arch: str, models_dir: Path, metrics_path: Path, plots_dir: Path, *, task: str,
                          class_names: list[str], cfg: EvaluationConfig, selection: str = "validation",
                          folds: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
                          details_path: Path | None = None) -> dict:
    """Score the runs of ``arch`` (``folds`` × ``seeds`` when given, else every run found), write
    the DVC metric file, the details file (default ``<metrics dir>/details/<arch>.json``) and the
    plots. Returns the details."""
    runs = find_runs(models_dir, folds, seeds)
    k = len(class_names)
    per_run: dict[str, dict[str, Any]] = {}
    pooled: dict[str, list[np.ndarray]] = {"labels": [], "preds": [], "patients": [], "runs": []}
    for run in runs:
        pred = read_predictions(run / "predictions.csv", num_classes=k)
        if not pred.has_labels:
            raise DataError(f"{run / 'predictions.csv'}: test predictions without labels cannot be scored")
        m = score_test_predictions(pred.labels, pred.preds, None, task=task, class_names=class_names, n_boot=0,
                                   seed=cfg.seed)
        per_run[f"{run.parent.name}/{run.name}"] = {key: m[key] for key in scalar_metric_keys(m)}
        # patients of different folds/seeds are the same people: keep ids, bootstrap pools them
        pooled["labels"].append(pred.labels)
        pooled["preds"].append(pred.preds)
        pooled["patients"].append(np.asarray(pred.patients).astype(str))
        pooled["runs"].append(np.full(len(pred), run.name))  # the seed: resampled across folds alike
    labels, preds = np.concatenate(pooled["labels"]), np.concatenate(pooled["preds"])
    overall = score_test_predictions(labels, preds, np.concatenate(pooled["patients"]), task=task,
                                     class_names=class_names, n_boot=cfg.n_boot, seed=cfg.seed,
                                     runs=np.concatenate(pooled["runs"]))
    headline = headline_metrics(task, overall, per_run)
    display = run_display_name(runs[0], arch)
    scalars = scalar_metric_keys(overall)
    details: dict[str, Any] = {
        "architecture": arch, "display_name": display, "task": task, "class_names": list(class_names),
        "selection": selection, "n_runs": len(runs), "runs_scored": list(per_run), "ci_method": CI_METHOD,
        "headline": headline_metric(task), "metrics": headline,
        "pooled": {key: {"value": overall[key], "ci_low": overall.get(f"{key}_ci_low"),
                         "ci_high": overall.get(f"{key}_ci_high")} for key in scalars},
        "confusion": overall["confusion"], "n_samples": overall["n_samples"], "n_patients": overall.get("n_patients"),
        "n_boot": cfg.n_boot, "seed": cfg.seed, "per_run": per_run,
    }
    if len({key.split("/", 1)[0] for key in per_run}) >= 2:  # cross-validation: mean ± sd over folds
        details["folds"] = fold_summary(per_run, [m for m in FOLD_METRICS[task] if m in scalars])
    if selection == "test":
        details["warning"] = "checkpoints selected on the TEST set: optimistic, for reproducing published numbers"
    atomic.write_json(metrics_path, headline)
    details_path = details_path or Path(metrics_path).parent / "details" / f"{arch}.json"
    atomic.write_json(details_path, details)

    plots_dir = Path(plots_dir)
    names = np.asarray(class_names)
    atomic.write_csv(plots_dir / "confusion.csv", pd.DataFrame({"label": names[labels], "pred": names[preds]}))
    key = headline_metric(task)
    plot_confusion(np.asarray(overall["confusion"]), class_names, plots_dir / "confusion.png",
                   title=f"{display}\ntest, {len(runs)} run(s) pooled · {key} {_pct(overall.get(key))}")
    atomic.write_csv(plots_dir / "curves.csv", mean_curves(runs))
    return details


CURVE_COLUMNS = ("train_loss", "val_score", "val_sp", "val_se", "val_accuracy", "val_macro_f1")


def mean_curves(runs: Sequence[Path]) -> pd.DataFrame:
    """Per-epoch mean over runs of the loss and validation columns of their ``history.json``
    (an epoch's mean uses the runs that reached it); ``n_runs`` says how many."""
    frames = []
    for run in runs:
        history = pd.DataFrame(json.loads((Path(run) / "history.json").read_text(encoding="utf-8")))
        if "epoch" not in history.columns:
            history["epoch"] = np.arange(1, len(history) + 1)
        frames.append(history[[c for c in ("epoch", *CURVE_COLUMNS) if c in history.columns]])
    if not frames or all(f.empty for f in frames):
        return pd.DataFrame({"epoch": []})
    table = pd.concat(frames).apply(pd.to_numeric, errors="coerce")
    grouped = table.groupby("epoch", sort=True)
    out = grouped.mean().reset_index()
    out["n_runs"] = grouped.size().to_numpy()
    return out


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def summary_line(details: Mapping[str, Any]) -> str:
    """``resnet50 (small preset: …): score 0.712 [0.650, 0.770] pooled over 3 runs; mean ± sd over
    seeds 0.712 ± 0.021``: the headline as people read it (3 decimals, interval in brackets)."""
    key, m = details["headline"], details["metrics"]

    def num(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    over = "folds" if "folds" in details else "seeds"
    line = (f"{details['display_name']}: {key} {num(m.get(key))} [{num(m.get(key + LOW))}, {num(m.get(key + HIGH))}] "
            f"pooled over {details['n_runs']} run(s)")
    if m.get(key + SD) is not None:
        line += f"; mean ± sd over {over} {num(m.get(key + MEAN))} ± {num(m.get(key + SD))}"
    return line
