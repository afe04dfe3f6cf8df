"""The preprocess step: a cycle manifest and a raw folder → a features folder (see ``store``).

Each recording is read and resampled once; its cycles are cut, brought to a fixed length and
turned into spectrograms in one batch. Recordings are spread over ``cfg.workers`` processes
(one torch thread each), largest first; workers write their rows straight into the output
arrays, so memory stays bounded whatever the dataset size. With ``norm.mode="train_stats"`` a
second pass normalises the arrays in place with the training split's mean/std.

Everything is written into a staging folder (:func:`lungpipe.util.atomic.staging_dir`: under the
project's git/dvc-ignored ``.lungpipe-tmp/``, not inside ``data/features/``) and renamed onto
``out_dir`` at the end, so an interrupted run leaves no folder that looks complete, and a killed
one leaves nothing in the DVC-tracked folders (its staging folder is swept at the next start).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lungpipe.features.audio import read_audio
from lungpipe.features.config import PreprocessConfig, frontend_key
from lungpipe.features.extract import features_for_recording
from lungpipe.features.frontend import n_frames
from lungpipe.features.stats import ValueSums, combine, mean_std, norm_constants, normalise
from lungpipe.features.store import LAYOUT_FILES, SPLITS, STATS_FILE, RowWriter, array_path, create_array
from lungpipe.util import atomic
from lungpipe.util.atomic import write_csv, write_json
from lungpipe.util.errors import DataError
from lungpipe.util.progress import make_progress

REQUIRED_COLUMNS = ("path", "split", "start_s", "end_s")
_NORMALISE_ROWS = 32  # rows per in-place normalisation chunk (≈ 13 MB at 798 × 128)


@dataclass(frozen=True)
class PreprocessSummary:
    """What a preprocess run produced and how long it took."""

    out_dir: Path
    frontend_key: str
    counts: dict[str, int]
    n_recordings: int
    n_frames: int
    n_mels: int
    audio_seconds: float
    wall_s: float

    @property
    def n_cycles(self) -> int:
        return sum(self.counts.values())

    @property
    def cycles_per_s(self) -> float:
        return self.n_cycles / self.wall_s if self.wall_s > 0 else float("inf")

    def __str__(self) -> str:
        """What the stage prints: counts, shapes, audio and wall time (floats to 3 decimals)."""
        per_split = ", ".join(f"{split} {n}" for split, n in self.counts.items())
        return (
            f"features {self.frontend_key} -> {self.out_dir}\n"
            f"  {self.n_cycles} cycles ({per_split}) from {self.n_recordings} recordings, "
            f"{self.audio_seconds:.3f} s of audio\n"
            f"  each {self.n_frames} frames x {self.n_mels} mel bins; took {self.wall_s:.3f} s "
            f"({self.cycles_per_s:.3f} cycles/s)"
        )


# --------------------------------------------------------------------------- manifest → tasks


@dataclass(frozen=True)
class _Cycle:
    split: str
    row: int  # row in that split's array
    start_s: float
    end_s: float
    where: str  # manifest file + line, for error messages


@dataclass(frozen=True)
class _Task:
    task_id: int
    wav: str
    cycles: tuple[_Cycle, ...]


def _read_manifest(manifest: pd.DataFrame | str | os.PathLike) -> tuple[pd.DataFrame, str, int]:
    """The manifest frame, a name for messages, and the line number of row 0."""
    if isinstance(manifest, pd.DataFrame):
        return manifest.reset_index(drop=True), "manifest (DataFrame)", 0
    path = Path(manifest)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found; run the manifest stage first.")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse the manifest CSV ({exc}); rebuild it.") from exc
    return frame, str(path), 2  # line 1 is the header


def _check_manifest(frame: pd.DataFrame, source: str, first_line: int) -> None:
    line_word = "line" if first_line else "row"
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; a cycle manifest needs {list(REQUIRED_COLUMNS)}.")
    if frame.empty:
        raise DataError(f"{source}: the manifest has no rows.")
    bad_split = ~frame["split"].isin(SPLITS)
    if bad_split.any():
        i = int(np.flatnonzero(bad_split.to_numpy())[0])
        raise DataError(
            f"{source} {line_word} {i + first_line}: split {frame['split'].iloc[i]!r} is not one of "
            f"{list(SPLITS)}; fix the manifest."
        )
    for column in ("start_s", "end_s"):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{source} {line_word} {i + first_line}: {column} {frame[column].iloc[i]!r} is not a "
                "finite number; fix the manifest."
            )
    bad_path = frame["path"].isna() | (frame["path"].astype(str).str.strip() == "")
    if bad_path.any():
        i = int(np.flatnonzero(bad_path.to_numpy())[0])
        raise DataError(f"{source} {line_word} {i + first_line}: empty path; fix the manifest.")


def _plan_tasks(frame: pd.DataFrame, raw_dir: Path, source: str, first_line: int) -> list[_Task]:
    """One task per recording, holding its cycles with their rows in the split arrays."""
    line_word = "line" if first_line else "row"
    rows_in_split = frame.groupby("split", sort=False).cumcount().to_numpy()
    groups: dict[str, list[_Cycle]] = {}
    for i, (path, split, start, end) in enumerate(
        zip(frame["path"].astype(str), frame["split"], frame["start_s"].astype(float), frame["end_s"].astype(float))
    ):
        where = f"{source} {line_word} {i + first_line} ({path})"
        groups.setdefault(path, []).append(_Cycle(split, int(rows_in_split[i]), start, end, where))
    return [_Task(k, str(Path(raw_dir) / path), tuple(cycles)) for k, (path, cycles) in enumerate(groups.items())]


# --------------------------------------------------------------------------- worker side


@dataclass
class _WorkerState:
    cfg: PreprocessConfig
    writers: dict[str, RowWriter]
    pass1_stats: dict[str, Any] | None


_STATE: _WorkerState | None = None


def _init_worker(cfg: PreprocessConfig, arrays: dict[str, tuple[str, int]], row_shape: tuple[int, int],
                 pass1_stats: dict[str, Any] | None, single_thread: bool) -> None:
    global _STATE
    if single_thread:
        import torch  # lazy: torch loads after pin_portable_numerics()

        torch.set_num_threads(1)
    writers = {split: RowWriter(Path(path), offset, row_shape) for split, (path, offset) in arrays.items()}
    _STATE = _WorkerState(cfg, writers, pass1_stats)


def _close_worker() -> None:
    global _STATE
    if _STATE is not None:
        for writer in _STATE.writers.values():
            writer.close()
    _STATE = None


def _runs(cycles: tuple[_Cycle, ...]) -> Iterator[tuple[str, int, int, int]]:
    """Maximal runs (split, first array row, first position in ``cycles``, length) of cycles
    that land in consecutive rows of one split, so each run is one write."""
    start = 0
    for i in range(1, len(cycles) + 1):
        if (i == len(cycles) or cycles[i].split != cycles[start].split
                or cycles[i].row != cycles[i - 1].row + 1):
            yield cycles[start].split, cycles[start].row, start, i - start
            start = i


def _extract(task: _Task) -> tuple[int, int, float, dict[str, ValueSums]]:
    """Features of one recording written into the arrays; returns the task id, cycle count,
    audio seconds and per-split sums of the un-normalised values."""
    state = _STATE
    assert state is not None, "worker not initialised"
    try:
        wave, sr = read_audio(task.wav)
    except DataError as exc:
        raise DataError(f"{exc} [needed by {task.cycles[0].where}]") from None
    spans = [(c.start_s, c.end_s) for c in task.cycles]
    feats = features_for_recording(wave, sr, spans, state.cfg, [c.where for c in task.cycles]).numpy()
    sums: dict[str, ValueSums] = {}
    for split, first_row, pos, length in _runs(task.cycles):
        block = feats[pos:pos + length]
        sums[split] = combine([sums.get(split, ValueSums()), ValueSums.of(block)])
        if state.pass1_stats is not None:
            block = normalise(block, state.pass1_stats)
        state.writers[split].write(first_row, block)
    return task.task_id, len(task.cycles), len(wave) / sr, sums


def _normalise_rows(job: tuple[str, int, int, dict[str, Any]]) -> int:
    """Normalise rows [first, first + n) of one split in place; returns n."""
    state = _STATE
    assert state is not None, "worker not initialised"
    split, first, n, stats = job
    writer = state.writers[split]
    writer.write(first, normalise(writer.read(first, n), stats))
    return n


# --------------------------------------------------------------------------- parent side


@contextlib.contextmanager
def _executor(workers: int, initargs: tuple) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """Yields ``imap(fn, items)`` (unordered) running in ``workers`` processes, or in this
    process with one torch thread when ``workers <= 1`` (same numbers either way)."""
    # Imported once here, so forked workers share the loaded modules instead of importing them.
    import torch  # lazy: torch loads after pin_portable_numerics()
    import torchaudio  # noqa: F401 - lazy: torch loads after pin_portable_numerics()

    if workers <= 1:
        threads = torch.get_num_threads()
        _init_worker(*initargs)
        try:
            yield lambda fn, items: map(fn, items)
        finally:
            _close_worker()
            torch.set_num_threads(threads)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
        yield lambda fn, items: pool.imap_unordered(fn, items, chunksize=1)
        pool.close()
        pool.join()


def _split_scheme(frame: pd.DataFrame) -> str | None:
    """The manifest's ``split_scheme`` (official, random_recording), for labels downstream."""
    if "split_scheme" not in frame.columns:
        return None
    schemes = sorted(set(frame["split_scheme"].astype(str)))
    return schemes[0] if len(schemes) == 1 else "+".join(schemes)


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a folder that is not a features folder (it would be deleted)."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DataError(f"{out_dir}: exists and is not a folder; choose another features folder.")
        entries = {p.name for p in out_dir.iterdir()}
        if entries and not (STATS_FILE in entries and entries <= set(LAYOUT_FILES)):
            raise DataError(
                f"{out_dir}: exists and holds files other than a features folder's {list(LAYOUT_FILES)}; "
                "it would be replaced as a whole, so choose an empty or new folder."
            )


def _remove_legacy_debris(out_dir: Path) -> None:
    """Staging folders that older versions left beside ``out_dir`` when killed."""
    for pattern in (f".{out_dir.name}.tmp-*", f".{out_dir.name}.old-*"):
        for path in out_dir.parent.glob(pattern):
            atomic.remove_path(path)


def _progress(enabled: bool):
    return make_progress(disable=None if enabled else True)


def preprocess(
    manifest: pd.DataFrame | str | os.PathLike,
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: PreprocessConfig,
    progress: bool = True,
) -> PreprocessSummary:
    """Turn every manifest row into a normalised (frames, mels) feature row of ``out_dir``.

    ``manifest``: a DataFrame or CSV path with at least ``path`` (relative to ``raw_dir``),
    ``split`` (train/test), ``start_s``, ``end_s``; all columns are copied to ``<split>.csv``.
    ``out_dir`` is replaced as a whole at the end (it must be new, empty or a features folder).
    """
    started = time.perf_counter()
    frame, source, first_line = _read_manifest(manifest)
    _check_manifest(frame, source, first_line)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: raw audio folder not found; run the download (or synth) stage first.")

    sample_rate = cfg.cycle.sample_rate
    row_shape = (n_frames(cfg.frontend, cfg.cycle.n_samples, sample_rate), cfg.frontend.n_mels)
    tasks = _plan_tasks(frame, raw_dir, source, first_line)
    counts = {split: int((frame["split"] == split).sum()) for split in SPLITS}
    key = frontend_key(cfg)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_legacy_debris(out_dir)
    tmp = atomic.staging_dir(out_dir)
    try:
        arrays = {}
        for split in SPLITS:
            path = array_path(tmp, split)
            arrays[split] = (str(path), create_array(path, counts[split], row_shape))
        pass1_stats = None if cfg.norm.mode == "train_stats" else norm_constants(cfg.norm, ValueSums())
        workers = max(1, min(int(cfg.workers), len(tasks)))
        initargs = (cfg, arrays, row_shape, pass1_stats, True)
        # Largest recordings first so no worker is left with a big one at the end.
        order = sorted(tasks, key=lambda t: (-len(t.cycles), t.task_id))
        results: dict[int, dict[str, ValueSums]] = {}
        audio_seconds = 0.0
        with _executor(workers, initargs) as imap, _progress(progress) as bar:
            job = bar.add_task("features", total=len(tasks))
            for task_id, _, seconds, sums in imap(_extract, order):
                results[task_id] = sums
                audio_seconds += seconds
                bar.advance(job)
            train_sums = combine(
                results[k]["train"] for k in sorted(results) if "train" in results[k]
            )
            constants = norm_constants(cfg.norm, train_sums, source)
            if cfg.norm.mode == "train_stats":
                chunks = [
                    (split, first, min(_NORMALISE_ROWS, counts[split] - first), constants)
                    for split in SPLITS for first in range(0, counts[split], _NORMALISE_ROWS)
                ]
                job = bar.add_task("normalise", total=len(chunks))
                for _ in imap(_normalise_rows, chunks):
                    bar.advance(job)

        for split in SPLITS:
            write_csv(tmp / f"{split}.csv", frame[frame["split"] == split])
        train_mean_std = None
        if train_sums.count:
            train_mean_std = list(mean_std(train_sums))
        stats = {
            **constants,
            "n_frames": row_shape[0],
            "n_mels": row_shape[1],
            "n_samples": cfg.cycle.n_samples,
            "sample_rate": sample_rate,
            "frontend": dataclasses.asdict(cfg.frontend),
            "cycle": dataclasses.asdict(cfg.cycle),
            "norm": dataclasses.asdict(cfg.norm),
            "frontend_key": key,
            "counts": counts,
            "split_scheme": _split_scheme(frame),
            "raw_train_mean_std": train_mean_std,
        }
        write_json(tmp / STATS_FILE, stats)
        atomic.make_readable(tmp)
        atomic.replace_dir(tmp, out_dir)
    finally:
        atomic.remove_path(tmp)
    return PreprocessSummary(
        out_dir=out_dir, frontend_key=key, counts=counts, n_recordings=len(tasks),
        n_frames=row_shape[0], n_mels=row_shape[1], audio_seconds=audio_seconds,
        wall_s=time.perf_counter() - started,
    )
