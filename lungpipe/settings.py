"""Assemble typed run settings from the params mapping (which stages load from params.yaml).

This is the one place that knows the layout of params.yaml's sections. It takes plain dicts and
returns dataclasses; it never opens a file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lungpipe.config import ConfigError, from_dict, merge
from lungpipe.training.config import AugmentConfig, SplitConfig, TrainConfig

TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)} - {"augment"}
AUGMENT_KEYS = {f.name for f in dataclasses.fields(AugmentConfig)}


@dataclass
class ArchSettings:
    """Everything needed to train one architecture."""

    name: str
    frontend: str
    model: dict[str, Any]
    train: TrainConfig
    split: SplitConfig
    tuned: dict[str, Any] = field(default_factory=dict)


def model_config_keys(arch: str) -> set[str]:
    from lungpipe.models.registry import get_spec

    return {f.name for f in dataclasses.fields(get_spec(arch).config_cls)} | {"preset"}


def apply_overrides(
    arch: str, train: Mapping[str, Any], model: Mapping[str, Any], overrides: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route flat override keys (tuned values, search-space keys) to the train, augment or model
    section. A key that belongs to none of them is a ConfigError naming it."""
    train = merge(train, {})
    model = dict(model)
    model_keys = model_config_keys(arch)
    for key, value in overrides.items():
        if key in TRAIN_KEYS:
            train[key] = value
        elif key in AUGMENT_KEYS:
            train["augment"] = merge(train.get("augment", {}), {key: value})
        elif key in model_keys:
            model[key] = value
        else:
            raise ConfigError(
                f"{arch}: unknown tuning/override key {key!r}; it is neither a training setting "
                f"({sorted(TRAIN_KEYS)}), an augmentation setting ({sorted(AUGMENT_KEYS)}) nor a "
                f"field of the {arch} model config ({sorted(model_keys)})"
            )
    return train, model


def arch_settings(params: Mapping[str, Any], arch: str, tuned: Mapping[str, Any] | None = None) -> ArchSettings:
    """Settings of ``arch``: train.defaults ⊕ arch.<name>.train ⊕ tuned values."""
    arch_params = (params.get("arch") or {}).get(arch)
    if arch_params is None:
        raise ConfigError(f"params.yaml has no arch.{arch} section; architectures configured: "
                          f"{sorted(params.get('arch') or {})}")
    unknown = set(arch_params) - {"frontend", "model", "train"}
    if unknown:
        raise ConfigError(f"arch.{arch}: unknown key(s) {sorted(unknown)}; allowed: frontend, model, train")
    if "frontend" not in arch_params or arch_params["frontend"] not in (params.get("frontends") or {}):
        raise ConfigError(f"arch.{arch}.frontend must name one of frontends: {sorted(params.get('frontends') or {})}")
    train = merge((params.get("train") or {}).get("defaults") or {}, arch_params.get("train") or {})
    model = dict(arch_params.get("model") or {})
    tuned = dict(tuned or {})
    if tuned:
        train, model = apply_overrides(arch, train, model, tuned)
    return ArchSettings(
        name=arch,
        frontend=arch_params["frontend"],
        model=model,
        train=from_dict(TrainConfig, train, where=f"train settings of {arch}"),
        split=from_dict(SplitConfig, params.get("split") or {}, where="split"),
        tuned=tuned,
    )
