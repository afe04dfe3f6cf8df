"""What every stage script shares: the repo root, params.yaml, logging, the dataset description."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # stages run as scripts: make `lungpipe` importable from a plain clone
    sys.path.insert(0, str(ROOT))


def load_params(path: Path | None = None) -> dict[str, Any]:
    path = Path(path or os.environ.get("LUNGPIPE_PARAMS", ROOT / "params.yaml"))
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("LUNGPIPE_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")


def path(rel: str | os.PathLike) -> Path:
    """A path relative to the repo root (stages may be run from anywhere)."""
    p = Path(rel)
    return p if p.is_absolute() else ROOT / p


def dataset_info(params: dict[str, Any], manifest_csv: str | os.PathLike | None = None) -> dict[str, Any]:
    """Task description of the configured data source (``data.source`` with its ``data.<section>``
    options): name, class names, task, metric task and the cross-validation folds of ``data.folds``
    (``[]`` for the official split).

    Class names come from ``source.class_names_for(cfg, manifest)`` with the manifest read from
    ``manifest_csv`` (default data/manifest.csv) when it exists, so a label map in params changes
    the class list. A selection/tuning metric the task does not compute is a ConfigError naming it
    (``auto`` always fits).
    """
    import pandas as pd

    from lungpipe.data.sources import cv_folds, source_from_params
    from lungpipe.metrics import resolve_metric

    data = params["data"]
    source, cfg = source_from_params(data)
    folds = cv_folds(data.get("folds"), source, cfg)
    manifest_path = Path(manifest_csv) if manifest_csv is not None else path("data/manifest.csv")
    manifest = pd.read_csv(manifest_path) if manifest_path.is_file() else None
    class_names = source.class_names_for(cfg, manifest)
    # a metric the task does not compute fails here, before any training
    train = params.get("train") or {}
    chosen = {"train.defaults.selection_metric": (train.get("defaults") or {}).get("selection_metric", "auto"),
              "tuning.metric": (params.get("tuning") or {}).get("metric", "auto")}
    for arch, section in (params.get("arch") or {}).items():
        if "selection_metric" in ((section or {}).get("train") or {}):
            chosen[f"arch.{arch}.train.selection_metric"] = section["train"]["selection_metric"]
    for where, metric in chosen.items():
        resolve_metric(metric, source.metric_task, where)
    return {"name": source.name, "class_names": list(class_names), "task": source.task,
            "metric_task": source.metric_task, "folds": folds}


def experiment_name(params: dict[str, Any]) -> str:
    prefix = (params.get("mlflow") or {}).get("experiment_prefix", "lungpipe")
    return f"{prefix}-{params['data']['source']}"
