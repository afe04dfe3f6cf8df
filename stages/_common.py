"""What every stage script shares: the repo root, params.yaml, logging, the error wrapper, and the
typed description of the data source.

Every stage builds and checks the typed configs it needs at start-up, before any download,
feature or epoch, so a bad value stops ``dvc repro`` in seconds with ``error: <params key>: <what
is wrong>``: data stages through :func:`load_data_config`, train/tune/evaluate through
``_run.load_run_config`` (each architecture's settings), tune also through ``_tuning``. Only
these modules and the stage scripts read the params mapping; the library gets dataclasses.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # stages run as scripts: make `lungpipe` importable from a plain clone
    sys.path.insert(0, str(ROOT))

from lungpipe.util.errors import report_errors
from lungpipe.util.typed_config import ConfigError
from lungpipe.util.yaml_load import safe_load

log = logging.getLogger("lungpipe.stages")

__all__ = ["ROOT", "DataConfig", "DatasetInfo", "dataset_info", "experiment_name", "load_data_config",
           "load_params", "path", "report_errors", "setup_logging"]


def load_params(file: Path | None = None) -> dict[str, Any]:
    """params.yaml (or ``$LUNGPIPE_PARAMS``) as a mapping; a YAML error names the file and line."""
    file = Path(file or os.environ.get("LUNGPIPE_PARAMS", ROOT / "params.yaml"))
    try:
        with open(file, encoding="utf-8") as fh:
            params = safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"{file}: params file not found (run from a lungpipe checkout, or set LUNGPIPE_PARAMS)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{file}: expected a mapping of sections at the top level, got {type(params).__name__}")
    return params


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("LUNGPIPE_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")


def path(rel: str | os.PathLike) -> Path:
    """A path relative to the repo root (stages may be run from anywhere)."""
    p = Path(rel)
    return p if p.is_absolute() else ROOT / p


def _section(params: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``params[a][b]…`` for the dotted ``key`` ({} when absent); a non-mapping is a ConfigError."""
    node: Any = params
    for part in key.split("."):
        node = (node or {}).get(part) if isinstance(node, Mapping) else None
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {node!r}")
    return dict(node)


_MISSING = object()


def _lookup(params: Mapping[str, Any], key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


@dataclass(frozen=True)
class DatasetInfo:
    """The configured data source as the training and evaluation code needs it."""

    name: str
    class_names: tuple[str, ...]
    task: str  # "cycle" | "recording"
    metric_task: str  # "icbhi" | "multiclass"
    folds: tuple[int, ...] = ()  # cross-validation folds; () for the official split


def dataset_info(params: Mapping[str, Any], manifest_csv: str | os.PathLike | None = None) -> DatasetInfo:
    """The configured data source (``data.source`` with its ``data.<section>`` options): name, class
    names, task, metric task and the cross-validation folds of ``data.folds`` (() for the official
    split). Class names come from the manifest at ``manifest_csv`` (default data/manifest.csv) when
    it exists, so a label map in params changes the class list."""
    import pandas as pd

    from lungpipe.data.sources import cv_folds, source_from_params

    data = _section(params, "data")
    source, cfg = source_from_params(data)
    folds = cv_folds(data.get("folds"), source, cfg)
    manifest_path = Path(manifest_csv) if manifest_csv is not None else path("data/manifest.csv")
    manifest = pd.read_csv(manifest_path) if manifest_path.is_file() else None
    return DatasetInfo(name=source.name, class_names=tuple(source.class_names_for(cfg, manifest)),
                       task=source.task, metric_task=source.metric_task, folds=tuple(folds))


def experiment_name(params: Mapping[str, Any]) -> str:
    prefix = _section(params, "mlflow").get("experiment_prefix", "lungpipe")
    return f"{prefix}-{_section(params, 'data')['source']}"


def _int_list(params: Mapping[str, Any], key: str, default: list[Any]) -> tuple[int, ...]:
    value = _lookup(params, key)
    value = default if value is _MISSING else value
    if not isinstance(value, list) or not value or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise ConfigError(f"{key}: expected a non-empty list of integers, got {value!r}")
    return tuple(value)


def _name_list(params: Mapping[str, Any], key: str, known: Mapping[str, Any], what: str,
               allow_empty: bool = False) -> tuple[str, ...]:
    value = _lookup(params, key)
    if value is _MISSING or value is None:
        value = []
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a list of {what} names, got {value!r}")
    if not value and not allow_empty:
        raise ConfigError(f"{key} is empty: nothing would run; list at least one of {', '.join(sorted(known))}")
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ConfigError(f"{key}: {unknown} have no section in params.yaml; configured: {', '.join(sorted(known))}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{key}: {value} lists a name twice")
    return tuple(value)


@dataclass(frozen=True)
class DataConfig:
    """What the data stages need: the source, where its raw files live, and data.folds as stage names."""

    dataset: DatasetInfo
    raw_dir: Path
    folds: tuple[str, ...]  # "official", or fold numbers as strings ("1", "2", ...)


def data_config(params: Mapping[str, Any], manifest_csv: str | os.PathLike | None = None) -> DataConfig:
    info = dataset_info(params, manifest_csv)
    folds = _lookup(params, "data.folds")
    return DataConfig(dataset=info, raw_dir=path(_section(params, "data").get("raw_dir", "data/raw")),
                      folds=tuple(str(f) for f in (["official"] if folds is _MISSING else folds)))


def load_data_config() -> tuple[dict[str, Any], DataConfig]:
    """Data-stage start-up: logging, params.yaml, and the data source checked."""
    setup_logging()
    params = load_params()
    return params, data_config(params)
