"""One registry, one place that turns a model name plus a config mapping into an ``nn.Module``.

In the style of timm's ``create_model``: each architecture module registers a builder, a config
dataclass and named presets (``paper``, ``small``, and any others such as MRINet's ``paper67m``).

    model = create_model("cnn6", {"preset": "small", "num_classes": 4, "n_frames": 798, "n_mels": 128})

Every config dataclass has the fields ``num_classes``, ``n_frames`` and ``n_mels`` (the input
spectrogram shape the model will be fed). The mapping's keys other than ``preset`` override the
preset's values; an unknown key is a :class:`lungpipe.util.typed_config.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from lungpipe.util.typed_config import ConfigError, from_dict, merge

# Modules that register architectures on import. Add a new architecture file here.
_ARCH_MODULES = (
    "lungpipe.models.ast",
    "lungpipe.models.resnet",
    "lungpipe.models.cnn6",
    "lungpipe.models.add4rsc",
    "lungpipe.models.mrinet",
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config_cls: type
    builder: Callable[[Any], nn.Module]
    presets: Mapping[str, Mapping[str, Any]]
    description: str = ""
    summaries: Mapping[str, str] = dataclasses.field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}
_loaded = False


def register_model(
    name: str,
    config_cls: type,
    presets: Mapping[str, Mapping[str, Any]],
    description: str = "",
    summaries: Mapping[str, str] | None = None,
) -> Callable[[Callable[[Any], nn.Module]], Callable[[Any], nn.Module]]:
    """Decorator: register ``builder(config) -> nn.Module`` under ``name``.

    ``summaries``: one honest line per preset (what it is, and whether it is a release's or
    lungpipe's own), read by :func:`preset_summary`; every preset must have one.
    """
    if "small" not in presets or "paper" not in presets:
        raise ValueError(f"model {name!r} must define at least the 'paper' and 'small' presets")
    summaries = dict(summaries or {})
    if set(summaries) != set(presets):
        raise ValueError(f"model {name!r}: summaries {sorted(summaries)} must cover exactly the presets {sorted(presets)}")

    def deco(builder: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, config_cls, builder, dict(presets), description, summaries)
        return builder

    return deco


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _ARCH_MODULES:
        importlib.import_module(mod)
    _loaded = True


def model_names() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def preset_summary(arch: str, preset: str) -> str:
    """One line naming what ``arch`` at ``preset`` is, e.g.
    ``"resnet50 small preset: 1-1-1-1 bottleneck blocks, width 16 (lungpipe's CPU size)"``;
    the text after ``preset: `` is ``get_spec(arch).summaries[preset]``."""
    spec = get_spec(arch)
    if preset not in spec.summaries:
        raise ConfigError(f"model {arch!r} has no preset {preset!r}; presets: {sorted(spec.presets)}")
    return f"{arch} {preset} preset: {spec.summaries[preset]}"


def resolve_config(name: str, config: Mapping[str, Any] | None = None) -> Any:
    """The config dataclass for ``name``: preset values overlaid with the mapping's keys."""
    spec = get_spec(name)
    config = dict(config or {})
    preset = config.pop("preset", "small")
    if preset not in spec.presets:
        raise ConfigError(f"model {name!r} has no preset {preset!r}; presets: {sorted(spec.presets)}")
    return from_dict(spec.config_cls, merge(spec.presets[preset], config), where=f"model {name}")


def create_model(name: str, config: Mapping[str, Any] | Any | None = None) -> nn.Module:
    """Build architecture ``name`` from a config mapping (or an already built config dataclass)."""
    spec = get_spec(name)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        cfg = config
    else:
        cfg = resolve_config(name, config)
    return spec.builder(cfg)
