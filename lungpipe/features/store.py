"""On-disk layout of a features folder (a contract with the training code) and its reader.

``out_dir/``
  ``train.npy``, ``test.npy``  float32 (N, frames, mel_bins), already normalised, memory-mappable
  ``train.csv``, ``test.csv``  the manifest rows of that split, row i ↔ array[i]
  ``stats.json``             normalisation constants, shapes, the configs and ``frontend_key``

Arrays are created with ``np.lib.format.open_memmap`` (a standard ``.npy`` header, then the
data); rows are written straight into the data region with ``os.pwrite`` so no process keeps
gigabytes of mapped pages resident, and read back with ``np.load(path, mmap_mode="r")``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lungpipe.features.config import CycleConfig, FrontendConfig, NormConfig, PreprocessConfig
from lungpipe.util.errors import DataError
from lungpipe.util.typed_config import from_dict

SPLITS = ("train", "test")
STATS_FILE = "stats.json"
LAYOUT_FILES = tuple(f"{s}{ext}" for s in SPLITS for ext in (".npy", ".csv")) + (STATS_FILE,)
DTYPE = np.float32


def array_path(features_dir: Path, split: str) -> Path:
    return Path(features_dir) / f"{split}.npy"


def index_path(features_dir: Path, split: str) -> Path:
    return Path(features_dir) / f"{split}.csv"


@dataclass
class FeatureSplit:
    """One split of a features folder: ``x`` the (read-only) memory-mapped array,
    ``index`` its manifest rows (row i ↔ ``x[i]``), ``stats`` the folder's ``stats.json``."""

    x: np.ndarray
    index: pd.DataFrame
    stats: dict[str, Any]

    def __len__(self) -> int:
        return int(self.x.shape[0])


def load_stats(features_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``stats.json`` of a features folder (DataError when missing or unreadable)."""
    path = Path(features_dir) / STATS_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing; run the preprocess stage (dvc repro preprocess) first.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); delete the folder and preprocess again.") from exc


def config_from_stats(stats: dict[str, Any]) -> PreprocessConfig:
    """The :class:`PreprocessConfig` a features folder was made with (from its ``stats.json``),
    so inference can compute features exactly as preprocessing did."""
    return PreprocessConfig(
        cycle=from_dict(CycleConfig, stats["cycle"]),
        frontend=from_dict(FrontendConfig, stats["frontend"]),
        norm=from_dict(NormConfig, stats.get("norm") or {"mode": stats["norm_mode"]}),
    )


def load_split(features_dir: str | os.PathLike, split: str) -> FeatureSplit:
    """Open ``split`` ("train" or "test") of a features folder without reading the array."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    features_dir = Path(features_dir)
    stats = load_stats(features_dir)
    apath, ipath = array_path(features_dir, split), index_path(features_dir, split)
    for path in (apath, ipath):
        if not path.is_file():
            raise DataError(f"{path}: missing; run the preprocess stage again.")
    x = np.load(apath, mmap_mode="r")
    index = pd.read_csv(ipath)
    if x.ndim != 3 or x.shape[0] != len(index):
        raise DataError(
            f"{apath}: shape {x.shape} does not match {ipath} ({len(index)} rows); the folder is "
            "inconsistent, delete it and preprocess again."
        )
    return FeatureSplit(x=x, index=index, stats=stats)


def create_array(path: Path, n_rows: int, row_shape: tuple[int, int]) -> int:
    """Create an ``.npy`` file of ``n_rows`` float32 rows (contents unset) and return the byte
    offset of row 0."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=DTYPE, shape=(n_rows, *row_shape))
    offset = int(mm.offset)
    del mm
    size = offset + n_rows * int(np.prod(row_shape)) * np.dtype(DTYPE).itemsize
    if n_rows and hasattr(os, "posix_fallocate"):
        fd = os.open(path, os.O_RDWR)
        try:  # reserve the blocks now: cheaper writes later, and a full disk fails up front
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            raise DataError(f"{path}: cannot reserve {size / 1e9:.2f} GB for the features ({exc}).") from exc
        finally:
            os.close(fd)
    return offset


class RowWriter:
    """Writes float32 rows into the data region of an ``.npy`` file made by :func:`create_array`."""

    def __init__(self, path: Path, offset: int, row_shape: tuple[int, int]) -> None:
        self.path = Path(path)
        self.offset = offset
        self.row_bytes = int(np.prod(row_shape)) * np.dtype(DTYPE).itemsize
        self.row_shape = tuple(row_shape)
        self._fd = os.open(self.path, os.O_RDWR)

    def write(self, first_row: int, rows: np.ndarray) -> None:
        """Write ``rows`` (k, *row_shape) starting at row ``first_row``."""
        rows = np.ascontiguousarray(rows, dtype=DTYPE)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {rows.shape[1:]} do not fit {self.row_shape}")
        data = memoryview(rows).cast("B")
        position = self.offset + first_row * self.row_bytes
        while data:
            written = os.pwrite(self._fd, data, position)
            data, position = data[written:], position + written

    def read(self, first_row: int, n_rows: int) -> np.ndarray:
        """Read ``n_rows`` rows starting at ``first_row`` into a new array."""
        size = n_rows * self.row_bytes
        buf = bytearray(size)
        view, position = memoryview(buf), self.offset + first_row * self.row_bytes
        while view:
            got = os.preadv(self._fd, [view], position)
            if got == 0:
                raise DataError(f"{self.path}: shorter than its header says; preprocess again.")
            view, position = view[got:], position + got
        return np.frombuffer(buf, dtype=DTYPE).reshape(n_rows, *self.row_shape)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # pragma: no cover - safety net
        try:
            self.close()
        except OSError:
            pass
