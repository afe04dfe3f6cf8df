"""Reading the pipeline's own outputs a report is built from: the same files DVC tracks.

- ``metrics/<arch>.json``: the headline numbers (what ``dvc metrics show`` prints);
- ``metrics/details/<arch>.json``: pooled metrics with intervals, confusion, per-run values;
- ``models/<arch>/<fold>/seed<k>/``: ``config.json`` (resolved settings), ``history.json``
  (per-epoch records), ``run_summary.json`` (parameters, device, time, epochs) and, when the run
  was tracked, ``mlflow_run.json`` (``run_id``, ``experiment_id``, ``tracking_uri``, ``run_name``);
- ``tuned/<arch>.yaml``: the Optuna study's result.

Only the runs the details file says were scored are read, so stale folders never leak in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungpipe.util.errors import LungpipeError
from lungpipe.util.yaml_load import safe_load


class NoResultsError(LungpipeError):
    """There is nothing to report: no metrics file of the evaluate stage."""


@dataclass
class RunOutputs:
    """One training run (architecture × fold × seed) as the train stage left it."""

    fold: str
    seed: str
    path: Path
    config: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    mlflow: dict[str, Any] | None
    test_headline: float | None = None


@dataclass
class ArchOutputs:
    """One architecture: its DVC metrics, their details, its runs and its tuning result."""

    architecture: str
    metrics: dict[str, float | None]
    details: dict[str, Any]
    runs: list[RunOutputs]
    tuned: dict[str, Any] | None = None
    best: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def display_name(self) -> str:
        return str(self.details.get("display_name") or self.architecture)

    @property
    def headline(self) -> str:
        return str(self.details["headline"])

    @property
    def task(self) -> str:
        return str(self.details["task"])


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise LungpipeError(f"{path}: not valid JSON ({exc}); re-run the stage that writes it (dvc repro)") from None


def read_run(run_dir: Path, headline: str, per_run: dict[str, Any]) -> RunOutputs:
    fold, seed = run_dir.parent.name, run_dir.name.removeprefix("seed")
    mlflow_file = run_dir / "mlflow_run.json"
    summary_file = run_dir / "run_summary.json"
    history_file = run_dir / "history.json"
    config_file = run_dir / "config.json"
    return RunOutputs(
        fold=fold, seed=seed, path=run_dir,
        config=_json(config_file) if config_file.is_file() else {},
        history=_json(history_file) if history_file.is_file() else [],
        summary=_json(summary_file) if summary_file.is_file() else {},
        mlflow=_json(mlflow_file) if mlflow_file.is_file() else None,
        test_headline=(per_run.get(f"{fold}/{run_dir.name}") or {}).get(headline),
    )


def read_architecture(root: Path, arch: str) -> ArchOutputs:
    root = Path(root)
    metrics_file = root / "metrics" / f"{arch}.json"
    details_file = root / "metrics" / "details" / f"{arch}.json"
    if not details_file.is_file():
        raise NoResultsError(f"{details_file} is missing next to {metrics_file}: run the evaluate stage "
                             f"(dvc repro evaluate@{arch})")
    details = _json(details_file)
    per_run = details.get("per_run") or {}
    runs = [read_run(root / "models" / arch / Path(key), details["headline"], per_run)
            for key in details.get("runs_scored", [])]
    tuned_file = root / "tuned" / f"{arch}.yaml"
    tuned = safe_load(tuned_file.read_text(encoding="utf-8")) if tuned_file.is_file() else None
    out = ArchOutputs(arch, _json(metrics_file), details, runs, tuned)
    if details.get("selection") == "test":
        out.notes.append("model selected on the TEST split (split.selection: test): optimistic, for reproducing "
                         "published protocols only")
    missing = [f"{r.fold}/seed{r.seed}" for r in runs if not r.summary]
    if missing:
        out.notes.append(f"no run_summary.json for {', '.join(missing)} (trained by an older version)")
    return out


def collect(root: Path, architectures: list[str] | None = None) -> list[ArchOutputs]:
    """Every architecture with a metrics file (or those named), best first by the pooled headline
    metric; the best one(s) are marked (ties share the mark)."""
    root = Path(root)
    names = architectures if architectures is not None else sorted(
        p.stem for p in (root / "metrics").glob("*.json") if p.is_file())
    if not names:
        raise NoResultsError(f"no metrics/<arch>.json under {root}: run the pipeline first (dvc repro)")
    archs = [read_architecture(root, name) for name in names]

    def value(a: ArchOutputs) -> float | None:
        return a.metrics.get(a.headline)

    archs.sort(key=lambda a: (value(a) is None, -(value(a) or 0.0), a.architecture))
    defined = [value(a) for a in archs if value(a) is not None]
    for a in archs:
        a.best = bool(defined) and value(a) is not None and abs(value(a) - max(defined)) <= 1e-12
    return archs
