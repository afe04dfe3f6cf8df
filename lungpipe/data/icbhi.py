"""The raw ICBHI 2017 database → a manifest with one row per respiratory cycle.

The raw folder holds, possibly in subfolders as the archive unpacks, one ``.wav`` and one ``.txt``
annotation file per recording plus the split file ``ICBHI_challenge_train_test.txt``. Other
``.txt`` files whose names are not recording names (the archive's own notes) are ignored.

Wav headers are read with ``soundfile.info`` (sample rate, frames); no audio is decoded. Hidden
files and ``__MACOSX`` folders are skipped.

Problems (a cycle ending past the recording, ``end <= start``, a flag not 0/1, a malformed line,
an unreadable or empty wav, a wav without annotation or the reverse, a recording absent from the
split file, a split entry without recording, an ambiguous match) are all collected first. By
default :func:`build_manifest` then raises one :class:`DataError` listing them all; with
``skip_bad=True`` every recording with a problem is left out *as a whole* (its cycle indices
would otherwise shift) and the problems are returned in ``rejects``.

A cycle may end at most ``end_tolerance_s`` (default 50 ms) after the end of its recording: the
annotations are given to the millisecond and a small overshoot is harmless (a cut just stops at
the end of the audio); ``end_s`` is kept as annotated, so it can exceed ``duration_s`` by up to
the tolerance. More than that means the annotation does not belong to that audio.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import soundfile as sf

from lungpipe.data.annotations import Cycle, read_annotations
from lungpipe.data.audio_check import scan_float_audio
from lungpipe.data.names import parse_name, try_parse_name
from lungpipe.data.problems import REJECT_COLUMNS, Problem, problems_error
from lungpipe.data.split import SPLITS, find_split_file, match_split_names, read_split_file
from lungpipe.labels import ICBHI_CLASS_NAMES
from lungpipe.util.errors import DataError

#: Columns of the cycle manifest, in order.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "recording", "patient", "split", "cycle", "start_s", "end_s", "crackle", "wheeze", "label",
    "device", "location", "sample_rate", "path", "duration_s", "split_name",
)
DEFAULT_END_TOLERANCE_S = 0.05
_BAD_NAME = ("{stem!r} is not an ICBHI recording name '<patient>_<recording index>_<chest location>_"
             "<acquisition mode>_<device>' (e.g. '101_1b1_Al_sc_Meditron'); rename or remove the wav")


@dataclass
class ManifestResult:
    """The cycle manifest and the rejected items (empty unless ``skip_bad``)."""

    cycles: pd.DataFrame
    rejects: pd.DataFrame

    @property
    def n_recordings(self) -> int:
        return int(self.cycles["recording"].nunique())


@dataclass(frozen=True)
class WavInfo:
    sample_rate: int
    frames: int
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def read_wav_info(path: Path, item: str) -> tuple[WavInfo | None, list[Problem]]:
    """Header of one wav (sample rate, frames, subtype) without decoding the audio."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        return None, [Problem(item, str(path), None,
                              f"unreadable wav ({exc}); re-extract the file from the archive")]
    if info.frames <= 0 or info.samplerate <= 0:
        return None, [Problem(item, str(path), None,
                              "empty wav (no audio frames); re-extract the file from the archive")]
    try:
        bad = scan_float_audio(path, str(info.subtype))
    except (RuntimeError, OSError) as exc:
        return None, [Problem(item, str(path), None, f"undecodable wav ({exc}); re-extract the file")]
    if bad is not None:
        return None, [Problem(item, str(path), None,
                              f"{bad}; replace the recording or rescale it to [-1, 1]")]
    return WavInfo(int(info.samplerate), int(info.frames), str(info.subtype)), []


def _index_files(raw_dir: Path, suffix: str, skip: set[Path]) -> tuple[dict[str, Path], list[Problem]]:
    """Files under ``raw_dir`` with ``suffix`` (any letter case) by stem; a stem found twice is a
    problem (the two files would be ambiguous), and so is a dangling symbolic link (reported as
    such, the stem then counts as present so it is not also called missing)."""
    found: dict[str, list[Path]] = defaultdict(list)
    problems: list[Problem] = []
    dangling: dict[str, Path] = {}
    for path in sorted(raw_dir.rglob("*")):
        parts = path.relative_to(raw_dir).parts
        if any(part.startswith(".") or part == "__MACOSX" for part in parts):
            continue  # hidden files and macOS resource forks (``._name.wav``) are not recordings
        if path.suffix.lower() != suffix:
            continue
        if path.is_symlink() and not path.exists():
            dangling[path.stem] = path
            problems.append(Problem(path.stem, str(path), None,
                                    f"dangling symbolic link (its target {os.readlink(path)!r} does not "
                                    "exist); restore the target or remove the link"))
            continue
        if path.is_file() and path.resolve() not in skip:
            found[path.stem].append(path)
    index: dict[str, Path] = {stem: path for stem, path in dangling.items() if stem not in found}
    for stem, paths in found.items():
        if len(paths) > 1 and (suffix == ".wav" or try_parse_name(stem) is not None):
            listed = ", ".join(str(p) for p in paths)
            problems.extend(Problem(stem, str(p), None,
                                    f"{len(paths)} files named {stem}{suffix} ({listed}); keep one")
                            for p in paths)
        else:
            index[stem] = paths[0]
    return index, problems


def cycle_overlaps(cycles: list[Cycle]) -> tuple[list[Cycle], list[Cycle]]:
    """(duplicated, overlapping) cycles of one recording: a duplicate repeats an earlier cycle's
    start and end; an overlap starts before the end of the cycle before it (in start order)."""
    seen: set[tuple[float, float]] = set()
    duplicated: list[Cycle] = []
    unique: list[Cycle] = []
    for c in cycles:
        if (c.start, c.end) in seen:
            duplicated.append(c)
        else:
            seen.add((c.start, c.end))
            unique.append(c)
    ordered = sorted(unique, key=lambda c: (c.start, c.end))
    overlapping = [b for a, b in itertools.pairwise(ordered) if b.start < a.end]
    return duplicated, overlapping


def _check_cycle_ends(cycles: list[Cycle], info: WavInfo, item: str, file: str,
                      tolerance_s: float) -> list[Problem]:
    return [
        Problem(item, file, c.line,
                f"cycle ends at {c.end} s, after the end of the recording ({info.duration_s:.3f} s, "
                f"tolerance {tolerance_s} s); fix the annotation or replace the wav")
        for c in cycles if c.end > info.duration_s + tolerance_s
    ]


def build_manifest(
    raw_dir: Path,
    split_file: Path | None = None,
    *,
    skip_bad: bool = False,
    end_tolerance_s: float = DEFAULT_END_TOLERANCE_S,
    strict_cycles: bool = False,
) -> ManifestResult:
    """Read the raw ICBHI folder into a cycle manifest (columns :data:`MANIFEST_COLUMNS`).

    ``split_file`` defaults to the one ``ICBHI_challenge_train_test.txt`` found under
    ``raw_dir``. All problems are collected; without ``skip_bad`` one :class:`DataError` lists
    them, with it the recordings concerned are left out and listed in ``rejects``.
    Duplicated and overlapping cycles are logged as a warning with their counts; with
    ``strict_cycles`` they are problems like the others.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: not a folder; pass the folder the ICBHI archive unpacked into")
    split_file = Path(split_file) if split_file is not None else find_split_file(raw_dir)
    if not split_file.is_file():
        raise DataError(f"{split_file}: split file not found; pass the path of {split_file.name}")

    problems: list[Problem] = []
    entries, split_problems = read_split_file(split_file)
    problems += split_problems

    wavs, dup_problems = _index_files(raw_dir, ".wav", skip=set())
    problems += dup_problems
    txts, dup_problems = _index_files(raw_dir, ".txt", skip={split_file.resolve()})
    problems += dup_problems
    duplicated = {p.item for p in dup_problems}

    names: list[str] = []
    for stem, path in wavs.items():
        if try_parse_name(stem) is None:
            problems.append(Problem(stem, str(path), None, _BAD_NAME.format(stem=stem)))
            continue
        names.append(stem)
        if stem not in txts:
            problems.append(Problem(stem, str(path), None,
                                    f"wav without annotation file: expected {stem}.txt beside it; "
                                    "restore the annotation or remove the wav"))
    for stem, path in txts.items():
        if stem not in wavs and try_parse_name(stem) is not None:
            names.append(stem)
            problems.append(Problem(stem, str(path), None,
                                    f"annotation file without wav: expected {stem}.wav; restore "
                                    "the wav or remove the annotation file"))
    names = sorted(set(names) | {n for n in duplicated if try_parse_name(n) is not None})

    matches, match_problems = match_split_names(names, entries, split_file)
    problems += match_problems

    rows: list[tuple] = []
    overlap_counts = {"duplicated": 0, "overlapping": 0}
    first_overlap: str | None = None
    for name in names:
        if name not in wavs or name not in txts:
            continue
        if wavs[name].is_symlink() and not wavs[name].exists():
            continue  # reported as a dangling link
        info, wav_problems = read_wav_info(wavs[name], name)
        cycles, ann_problems = read_annotations(txts[name], name)
        problems += wav_problems + ann_problems
        duplicated, overlapping = cycle_overlaps(cycles)
        for kind, found in (("duplicated", duplicated), ("overlapping", overlapping)):
            overlap_counts[kind] += len(found)
            for c in found:
                reason = (f"cycle {c.start}-{c.end} s repeats an earlier line" if kind == "duplicated" else
                          f"cycle {c.start}-{c.end} s starts before the previous cycle ends")
                first_overlap = first_overlap or f"{txts[name]}, line {c.line}: {reason}"
                if strict_cycles:
                    problems.append(Problem(name, str(txts[name]), c.line,
                                            f"{reason}; remove or fix the line (strict_cycles is on)"))
        if info is not None:
            problems += _check_cycle_ends(cycles, info, name, str(txts[name]), end_tolerance_s)
        if info is None or name not in matches:
            continue
        parsed = parse_name(name)
        entry = matches[name]
        rel = wavs[name].relative_to(raw_dir).as_posix()
        for i, c in enumerate(cycles):
            rows.append((name, parsed.patient, entry.split, i, c.start, c.end, c.crackle, c.wheeze,
                         c.label, parsed.device, parsed.location, info.sample_rate, rel,
                         info.duration_s, entry.name))

    if not strict_cycles and any(overlap_counts.values()):
        logging.getLogger(__name__).warning(
            "%s: %d duplicated and %d overlapping cycle(s) kept (first: %s); set "
            "data.manifest.strict_cycles: true to treat them as errors", raw_dir,
            overlap_counts["duplicated"], overlap_counts["overlapping"], first_overlap)
    problems.sort(key=lambda p: (p.file, p.line or 0))
    if problems and not skip_bad:
        raise problems_error(problems, hint="\n(to leave these recordings out and list them as rejects: "
                                            "--skip-bad, or data.manifest.skip_bad: true in params.yaml)")
    bad_items = {p.item for p in problems}
    cycles_df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    cycles_df = cycles_df[~cycles_df["recording"].isin(bad_items)].reset_index(drop=True)
    cycles_df = cycles_df.astype({
        "recording": str, "patient": "int64", "split": str, "cycle": "int64", "start_s": "float64",
        "end_s": "float64", "crackle": "int64", "wheeze": "int64", "label": "int64", "device": str,
        "location": str, "sample_rate": "int64", "path": str, "duration_s": "float64",
        "split_name": str,
    })
    return ManifestResult(cycles=cycles_df, rejects=rejects_frame(problems))


def rejects_frame(problems: list[Problem]) -> pd.DataFrame:
    """Problems as a table with columns item, file, line (nullable int), reason."""
    frame = pd.DataFrame([(p.item, p.file, p.line, p.reason) for p in problems],
                         columns=list(REJECT_COLUMNS))
    return frame.astype({"item": str, "file": str, "line": "Int64", "reason": str})


def summarize_manifest(cycles: pd.DataFrame) -> dict:
    """Counts for a short summary: recordings and patients, recordings and cycles per split,
    cycles per label and split."""
    per_label = {
        split: {ICBHI_CLASS_NAMES[k]: int(v) for k, v in
                cycles[cycles["split"] == split]["label"].value_counts().reindex(
                    range(len(ICBHI_CLASS_NAMES)), fill_value=0).items()}
        for split in SPLITS
    }
    return {
        "recordings": int(cycles["recording"].nunique()),
        "patients": int(cycles["patient"].nunique()),
        "cycles": len(cycles),
        "recordings_per_split": {s: int(cycles.loc[cycles["split"] == s, "recording"].nunique())
                                 for s in SPLITS},
        "cycles_per_split": {s: int((cycles["split"] == s).sum()) for s in SPLITS},
        "cycles_per_label": per_label,
    }
