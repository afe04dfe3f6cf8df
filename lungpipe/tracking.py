"""MLflow tracking: where runs go, and what every training run logs.

Tracking URI: ``MLFLOW_TRACKING_URI`` when set, else an embedded SQLite store at an ABSOLUTE path
in the repository root (``sqlite:////abs/repo/mlflow.db``), so ``dvc exp run --temp/--queue``,
which works in a copy of the repo, still logs into the user's store. One experiment per dataset.
Metric names are stable across runs: ``train_loss``, ``val_sp``, ``val_se``, ``val_score`` per
epoch; ``test_sp``, ``test_se``, ``test_score`` and their ``_ci_low``/``_ci_high`` at the end.

Bookkeeping: a run is identified by its run key, a hash of (stage, architecture, fold, seed, params
hash), kept in the tag ``lungpipe.run_key``. Starting a run whose key already exists replaces the
earlier run (it is deleted), except a resumed training, which continues the run recorded in its
checkpoint folder's ``mlflow_run.json`` so the metric history stays whole. Every run output folder
gets the same ``mlflow_run.json`` ({"run_id", "experiment_id", "tracking_uri", "run_name"}).
Runs carry provenance tags (git commit and dirty flag, DVC experiment name and baseline revision,
params hash) and their features folder as an MLflow dataset input whose digest is its DVC md5.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.data.dataset_source_registry import get_registered_sources
from mlflow.data.meta_dataset import MetaDataset
from mlflow.exceptions import MlflowException

from lungpipe.util.atomic import write_json
from lungpipe.util.errors import LungpipeError
from lungpipe.util.typed_config import flatten
from lungpipe.util.yaml_load import safe_load

MAX_PARAM_LEN = 6000
RUN_FILE = "mlflow_run.json"
RUN_KEY_TAG = "lungpipe.run_key"
PARAMS_HASH_TAG = "params_hash"
#: MLflow 3's experiment type tag; "custom_model_development" makes the UI open on the runs table.
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


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
        logging.getLogger(__name__).warning(
            "MLflow logs into the SQLite file %s; several workers writing it at once can fail with "
            "'database is locked'. For parallel workers run a tracking server and point every worker at it: %s",
            uri, SERVER_HINT)


SERVER_HINT = ("mlflow server --backend-store-uri postgresql+psycopg2://…/mlflow --artifacts-destination /shared/mlartifacts "
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
        out = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=repo_root, capture_output=True, text=True,
                             timeout=10)
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


def git_dirty(repo_root: str | os.PathLike | None = None) -> str:
    """"true" when tracked files differ from the commit, "false" when clean, "unknown" without git."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, cwd=repo_root,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return "true" if out.stdout.strip() else "false"


def provenance_tags(repo_root: str | os.PathLike | None = None) -> dict[str, str]:
    """Git commit and dirty flag, and under ``dvc exp run`` the experiment name and baseline revision."""
    tags = {"git_commit": git_commit(repo_root), "git_dirty": git_dirty(repo_root)}
    for env, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def params_hash(params: Mapping[str, Any]) -> str:
    """A short stable hash of a (nested, JSON-compatible) params mapping."""
    text = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_key(stage: str, arch: str, fold: str, seed: int | str, params_digest: str) -> str:
    """The identity of a run: one run per (stage, architecture, fold, seed, params hash)."""
    return params_hash({"stage": stage, "arch": arch, "fold": str(fold), "seed": str(seed), "params": params_digest})


# -------------------------------------------------------------------------- run files
def write_run_file(folder: str | os.PathLike, run: Any, uri: str) -> Path:
    """``folder/mlflow_run.json`` = {"run_id", "experiment_id", "tracking_uri", "run_name"}."""
    return write_json(Path(folder) / RUN_FILE, {
        "run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "tracking_uri": uri,
        "run_name": run.info.run_name})


def read_run_file(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The ``mlflow_run.json`` of ``folder``, or None when absent or unreadable."""
    path = Path(folder) / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("run_id") else None


# ---------------------------------------------------------------------------- dataset input
def dvc_md5(path: str | os.PathLike) -> tuple[str, str] | None:
    """The DVC md5 of ``path`` from the ``dvc.lock`` of the repository holding it, with the output
    it was found under (``path`` itself or a tracked folder above it); None when not recorded."""
    path = Path(path).resolve()
    for root in path.parents:
        lock = root / "dvc.lock"
        if not lock.is_file():
            continue
        try:
            stages = (safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages") or {}
        except (OSError, yaml.YAMLError):
            return None
        best: tuple[int, str, str] | None = None
        for stage in stages.values():
            for out in (stage or {}).get("outs") or []:
                out_path = (root / str(out.get("path", ""))).resolve()
                if out.get("md5") and (out_path == path or out_path in path.parents):
                    depth = len(out_path.parts)
                    if best is None or depth > best[0]:
                        best = (depth, str(out["md5"]), out_path.relative_to(root).as_posix())
        return (best[1], best[2]) if best else None
    return None


def content_md5(folder: str | os.PathLike) -> str:
    """An md5 over the relative paths and bytes of every file in ``folder`` (when DVC has none)."""
    digest = hashlib.md5()
    folder = Path(folder)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def log_features_input(features_dir: str | os.PathLike, dataset: str, contexts: Mapping[str, str]) -> str:
    """Log the features folder's splits as the run's dataset inputs (``<dataset>/<folder>:<split>``,
    context: what the split was used for), each with the folder's DVC md5 as digest (or, outside a
    DVC repository, an md5 of its content); returns the digest."""
    features_dir = Path(features_dir)
    found = dvc_md5(features_dir)
    digest, origin = (found[0], f"dvc.lock:{found[1]}") if found else (content_md5(features_dir), "content")
    source_cls = next(s for s in get_registered_sources() if s.__name__ == "LocalArtifactDatasetSource")
    source = source_cls(str(features_dir.resolve()))
    splits = list(contexts)
    datasets = [MetaDataset(source=source, name=f"{dataset}/{features_dir.name}:{s}", digest=digest[:36])
                for s in splits]
    mlflow.log_inputs(datasets=datasets, contexts=[contexts[s] for s in splits],
                      tags_list=[{"split": s, "source": dataset, "digest_from": origin} for s in splits])
    return digest


# ------------------------------------------------------------------------------------ runs
def setup(uri: str, experiment: str):
    """Point mlflow at ``uri`` (checked first) and select/create ``experiment``, tagged as a model
    training experiment (the MLflow UI then opens on its runs)."""
    # its start/stop/"skip GPU" INFO lines would print around every run
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    bound_http_retries()
    check_tracking_server(uri)
    mlflow.set_tracking_uri(uri)
    with explain_sqlite_lock(uri):
        exp = mlflow.set_experiment(experiment)
        if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
            mlflow.MlflowClient(uri).set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return mlflow


def _runs_with_key(client, experiment_id: str, key: str) -> list[Any]:
    return client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1000)


def _continuable(client, uri: str, key: str, resume_dir: Path | None) -> str | None:
    """The run id in ``resume_dir/mlflow_run.json`` when it names a live run of this store with ``key``."""
    saved = read_run_file(resume_dir) if resume_dir is not None else None
    if not saved or saved.get("tracking_uri") != uri:
        return None
    try:
        run = client.get_run(saved["run_id"])
    except MlflowException:
        return None
    if run.info.lifecycle_stage != "active" or run.data.tags.get(RUN_KEY_TAG) != key:
        return None
    return run.info.run_id


def _replace_runs(client, experiment_id: str, old_ids: list[str], new_id: str) -> None:
    """Delete the runs ``old_ids``; their child runs (e.g. the trials of a resumed study) become
    children of ``new_id``."""
    for old_id in old_ids:
        children = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{old_id}'",
                                      max_results=10000)
        for child in children:
            client.set_tag(child.info.run_id, "mlflow.parentRunId", new_id)
        client.delete_run(old_id)


@contextlib.contextmanager
def start_run(
    uri: str, experiment: str, run_name: str, *, params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None, nested: bool = False, parent_run_id: str | None = None,
    key: str | None = None, resume_dir: str | os.PathLike | None = None, resuming: bool = True,
    system_metrics: bool = False, finished_on: tuple[type[BaseException], ...] = (),
) -> Iterator[Any]:
    """An MLflow run with flattened params and tags logged up front.

    With ``key`` (see :func:`run_key`): when ``resuming`` (the work continues from a checkpoint),
    the run recorded in ``resume_dir/mlflow_run.json`` is continued if it has this key; otherwise
    a new run starts and replaces the earlier runs with this key (they are deleted, their child
    runs move to the new run).
    ``resume_dir/mlflow_run.json`` then names the run.
    An exception of a ``finished_on`` type (e.g. a pruned trial) ends the run FINISHED, others FAILED.
    """
    mlflow = setup(uri, experiment)
    client = mlflow.MlflowClient(uri)
    kwargs: dict[str, Any] = {"run_name": run_name, "nested": nested, "log_system_metrics": system_metrics}
    if parent_run_id:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == parent_run_id:
            kwargs["nested"] = True  # same process as the parent: plain nesting
        else:
            kwargs["parent_run_id"] = parent_run_id  # another worker process joins the parent
            kwargs["nested"] = False
    resume_dir = Path(resume_dir) if resume_dir is not None else None
    with explain_sqlite_lock(uri):
        continued = _continuable(client, uri, key, resume_dir) if key and resuming else None
        if continued:
            kwargs = {"run_id": continued, "nested": kwargs["nested"], "log_system_metrics": system_metrics}
        replaced = []
        if key and not continued:
            experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
            replaced = [old.info.run_id for old in _runs_with_key(client, experiment_id, key)]
        run = mlflow.start_run(**kwargs)
    try:
        with explain_sqlite_lock(uri):
            if replaced:
                _replace_runs(client, run.info.experiment_id, replaced, run.info.run_id)
            all_tags = {**(tags or {}), **({RUN_KEY_TAG: key} if key else {})}
            if all_tags:
                mlflow.set_tags({k: str(v) for k, v in all_tags.items()})
            if params and not continued:
                items = list(loggable_params(params).items())
                for i in range(0, len(items), 90):
                    mlflow.log_params(dict(items[i : i + 90]))
            if resume_dir is not None:
                resume_dir.mkdir(parents=True, exist_ok=True)
                write_run_file(resume_dir, run, uri)
        yield run
    except finished_on:
        mlflow.end_run("FINISHED")
        raise
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


class EpochLogger:
    """Engine callback: logs every numeric value of an epoch record with ``step=epoch``."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def __call__(self, epoch: int, record: Mapping[str, Any]) -> None:
        values = scalar_metrics({k: v for k, v in record.items() if k != "epoch"}, self.prefix)
        if values:
            mlflow.log_metrics(values, step=epoch)
