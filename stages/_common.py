"""What every stage script shares: the repo root, params.yaml, logging, and the one place that
turns the params mapping into the typed configs the library takes.

Each stage calls :func:`load_run_config` at start-up: it builds and checks every config of the
pipeline (data source, frontends, each architecture's settings, tuning, evaluation), so a bad
value stops ``dvc repro`` in seconds with ``error: <params key>: <what is wrong>``, before any
download, feature or epoch. Only this module (and the stage scripts) read the params mapping.
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

from lungpipe.config import ConfigError, from_dict, merge  # noqa: E402
from lungpipe.errors import report_errors  # noqa: E402
from lungpipe.settings import ArchSettings, DatasetInfo, check_model_section, with_overrides  # noqa: E402
from lungpipe.training.config import SplitConfig, TrainConfig  # noqa: E402

log = logging.getLogger("lungpipe.stages")

__all__ = ["ROOT", "RunConfig", "arch_settings", "dataset_info", "experiment_name", "load_params",
           "load_run_config", "path", "report_errors", "setup_logging", "tuned_overrides"]

ARCH_KEYS = ("frontend", "model", "train")
TUNING_LIST_KEYS = ("architectures", "space")  # tuning.* keys that are not TuningConfig fields


def load_params(file: Path | None = None) -> dict[str, Any]:
    """params.yaml (or ``$LUNGPIPE_PARAMS``) as a mapping; a YAML error names the file and line."""
    file = Path(file or os.environ.get("LUNGPIPE_PARAMS", ROOT / "params.yaml"))
    try:
        with open(file, encoding="utf-8") as fh:
            params = yaml.safe_load(fh) or {}
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


def arch_settings(params: Mapping[str, Any], arch: str) -> ArchSettings:
    """Settings of ``arch``: ``train.defaults`` ⊕ ``arch.<arch>.train``, its frontend and its model
    section (preset required). Errors name the params key the bad value came from."""
    archs = _section(params, "arch")
    if arch not in archs:
        raise ConfigError(f"arch.{arch}: no such section in params.yaml; architectures configured: {sorted(archs)}")
    section = _section(params, f"arch.{arch}")
    unknown = sorted(set(section) - set(ARCH_KEYS))
    if unknown:
        raise ConfigError(f"arch.{arch}: unknown key(s) {unknown}; allowed: {', '.join(ARCH_KEYS)}")
    frontends = _section(params, "frontends")
    if section.get("frontend") not in frontends:
        raise ConfigError(f"arch.{arch}.frontend: {section.get('frontend')!r} is not a frontend; "
                          f"name one of frontends: {', '.join(sorted(frontends))}")
    defaults = _section(params, "train.defaults")
    own = _section(params, f"arch.{arch}.train")
    train = merge(defaults, own)

    def key_of(name: str) -> str:
        return f"arch.{arch}.train.{name}" if name in own else f"train.defaults.{name}"

    def augment_key(name: str) -> str:
        return (f"arch.{arch}.train.augment.{name}" if name in (own.get("augment") or {})
                else f"train.defaults.augment.{name}")

    if isinstance(train.get("augment"), Mapping):
        from lungpipe.augment import AugmentConfig

        train["augment"] = from_dict(AugmentConfig, train["augment"], where="augment", keys=augment_key)
    return ArchSettings(
        name=arch,
        frontend=section["frontend"],
        model=check_model_section(arch, _section(params, f"arch.{arch}.model"), f"arch.{arch}.model"),
        train=from_dict(TrainConfig, train, keys=key_of),
        split=from_dict(SplitConfig, _section(params, "split"), where="split"),
    )


def tuned_file(arch: str) -> Path:
    return path(f"tuned/{arch}.yaml")


def tuned_overrides(params: Mapping[str, Any], arch: str, *, announce: bool = True) -> dict[str, Any]:
    """The tune stage's best values for ``arch`` (``tuned/<arch>.yaml``) when ``train.use_tuned``
    is true and the file exists; {} otherwise. Each value that replaces one the user set
    explicitly in params.yaml is logged (when ``announce``), naming both."""
    train = _section(params, "train")
    file = tuned_file(arch)
    if not train.get("use_tuned") or not file.exists():
        return {}
    try:
        best = (yaml.safe_load(file.read_text(encoding="utf-8")) or {}).get("best_params") or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML ({exc}); delete it or rerun the tune stage") from None
    if not isinstance(best, Mapping):
        raise ConfigError(f"{file}: best_params must be a mapping of namespaced keys, got {best!r}")
    for key, value in best.items() if announce else ():
        namespace, _, name = str(key).partition(".")
        if namespace == "train":
            candidates = [f"arch.{arch}.train.{name}", f"train.defaults.{name}"]
        elif namespace == "augment":
            candidates = [f"arch.{arch}.train.augment.{name}", f"train.defaults.augment.{name}"]
        else:
            candidates = [f"arch.{arch}.model.{name}"]
        for where in candidates:
            explicit = _lookup(params, where)
            if explicit is not _MISSING and explicit != value:
                log.warning("%s: the tuned value %s=%r (%s) overrides your %s=%r; set train.use_tuned: false "
                            "to train with yours", arch, key, value, file.relative_to(ROOT), where, explicit)
                break
    return dict(best)


_MISSING = object()


def _lookup(params: Mapping[str, Any], key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


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


@dataclass
class RunConfig:
    """Every typed config of the pipeline, built once from params.yaml by :func:`load_run_config`."""

    dataset: DatasetInfo
    frontends: dict[str, Any]  # name -> lungpipe.features.PreprocessConfig
    architectures: tuple[str, ...]
    archs: dict[str, ArchSettings]  # every arch.<name> section, tuned values applied for the trained ones
    base_archs: dict[str, ArchSettings]  # the same from params.yaml alone (what tuning starts from)
    seeds: tuple[int, ...]
    folds: tuple[str, ...]  # data.folds as the stage names use them ("official", "1", ...)
    tuning: Any  # lungpipe.tuning.TuningConfig
    tuning_architectures: tuple[str, ...]
    tuning_spaces: dict[str, dict[str, Any]]  # arch -> namespaced key -> SearchParam
    evaluation: Any  # lungpipe.evaluation.EvaluationConfig
    selection: str
    experiment: str
    raw_dir: Path


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


def build_run_config(params: Mapping[str, Any], manifest_csv: str | os.PathLike | None = None, *,
                     announce_tuned: bool = False) -> RunConfig:
    """All configs of the pipeline from the params mapping, each checked (types, ranges, known
    names, metrics that fit the task); the first problem is a ConfigError naming its key.
    ``announce_tuned`` logs each tuned value that replaces one set explicitly in params.yaml."""
    from lungpipe.evaluation import EvaluationConfig
    from lungpipe.features import PreprocessConfig
    from lungpipe.metrics import resolve_metric
    from lungpipe.tuning import TuningConfig, parse_space

    info = dataset_info(params, manifest_csv)
    frontends = {name: from_dict(PreprocessConfig, section, where=f"frontends.{name}")
                 for name, section in _section(params, "frontends").items()}
    if not frontends:
        raise ConfigError("frontends: no frontend is defined; add at least one (see frontends.small in the default params.yaml)")
    arch_sections = _section(params, "arch")
    architectures = _name_list(params, "train.architectures", arch_sections, "architecture")
    if sorted(architectures) != sorted(arch_sections):
        raise ConfigError(f"train.architectures {list(architectures)} must list exactly the architectures of the arch "
                          f"section {sorted(arch_sections)}: dvc.yaml trains every arch.<name> (remove an arch "
                          "section to stop training it)")
    archs, base_archs = {}, {}
    for arch in arch_sections:
        settings = base_archs[arch] = arch_settings(params, arch)
        if arch in architectures:
            tuned = tuned_overrides(params, arch, announce=announce_tuned)
            try:
                settings = with_overrides(settings, tuned, source=str(tuned_file(arch).relative_to(ROOT)))
            except ConfigError as exc:
                raise ConfigError(f"{exc}; if the file predates this version, rerun `dvc repro tune@{arch}` "
                                  "or set train.use_tuned: false") from None
            own = _lookup(params, f"arch.{arch}.train.selection_metric") is not _MISSING
            resolve_metric(settings.train.selection_metric, info.metric_task,
                           f"arch.{arch}.train.selection_metric" if own else "train.defaults.selection_metric")
        archs[arch] = settings
    tuning_section = _section(params, "tuning")
    tuning = from_dict(TuningConfig, {k: v for k, v in tuning_section.items() if k not in TUNING_LIST_KEYS},
                       where="tuning")
    resolve_metric(tuning.metric, info.metric_task, "tuning.metric")
    tuning_architectures = _name_list(params, "tuning.architectures", arch_sections, "architecture", allow_empty=True)
    spaces = {}
    for arch in tuning_architectures:
        space = _section(params, f"tuning.space.{arch}")
        if not space:
            raise ConfigError(f"tuning.space.{arch}: empty or missing, but {arch} is in tuning.architectures; "
                              "give it a search space or remove it from tuning.architectures")
        spaces[arch] = parse_space(arch, space, base_archs[arch])
    folds = _lookup(params, "data.folds")
    folds = ["official"] if folds is _MISSING else folds
    return RunConfig(
        dataset=info,
        frontends=frontends,
        architectures=architectures,
        archs=archs,
        base_archs=base_archs,
        seeds=_int_list(params, "train.seeds", [0]),
        folds=tuple(str(f) for f in folds),
        tuning=tuning,
        tuning_architectures=tuning_architectures,
        tuning_spaces=spaces,
        evaluation=from_dict(EvaluationConfig, _section(params, "evaluate"), where="evaluate"),
        selection=archs[architectures[0]].split.selection,
        experiment=experiment_name(params),
        raw_dir=path(_section(params, "data").get("raw_dir", "data/raw")),
    )


def load_run_config(manifest_csv: str | os.PathLike | None = None, *,
                    announce_tuned: bool = False) -> tuple[dict[str, Any], RunConfig]:
    """Stage start-up: logging, params.yaml, and every typed config built and checked."""
    setup_logging()
    params = load_params()
    return params, build_run_config(params, manifest_csv, announce_tuned=announce_tuned)
