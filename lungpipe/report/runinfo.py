"""What the report says about each run: hyperparameters that differ from the defaults, epochs,
parameter count, time and device, and the link to its MLflow run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lungpipe.training.config import TrainConfig
from lungpipe.util.typed_config import to_dict

#: Training settings that describe where or how reproducibly a run ran, not what it learned.
_NOT_HYPERPARAMETERS = frozenset({"seed", "device", "num_workers", "eval_batch_size", "amp"})


def redact_uri(uri: str) -> str:
    """``uri`` without a password (database URLs may hold credentials)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing_hyperparameters(config: Mapping[str, Any]) -> dict[str, Any]:
    """Training settings of a run's ``config.json`` that differ from the library defaults
    (:class:`~lungpipe.training.config.TrainConfig`), plus its tuned values (``tuned.<key>``)."""
    defaults = _flatten(to_dict(TrainConfig()))
    used = _flatten(config.get("train") or {})
    out = {key: value for key, value in sorted(used.items())
           if key.split(".")[0] not in _NOT_HYPERPARAMETERS and defaults.get(key, object()) != value}
    out.update({f"tuned.{k}": v for k, v in sorted((config.get("tuned") or {}).items())})
    return out


def mlflow_link(info: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(URL, label) of the run in the MLflow UI, from ``mlflow_run.json``; None without one.

    A tracking server's URL links directly; a local store (``sqlite:///…``) links to the UI that
    ``mlflow ui --backend-store-uri <uri>`` serves at http://127.0.0.1:5000."""
    if not info or not info.get("run_id") or info.get("experiment_id") is None:
        return None
    uri = str(info.get("tracking_uri") or "")
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    parts = urlsplit(base)
    if parts.password is not None:  # never publish credentials in a page
        base = redact_uri(base).replace(":***@", "@")
    url = f"{base}/#/experiments/{info['experiment_id']}/runs/{info['run_id']}"
    return url, str(info.get("run_name") or info["run_id"])
