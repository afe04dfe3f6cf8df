"""The model registry: each architecture's selected model as ``lungpipe-<dataset>-<arch>@champion``.

The champion is the run folder (``models/<arch>/<fold>/seed<k>/``) with the best validation score
(its ``val_metrics.json``, the selected epoch's validation metrics) among the configured folds and
seeds; its MLflow run comes from the folder's ``mlflow_run.json`` and its model is the LoggedModel
that run logged. Registering again with the same champion adds no version.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from lungpipe.tracking import check_tracking_server, read_run_file

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class Champion:
    name: str  # registered model name
    version: str
    alias: str
    run_id: str
    model_id: str
    run_dir: Path
    val_value: float

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def registered_name(dataset: str, arch: str) -> str:
    """``lungpipe-<dataset>-<arch>`` with characters the registry dislikes replaced by ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"lungpipe-{dataset}-{arch}")


def _val_value(run_dir: Path, metric: str) -> float | None:
    try:
        value = json.loads((run_dir / "val_metrics.json").read_text(encoding="utf-8")).get(metric)
    except (OSError, json.JSONDecodeError):
        return None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def select_champion(run_dirs: Sequence[str | os.PathLike], metric: str) -> tuple[Path, float, dict] | None:
    """The run folder with the best validation ``metric`` among those with an MLflow run file
    (ties: the first listed); None when no folder has both."""
    best: tuple[Path, float, dict] | None = None
    for run_dir in map(Path, run_dirs):
        value, run = _val_value(run_dir, metric), read_run_file(run_dir)
        if value is None or run is None:
            continue
        if best is None or value > best[1]:
            best = (run_dir, value, run)
    return best


def register_champion(dataset: str, arch: str, run_dirs: Sequence[str | os.PathLike], metric: str,
                      tracking_uri: str | None = None, alias: str = CHAMPION_ALIAS) -> Champion | None:
    """Register the best of ``run_dirs`` (by validation ``metric``) as ``lungpipe-<dataset>-<arch>``
    and point ``alias`` at it. None (and a log line) when no run folder has an MLflow run."""
    selected = select_champion(run_dirs, metric)
    if selected is None:
        log.info("%s: no run folder with val_metrics.json and %s; nothing registered", arch, "mlflow_run.json")
        return None
    run_dir, value, run = selected
    uri = tracking_uri or run["tracking_uri"]
    check_tracking_server(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    models = [m for m in client.search_logged_models(experiment_ids=[run["experiment_id"]],
                                                     filter_string=f"source_run_id = '{run['run_id']}'")]
    if not models:
        log.warning("%s: MLflow run %s logged no model; nothing registered", arch, run["run_id"])
        return None
    model = max(models, key=lambda m: m.creation_timestamp)
    name = registered_name(dataset, arch)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"lungpipe {arch} on {dataset}; alias '{alias}': the "
                                                          f"best validation {metric} among seeds and folds")
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    source = f"models:/{model.model_id}"
    if current is not None and (current.model_id == model.model_id or current.source == source
                                or current.run_id == run["run_id"]):
        version = current
    else:
        version = client.create_model_version(name, source=source, run_id=run["run_id"],
                                              model_id=model.model_id,
                                              tags={f"val_{metric}": f"{value:.6g}", "run_dir": f"{run_dir.parent.name}/{run_dir.name}"})
        client.set_registered_model_alias(name, alias, version.version)
    return Champion(name=name, version=str(version.version), alias=alias, run_id=run["run_id"],
                    model_id=model.model_id, run_dir=run_dir, val_value=value)
