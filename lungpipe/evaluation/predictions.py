"""The predictions CSV: one row per cycle (or clip), shared by training, evaluation and inference.

Columns, in this order::

    recording, cycle, patient, label, pred, prob_0, prob_1, …, prob_{K-1}

* ``recording`` (text): the recording (ICBHI file stem) or clip the row comes from.
* ``cycle`` (integer ≥ 0): index of the cycle within its recording (0 for whole clips).
  ``(recording, cycle)`` identifies a row; duplicates are an error.
* ``patient`` (text): the patient; the evaluation bootstrap resamples patients.
* ``label`` (integer 0..K-1, or unlabelled): the true class. Unlabelled rows (inference on new
  recordings) are written with an **empty** cell; when reading, an empty cell and ``-1`` both
  mean unlabelled and become ``-1`` in :attr:`Predictions.labels`.
* ``pred`` (integer 0..K-1): the predicted class. :func:`write_predictions` sets it to the
  argmax of the probabilities (first maximum on ties). It is the column that evaluation scores;
  a reader does not require it to equal the argmax, so other decision rules can be stored.
* ``prob_k`` (float in [0, 1]): class probabilities; each row sums to 1 (within 1e-3).

K is the number of ``prob_`` columns (4 for ICBHI: normal, crackle, wheeze, both).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lungpipe.util.atomic import atomic_path
from lungpipe.util.errors import DataError

BASE_COLUMNS: tuple[str, ...] = ("recording", "cycle", "patient", "label", "pred")
UNLABELLED = -1
PROB_SUM_TOLERANCE = 1e-3
_PROB_RANGE_TOLERANCE = 1e-6
_INVALID = np.iinfo(np.int64).min  # marks an unparsable integer cell


def prob_columns(num_classes: int) -> list[str]:
    """``["prob_0", …, "prob_{K-1}"]``."""
    return [f"prob_{k}" for k in range(num_classes)]


def prediction_columns(num_classes: int) -> list[str]:
    """The full header of a predictions file with K classes."""
    return [*BASE_COLUMNS, *prob_columns(num_classes)]


@dataclass(frozen=True)
class Predictions:
    """The content of one predictions file, as arrays of equal length N.

    ``labels`` holds -1 for unlabelled rows; ``probs`` has shape (N, K).
    """

    recordings: np.ndarray
    cycles: np.ndarray
    patients: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    probs: np.ndarray
    path: Path | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])

    @property
    def labelled(self) -> np.ndarray:
        """Boolean mask of the rows that carry a label."""
        return self.labels != UNLABELLED

    @property
    def has_labels(self) -> bool:
        """True when every row is labelled (what evaluation needs)."""
        return bool(self.labelled.all())


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def write_predictions(path: str | os.PathLike, recordings: Sequence, cycles: Sequence, patients: Sequence,
                      labels: Sequence | None, probs) -> Path:
    """Write a predictions CSV atomically; ``pred`` is the argmax of ``probs``.

    ``labels`` may be ``None`` (all rows unlabelled) or contain ``None``/-1 for unlabelled rows;
    those are written as empty cells. ``probs`` is an (N, K) array-like (numpy or a CPU tensor).
    Raises ``ValueError`` on inconsistent lengths or probabilities that are not a distribution.
    """
    prob = np.asarray(probs, dtype=np.float64)
    if prob.ndim != 2 or prob.shape[1] < 2:
        raise ValueError(f"probs must have shape (N, K) with K >= 2, got {prob.shape}")
    n, k = prob.shape
    columns = {"recording": recordings, "cycle": cycles, "patient": patients}
    if labels is not None:
        columns["label"] = labels
    for name, values in columns.items():
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries but probs has {n} rows")
    if n == 0:
        raise ValueError("no predictions to write (0 rows)")
    problem = _probability_problem(prob)
    if problem is not None:
        raise ValueError(f"probs row {problem[0]}: {problem[1]}")

    cycle_arr = np.asarray(cycles)
    if not np.issubdtype(cycle_arr.dtype, np.integer) or (cycle_arr < 0).any():
        raise ValueError("cycles must be non-negative integers")
    if labels is None:
        label_cells: list = [""] * n
    else:
        label_cells = []
        for i, value in enumerate(labels):
            if value is None or int(value) == UNLABELLED:
                label_cells.append("")
            elif 0 <= int(value) < k and int(value) == value:
                label_cells.append(str(int(value)))
            else:
                raise ValueError(f"label {value!r} at row {i} is outside 0..{k - 1}")

    frame = pd.DataFrame({
        "recording": [str(r) for r in recordings],
        "cycle": cycle_arr.astype(np.int64),
        "patient": [str(p) for p in patients],
        "label": label_cells,
        "pred": prob.argmax(axis=1).astype(np.int64),
    })
    for j, name in enumerate(prob_columns(k)):
        frame[name] = prob[:, j]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.8g")
    return Path(path)


def _probability_problem(prob: np.ndarray) -> tuple[int, str] | None:
    """(first bad row, what is wrong) when rows of ``prob`` are not distributions, else None."""
    bad = ~np.isfinite(prob).all(axis=1) | (prob < -_PROB_RANGE_TOLERANCE).any(axis=1) | (
        prob > 1 + _PROB_RANGE_TOLERANCE).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        return i, f"probabilities outside [0, 1]: {prob[i].tolist()}"
    sums = prob.sum(axis=1)
    off = np.abs(sums - 1.0) > PROB_SUM_TOLERANCE
    if off.any():
        i = int(np.flatnonzero(off)[0])
        return i, f"probabilities sum to {sums[i]:.6g}, not 1 (apply softmax to logits before writing)"
    return None


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def read_predictions(path: str | os.PathLike, num_classes: int | None = None) -> Predictions:
    """Read and validate a predictions CSV.

    Raises :class:`DataError` naming the file, the line (header = line 1) and the fix when a
    column is missing or unknown, a value does not parse, a class index is outside 0..K-1, a
    probability row is not a distribution, or a ``(recording, cycle)`` pair repeats.
    ``num_classes``, when given, must match the number of ``prob_`` columns.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: predictions file not found (run training or `lungpipe predict` first)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty; expected a header {', '.join(prediction_columns(4))}") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: not a valid CSV file ({exc})") from None

    header = [str(c).strip() for c in frame.columns]
    frame.columns = header
    probs_found = [c for c in header if re.fullmatch(r"prob_\d+", c)]
    k = len(probs_found)
    missing = [c for c in BASE_COLUMNS if c not in header] + (["prob_0", "prob_1"] if k < 2 else [])
    if missing:
        raise DataError(f"{path}: line 1: missing column(s) {', '.join(missing)}; expected the header "
                        f"{', '.join(prediction_columns(max(k, 2)))}")
    if set(probs_found) != set(prob_columns(k)):
        raise DataError(f"{path}: line 1: prob_ columns must be numbered 0..K-1 without gaps; found "
                        f"{', '.join(probs_found)}")
    unknown = [c for c in header if c not in BASE_COLUMNS and c not in probs_found]
    if unknown:
        raise DataError(f"{path}: line 1: unknown column(s) {', '.join(unknown)}; expected "
                        f"{', '.join(prediction_columns(k))}")
    if num_classes is not None and k != num_classes:
        raise DataError(f"{path}: has {k} prob_ columns but {num_classes} classes were expected")
    if len(frame) == 0:
        raise DataError(f"{path}: no rows below the header")

    def fail(row: int, message: str) -> DataError:
        return DataError(f"{path}: line {row + 2}: {message}")

    recordings = frame["recording"].str.strip().to_numpy(dtype=object)
    patients = frame["patient"].str.strip().to_numpy(dtype=object)
    for name, values in (("recording", recordings), ("patient", patients)):
        empty = np.flatnonzero(values == "")
        if empty.size:
            raise fail(int(empty[0]), f"empty {name}; every row needs a {name}")

    cycles = _parse_ints(frame["cycle"], allow_empty=False)
    bad = np.flatnonzero(cycles < 0)
    if bad.size:
        i = int(bad[0])
        raise fail(i, f"cycle {frame['cycle'].iloc[i]!r} is not a non-negative integer")

    labels = _parse_ints(frame["label"], allow_empty=True)
    bad = np.flatnonzero((labels < UNLABELLED) | (labels >= k))
    if bad.size:
        i = int(bad[0])
        raise fail(i, f"label {frame['label'].iloc[i]!r} is not a class index 0..{k - 1} "
                      "(leave it empty or -1 for unlabelled rows)")

    preds = _parse_ints(frame["pred"], allow_empty=False)
    bad = np.flatnonzero((preds < 0) | (preds >= k))
    if bad.size:
        i = int(bad[0])
        raise fail(i, f"pred {frame['pred'].iloc[i]!r} is not a class index 0..{k - 1}")

    probs = np.empty((len(frame), k), dtype=np.float64)
    for j, name in enumerate(prob_columns(k)):
        col = pd.to_numeric(frame[name].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(col))
        if bad.size:
            i = int(bad[0])
            raise fail(i, f"{name} {frame[name].iloc[i]!r} is not a finite number")
        probs[:, j] = col
    problem = _probability_problem(probs)
    if problem is not None:
        raise fail(problem[0], f"prob_0..prob_{k - 1}: {problem[1]}")

    keys = recordings.astype(str) + "\x00" + cycles.astype(str)
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup_key = int(first[np.flatnonzero(counts > 1)[0]])
        later = np.flatnonzero(keys == keys[dup_key])
        raise fail(int(later[1]), f"recording {recordings[dup_key]!r} cycle {cycles[dup_key]} repeats "
                                  f"line {dup_key + 2}; each (recording, cycle) must appear once")

    return Predictions(recordings=recordings, cycles=cycles, patients=patients, labels=labels,
                       preds=preds, probs=probs, path=path)



def _parse_ints(column, allow_empty: bool) -> np.ndarray:
    """Parse a text column of integers: empty → -1 (when allowed), anything else bad → a sentinel."""
    text = column.str.strip()
    out = np.full(len(text), _INVALID, dtype=np.int64)
    is_int = text.str.fullmatch(r"[+-]?\d+").to_numpy(dtype=bool)
    out[is_int] = text[is_int].astype(np.int64).to_numpy()
    if allow_empty:
        out[(text == "").to_numpy(dtype=bool)] = UNLABELLED
    return out
