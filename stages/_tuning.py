"""The tune stage's typed configs from params.yaml: the study settings (``tuning.*``) and each tuned
architecture's search space, checked against its settings before any trial runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from _common import ConfigError, _name_list, _section
from _run import RunConfig

from lungpipe.evaluation.metrics import resolve_metric
from lungpipe.tuning import SearchParam, TuningConfig, parse_space
from lungpipe.util.typed_config import from_dict

TUNING_LIST_KEYS = ("architectures", "space")  # tuning.* keys that are not TuningConfig fields


@dataclass
class TuningRun:
    config: TuningConfig
    architectures: tuple[str, ...]
    spaces: dict[str, dict[str, SearchParam]]  # arch -> namespaced key -> range


def build_tuning(params: Mapping[str, Any], run: RunConfig) -> TuningRun:
    section = _section(params, "tuning")
    cfg = from_dict(TuningConfig, {k: v for k, v in section.items() if k not in TUNING_LIST_KEYS}, where="tuning")
    resolve_metric(cfg.metric, run.dataset.metric_task, "tuning.metric")
    architectures = _name_list(params, "tuning.architectures", run.base_archs, "architecture", allow_empty=True)
    spaces = {}
    for arch in architectures:
        space = _section(params, f"tuning.space.{arch}")
        if not space:
            raise ConfigError(f"tuning.space.{arch}: empty or missing, but {arch} is in tuning.architectures; "
                              "give it a search space or remove it from tuning.architectures")
        spaces[arch] = parse_space(arch, space, run.base_archs[arch])
    return TuningRun(cfg, architectures, spaces)


