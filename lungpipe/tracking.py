"""MLflow tracking: where runs go, and what every training run logs.

Tracking URI: ``MLFLOW_TRACKING_URI`` when set, else an embedded SQLite store at an ABSOLUTE path
in the repository root (``sqlite:////abs/repo/mlflow.db``), so ``dvc exp run --temp/--queue``,
which works in a copy of the repo, still logs into the user's store. One experiment per dataset.
Metric names are stable across runs: ``train_loss``, ``val_sp``, ``val_se``, ``val_score`` per
epoch; ``test_sp``, ``test_se``, ``test_score`` and their ``_ci_low``/``_ci_high`` at the end.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lungpipe.config import flatten
from lungpipe.errors import LungpipeError

MAX_PARAM_LEN = 6000


class TrackingUnavailableError(LungpipeError):
    """The MLflow tracking server cannot be reached."""


def resolve_tracking_uri(repo_root: str | os.PathLike | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<abs user repo>/mlflow.db``.

    ``dvc exp run --temp`` and ``--queue`` run the pipeline in a copy of the repository at
    ``<repo>/.dvc/tmp/exps/[standalone/]tmpXXXX`` that is deleted afterwards; from inside such a copy
    the store is the ORIGINAL repository's ``mlflow.db`` (DVC also sets ``DVC_ROOT`` to it in both
    modes, but the path is what this relies on)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = user_repo_root(Path(repo_root or Path.cwd()))
    return f"sqlite:///{root / 'mlflow.db'}"


def user_repo_root(repo_root: Path) -> Path:
    """The user's repository: ``repo_root`` itself, or the repository that holds it when
    ``repo_root`` is a DVC experiment copy under ``<repo>/.dvc/tmp/exps/``."""
    root = Path(repo_root).resolve()
    for parent in root.parents:
        if parent.name == "exps" and parent.parent.name == "tmp" and parent.parent.parent.name == ".dvc":
            return parent.parent.parent.parent
    return root


#: MLflow's HTTP retry settings unless the user set them: 3 retries, back-off 1 s (1 + 2 + 4 s), 30 s
#: per request, so a server that answers 5xx stops a run in well under a minute, not 4 (MLflow's
#: defaults: 7 retries, factor 2, 120 s).
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
#: A cheap read of the tracking API (not /health): a half-broken server answers /health but not this.
API_PROBE = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"


def bound_http_retries() -> None:
    for key, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(key, value)


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast with a clear error when an HTTP tracking server does not answer, or answers its
    health check but not its API (5xx, or 401/403 without credentials).

    Local stores (sqlite, file paths) need no check. Called before training starts, so a wrong
    URI does not cost hours of training whose log is then lost.
    """
    if not uri.startswith(("http://", "https://")):
        return
    base = uri.rstrip("/")
    fix = "Start or repair it (mlflow server …), fix MLFLOW_TRACKING_URI, or unset it to log into the local sqlite store."
    for route in ("/health", API_PROBE):
        try:
            with urllib.request.urlopen(base + route, timeout=timeout):
                pass
        except urllib.error.HTTPError as exc:
            if route == API_PROBE and exc.code < 500 and exc.code not in (401, 403):
                continue  # e.g. 404 RESOURCE_DOES_NOT_EXIST: the API works
            raise TrackingUnavailableError(
                f"MLflow server at {uri} answered HTTP {exc.code} on {route.split('?')[0]}. {fix}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingUnavailableError(f"cannot reach the MLflow tracking server at {uri} ({exc}). {fix}") from exc


def warn_if_shared_sqlite(uri: str) -> None:
    """Several processes logging into one SQLite file can fail with "database is locked"."""
    if uri.startswith("sqlite:"):
        import logging

        logging.getLogger(__name__).warning(
            "MLflow logs into the SQLite file %s; several workers writing it at once can fail with "
            "'database is locked'. For parallel workers run a tracking server and point every worker at it: %s",
            uri, SERVER_HINT)


SERVER_HINT = ("mlflow server --backend-store-uri postgresql://…/mlflow --artifacts-destination /shared/mlartifacts "
               "--port 5000, then MLFLOW_TRACKING_URI=http://<host>:5000")


@contextlib.contextmanager
def explain_sqlite_lock(uri: str) -> Iterator[None]:
    """Turn SQLite's "database is locked" (several writers on one store file) into an error that
    names the store and says to use a tracking server."""
    try:
        yield
    except Exception as exc:
        if uri.startswith("sqlite:") and "database is locked" in str(exc):
            raise TrackingUnavailableError(
                f"the MLflow store {uri} is locked by another process writing it (\"database is locked\"): "
                f"one SQLite file does not take several parallel writers. Use a tracking server instead: {SERVER_HINT}"
            ) from exc
        raise


def git_commit(repo_root: str | os.PathLike | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def loggable_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Flatten nested params to ``a.b`` keys with string values MLflow accepts."""
    out = {}
    for key, value in flatten(params).items():
        text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
        out[key] = text[:MAX_PARAM_LEN]
    return out


def scalar_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Keep finite numeric values (MLflow rejects None/NaN) and prefix their names."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[f"{prefix}{key}"] = float(value)
    return out


def setup(uri: str, experiment: str):
    """Point mlflow at ``uri`` (checked first) and select/create ``experiment``."""
    import mlflow

    bound_http_retries()
    check_tracking_server(uri)
    mlflow.set_tracking_uri(uri)
    with explain_sqlite_lock(uri):
        mlflow.set_experiment(experiment)
    return mlflow


@contextlib.contextmanager
def start_run(
    uri: str, experiment: str, run_name: str, *, params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None, nested: bool = False, parent_run_id: str | None = None,
) -> Iterator[Any]:
    """An MLflow run with flattened params and tags logged up front."""
    mlflow = setup(uri, experiment)
    kwargs: dict[str, Any] = {"run_name": run_name, "nested": nested}
    if parent_run_id:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == parent_run_id:
            kwargs["nested"] = True  # same process as the parent: plain nesting
        else:
            kwargs["parent_run_id"] = parent_run_id  # another worker process joins the parent
            kwargs["nested"] = False
    with explain_sqlite_lock(uri), mlflow.start_run(**kwargs) as run:
        if tags:
            mlflow.set_tags({k: str(v) for k, v in tags.items()})
        if params:
            items = list(loggable_params(params).items())
            for i in range(0, len(items), 90):
                mlflow.log_params(dict(items[i : i + 90]))
        yield run


class EpochLogger:
    """Engine callback: logs every numeric value of an epoch record with ``step=epoch``."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def __call__(self, epoch: int, record: Mapping[str, Any]) -> None:
        import mlflow

        values = scalar_metrics({k: v for k, v in record.items() if k != "epoch"}, self.prefix)
        if values:
            mlflow.log_metrics(values, step=epoch)


def log_model(model, input_example, name: str = "model") -> str | None:
    """Log a torch model (a LoggedModel, loadable as ``models:/<model_id>``) with its signature."""
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    model = model.cpu().eval()
    example = np.asarray(input_example, dtype=np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model, name=name, input_example=example, signature=infer_signature(example, output),
        pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
    )
    return getattr(info, "model_id", None) or getattr(info, "model_uri", None)
