"""Typed run settings, and namespaced overrides of them.

Stages (``stages/_common.py``) turn params.yaml into these dataclasses once; the library takes
only the dataclasses, never the params mapping. Overrides (tuned values, Optuna suggestions,
search-space keys) are namespaced so a name that exists in two configs cannot be routed to the
wrong one: ``train.<field>`` (TrainConfig), ``augment.<field>`` (AugmentConfig), ``model.<field>``
(the architecture's model config, e.g. ``model.label_smoothing`` of ADD4RSC versus
``train.label_smoothing`` of the engine).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lungpipe.models.registry import get_spec, resolve_config
from lungpipe.training.config import AugmentConfig, SplitConfig, TrainConfig
from lungpipe.util.typed_config import ConfigError, from_dict, to_dict

TRAIN_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) - {"augment"}
AUGMENT_KEYS = frozenset(f.name for f in dataclasses.fields(AugmentConfig))
OVERRIDE_NAMESPACES = ("train", "augment", "model")


@dataclass
class ArchSettings:
    """Everything needed to train one architecture.

    ``model`` is the architecture's model config as a mapping that always names its ``preset``
    (checked against the registry when built) plus the fields that override the preset.
    ``tuned`` holds the namespaced overrides applied on top (``{"train.lr": 3e-4}``).
    """

    name: str
    frontend: str
    model: dict[str, Any]
    train: TrainConfig
    split: SplitConfig
    tuned: dict[str, Any] = field(default_factory=dict)


def model_config_keys(arch: str) -> set[str]:
    return {f.name for f in dataclasses.fields(get_spec(arch).config_cls)} | {"preset"}


def check_model_section(arch: str, model: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The model section of ``arch`` checked: ``preset`` is required and must be one of the
    architecture's presets; every other key must be a field of its config and of the right
    type (the config is built once, so range checks run too). Returns a plain copy."""
    spec = get_spec(arch)
    model = dict(model or {})
    if "preset" not in model:
        raise ConfigError(f"{where}.preset: missing; name one of the {arch} presets: {', '.join(sorted(spec.presets))}")
    if model["preset"] not in spec.presets:
        raise ConfigError(f"{where}.preset: {model['preset']!r} is not a {arch} preset; "
                          f"use one of {', '.join(sorted(spec.presets))}")
    try:
        resolve_config(arch, model)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return model


def _split_key(key: str) -> tuple[str, str]:
    namespace, _, name = str(key).partition(".")
    return namespace, name


def with_overrides(settings: ArchSettings, overrides: Mapping[str, Any], *, source: str = "overrides") -> ArchSettings:
    """``settings`` with namespaced ``overrides`` applied (each value type- and range-checked).

    Keys: ``train.<field>`` (TrainConfig), ``augment.<field>`` (AugmentConfig),
    ``model.<field>`` (the architecture's model config, including ``model.preset``). Any other
    key is a ConfigError naming it and ``source`` (e.g. ``tuned/cnn6.yaml``)."""
    if not overrides:
        return settings
    train = to_dict(settings.train)
    model = dict(settings.model)
    keys: dict[str, str] = {}
    model_keys = model_config_keys(settings.name)
    for key, value in overrides.items():
        namespace, name = _split_key(key)
        if namespace == "train" and name in TRAIN_KEYS:
            train[name] = value
            keys[name] = f"{source}: {key}"
        elif namespace == "augment" and name in AUGMENT_KEYS:
            train["augment"] = {**train["augment"], name: value}
        elif namespace == "model" and name in model_keys:
            model[name] = value
        else:
            raise ConfigError(_unknown_override(settings.name, key, source, model_keys))
    augment_keys = {k.split(".", 1)[1]: f"{source}: {k}" for k in overrides if _split_key(k)[0] == "augment"}
    train["augment"] = from_dict(AugmentConfig, train["augment"], where=f"{source}: augment", keys=augment_keys)
    return dataclasses.replace(
        settings,
        train=from_dict(TrainConfig, train, where=f"{source}: train", keys=keys),
        model=check_model_section(settings.name, model, f"{source}: model"),
        tuned={**settings.tuned, **overrides},
    )


def _unknown_override(arch: str, key: str, source: str, model_keys: set[str]) -> str:
    namespace, _ = _split_key(key)
    hint = ""
    if namespace not in OVERRIDE_NAMESPACES:
        homes = [ns for ns, names in (("train", TRAIN_KEYS), ("augment", AUGMENT_KEYS), ("model", model_keys))
                 if key in names]
        if homes:
            hint = " (did you mean " + " or ".join(f"'{ns}.{key}'" for ns in homes) + "?)"
    return (f"{source}: unknown override key {key!r} for {arch}{hint}; keys are train.<field> "
            f"({', '.join(sorted(TRAIN_KEYS))}), augment.<field> ({', '.join(sorted(AUGMENT_KEYS))}) "
            f"or model.<field> ({', '.join(sorted(model_keys))})")
