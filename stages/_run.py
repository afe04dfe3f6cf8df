"""Typed settings of every architecture, built from params.yaml at the start of the train, tune and
evaluate stages (one module so the data stages do not depend on the model and training code)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from _common import (
    _MISSING,
    ROOT,
    ConfigError,
    DatasetInfo,
    _int_list,
    _lookup,
    _name_list,
    _section,
    dataset_info,
    experiment_name,
    load_params,
    path,
    setup_logging,
)

from lungpipe.evaluation.metrics import resolve_metric
from lungpipe.evaluation.scoring import EvaluationConfig
from lungpipe.training.arch_settings import ArchSettings, check_model_section, with_overrides
from lungpipe.training.augment_config import AugmentConfig
from lungpipe.training.config import SplitConfig, TrainConfig
from lungpipe.util.typed_config import from_dict, merge
from lungpipe.util.yaml_load import safe_load

log = logging.getLogger("lungpipe.stages")

ARCH_KEYS = ("frontend", "model", "train")


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
        best = (safe_load(file.read_text(encoding="utf-8")) or {}).get("best_params") or {}
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


@dataclass
class RunConfig:
    """The typed configs of the training side, built once from params.yaml by :func:`load_run_config`."""

    dataset: DatasetInfo
    architectures: tuple[str, ...]
    archs: dict[str, ArchSettings]  # every arch.<name> section, tuned values applied
    base_archs: dict[str, ArchSettings]  # the same from params.yaml alone (what tuning starts from)
    seeds: tuple[int, ...]
    folds: tuple[str, ...]  # data.folds as the stage names use them ("official", "1", ...)
    evaluation: EvaluationConfig
    selection: str
    experiment: str


def build_run_config(params: Mapping[str, Any], manifest_csv: str | os.PathLike | None = None, *,
                     announce_tuned: bool = False) -> RunConfig:
    """The training side's configs from the params mapping, each checked (types, ranges, known
    names, a selection metric that fits the task); the first problem is a ConfigError naming its
    key. ``announce_tuned`` logs each tuned value that replaces one set explicitly in params.yaml."""
    info = dataset_info(params, manifest_csv)
    arch_sections = _section(params, "arch")
    architectures = _name_list(params, "train.architectures", arch_sections, "architecture")
    if sorted(architectures) != sorted(arch_sections):
        raise ConfigError(f"train.architectures {list(architectures)} must list exactly the architectures of the arch "
                          f"section {sorted(arch_sections)}: dvc.yaml trains every arch.<name> (remove an arch "
                          "section to stop training it)")
    archs, base_archs = {}, {}
    for arch in arch_sections:
        settings = base_archs[arch] = arch_settings(params, arch)
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
    folds = _lookup(params, "data.folds")
    folds = ["official"] if folds is _MISSING else folds
    return RunConfig(
        dataset=info,
        architectures=architectures,
        archs=archs,
        base_archs=base_archs,
        seeds=_int_list(params, "train.seeds", [0]),
        folds=tuple(str(f) for f in folds),
        evaluation=from_dict(EvaluationConfig, _section(params, "evaluate"), where="evaluate"),
        selection=base_archs[architectures[0]].split.selection,
        experiment=experiment_name(params),
    )


def load_run_config(manifest_csv: str | os.PathLike | None = None, *,
                    announce_tuned: bool = False) -> tuple[dict[str, Any], RunConfig]:
    """Train/tune/evaluate start-up: logging, params.yaml, and every architecture's settings checked."""
    setup_logging()
    params = load_params()
    return params, build_run_config(params, manifest_csv, announce_tuned=announce_tuned)
