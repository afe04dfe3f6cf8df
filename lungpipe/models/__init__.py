"""The model zoo: every architecture behind :func:`create_model`."""

from lungpipe.models.base import LossOutput, LungModel, channels_last_modules, count_parameters, to_channels_last
from lungpipe.models.registry import (
    create_model,
    get_spec,
    model_names,
    preset_summary,
    register_model,
    resolve_config,
)

__all__ = [
    "LossOutput",
    "LungModel",
    "channels_last_modules",
    "count_parameters",
    "create_model",
    "get_spec",
    "model_names",
    "preset_summary",
    "register_model",
    "resolve_config",
    "to_channels_last",
]
