"""The model file (``model.pt``): weights as tensors, everything else as plain data; one loader.

A model file travels between people and through MLflow, so reading one must never run code
from it. It is written with ``torch.save`` of a dict that holds only tensors (the state dict) and a
JSON string (the architecture, the resolved model config, the class names, the features folder's
``stats.json`` with its frontend and normalisation settings, the selected epoch), and read back
with ``torch.load(weights_only=True)``: a file whose pickle asks for any other Python object
(a class, a function such as ``os.system``) is refused before anything in it runs, with an error
naming the file.

Every reader of a model file goes through :func:`read_model_file` (and :func:`build_model`):
``lungpipe predict``, the MLflow audio model (:mod:`lungpipe.serving`) and tests.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lungpipe.models import create_model
from lungpipe.util.atomic import write_bytes
from lungpipe.util.errors import LungpipeError

MODEL_FILE = "model.pt"
FORMAT = "lungpipe-model/1"


class ModelLoadError(LungpipeError):
    """A model (file, MLflow run or registered model) cannot be loaded for inference."""


@dataclass(frozen=True)
class ModelFile:
    """The contents of a model file."""

    arch: str
    model_config: dict[str, Any]  # the resolved model config (num_classes, n_frames, n_mels, ...)
    state_dict: dict[str, Any]  # name -> tensor
    class_names: list[str]  # indexed by the model's output
    features_stats: dict[str, Any]  # the training features' stats.json (cycle, frontend, norm, mean/std)
    best_epoch: int = -1

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _plain(value: Any, what: str) -> Any:
    """``value`` as JSON-compatible plain data (a ValueError names ``what`` otherwise)."""
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model file {what} is not plain data: {exc}") from None


def write_model_file(path: str | os.PathLike, model: ModelFile) -> Path:
    """Write ``model`` to ``path`` atomically (tensors + one JSON string)."""
    config = {
        "arch": str(model.arch),
        "model_config": _plain(model.model_config, "model_config"),
        "class_names": [str(n) for n in model.class_names],
        "features_stats": _plain(model.features_stats or {}, "features_stats"),
        "best_epoch": int(model.best_epoch),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict.items()}
    # Saved through memory: torch.save names the zip's inner folder after the file it writes, so
    # saving to the atomic temp file would put its random name into the bytes. Through a buffer
    # the same model gives the same file bytes in every checkout.
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "config_json": json.dumps(config), "state_dict": state}, buffer)
    return write_bytes(Path(path), buffer.getvalue())


def _refused_global(exc: BaseException) -> str | None:
    match = re.search(r"GLOBAL\s+([\w.]+)", str(exc))
    return match.group(1) if match else None


def read_model_file(path: str | os.PathLike) -> ModelFile:
    """Read a model file safely (``weights_only=True``); ModelLoadError names the file."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such model file; pass a model.pt written by training "
                             "(models/<arch>/<fold>/seed<k>/model.pt), an MLflow run id or models:/<name>@<alias>")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
            warnings.simplefilter("ignore")
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = _refused_global(exc)
        raise ModelLoadError(
            f"{path}: refused: the file asks to unpickle {what or 'Python objects other than tensors'}, and "
            "lungpipe reads model files as tensors and plain data only, so a file cannot run code. Use a "
            "model.pt written by lungpipe's training, or one you re-saved from a source you trust."
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, ...
        raise ModelLoadError(f"{path}: cannot read the model file ({str(exc).splitlines()[0]}); it is not a "
                             "model.pt written by lungpipe's training, or it is damaged.") from None
    return _from_saved(saved, path)


def _from_saved(saved: Any, path: Path) -> ModelFile:
    if not isinstance(saved, Mapping) or not isinstance(saved.get("state_dict"), Mapping):
        raise ModelLoadError(f"{path}: not a lungpipe model file (no state_dict)")
    if "config_json" in saved:
        try:
            config = json.loads(saved["config_json"])
        except (TypeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{path}: the model file's config is not valid JSON ({exc})") from None
    else:  # files of earlier lungpipe versions hold the same fields at the top level
        config = dict(saved)
    missing = [k for k in ("arch", "model_config") if k not in config]
    if missing:
        raise ModelLoadError(f"{path}: not a lungpipe model file (missing {', '.join(missing)})")
    model_config = dict(config["model_config"])
    names = config.get("class_names")
    if not names:
        k = int(model_config.get("num_classes") or 0)
        if k <= 0:
            raise ModelLoadError(f"{path}: the model file records neither class names nor num_classes")
        names = [str(i) for i in range(k)]
    return ModelFile(arch=str(config["arch"]), model_config=model_config, state_dict=dict(saved["state_dict"]),
                     class_names=[str(n) for n in names], features_stats=dict(config.get("features_stats") or {}),
                     best_epoch=int(config.get("best_epoch", -1)))


def build_model(model: ModelFile, where: str | os.PathLike = "model file"):
    """The torch module of ``model`` with its weights, in eval mode on the CPU."""
    net = create_model(model.arch, model.model_config)
    try:
        net.load_state_dict(model.state_dict)
    except RuntimeError as exc:
        raise ModelLoadError(f"{where}: the weights do not fit a {model.arch} with the saved config "
                             f"({str(exc).splitlines()[0]})") from None
    return net.eval()


def load_model(path: str | os.PathLike):
    """Rebuild the torch module stored in the model file ``path``."""
    return build_model(read_model_file(path), path)
