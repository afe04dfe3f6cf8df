"""Checkpoints: the last epoch (to resume an interrupted run) and the best epoch (to evaluate).

Both are written atomically, so killing a stage mid-write leaves the previous checkpoint intact.
They hold only tensors and plain data (numbers, strings, lists, dicts), and load with
``torch.load(weights_only=True)``: a checkpoint is a file that may come from elsewhere, and
unpickling anything else could run code. The RNG states of python and numpy are stored as
tensors and numbers for that reason (:func:`rng_state`).
"""

from __future__ import annotations

import logging
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lungpipe.util.atomic import atomic_path
from lungpipe.util.errors import LungpipeError

log = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"


class UnsafeCheckpointError(LungpipeError, ValueError):
    """A checkpoint file needs unpickling of something other than tensors and plain data."""


def save(path: Path, state: dict[str, Any]) -> Path:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (or a model file) with the safe unpickler; anything but tensors and plain data is refused
    (nothing in the file is executed) with an error naming the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it needs unpickling of objects other than tensors and plain "
            f"data, which could run code ({_first_line(exc)}). lungpipe never writes such files: delete it, or "
            f"start the run in another checkpoint folder."
        ) from None
    except Exception as exc:  # corrupted or foreign file
        raise RuntimeError(f"cannot read checkpoint {path}: {exc}. Delete it to start the run afresh.") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into python numbers and lists (recursively)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and numbers (loadable with ``weights_only=True``)."""
    version, mt, gauss = random.getstate()
    key, np_mt, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"key": str(key), "state": torch.from_numpy(np_mt.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["key"], npy["state"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class Checkpointer:
    """``last.pt`` and ``best.pt`` of one run in ``directory`` (None: keep nothing on disk).

    ``signature`` identifies the run: ``last.pt`` of another signature is not resumed. ``writer``
    is False on the processes of a distributed run other than rank 0, which read but never write.
    """

    def __init__(self, directory: Path | None, signature: str = "", *, writer: bool = True):
        self.directory = Path(directory) if directory is not None else None
        self.signature = signature
        self.writer = writer

    @property
    def last_path(self) -> Path | None:
        return self.directory / LAST if self.directory is not None else None

    @property
    def best_path(self) -> Path | None:
        return self.directory / BEST if self.directory is not None else None

    def resume_state(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The state saved by :meth:`save_last` for this signature, or None (no file, other run)."""
        path = self.last_path
        if path is None or not path.exists():
            return None
        state = load(path, map_location=map_location)
        if state.get("signature") != self.signature:
            log.warning("%s belongs to another configuration; starting afresh", path)
            return None
        return state

    def save_last(self, state: dict[str, Any]) -> None:
        if self.writer and self.last_path is not None:
            save(self.last_path, {**plain_state(state), "signature": self.signature})

    def save_best(self, model_state: dict[str, torch.Tensor], *, epoch: int, value: float, metric: str) -> None:
        if self.writer and self.best_path is not None:
            save(self.best_path, {"model": model_state, "epoch": int(epoch), "value": float(value),
                                  "metric": metric, "signature": self.signature})

    def load_best(self) -> dict[str, torch.Tensor] | None:
        path = self.best_path
        if path is None or not path.exists():
            return None
        return load(path)["model"]


def plain_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A resume state with its bookkeeping values (history, best value ...) as plain python data;
    tensors and state dicts are kept as they are."""
    return {k: v if k in ("model", "optimizer", "scheduler", "scaler", "rng", "generator") else plain(v)
            for k, v in state.items()}
