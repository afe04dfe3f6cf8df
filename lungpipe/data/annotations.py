"""ICBHI annotation files: one respiratory cycle per line, ``start end crackle wheeze``.

Times are seconds from the start of the recording; crackle and wheeze are 0/1 flags. Fields are
separated by tabs or spaces; blank lines are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lungpipe.data.problems import Problem, problems_error


@dataclass(frozen=True)
class Cycle:
    """One annotated respiratory cycle; ``line`` is its 1-based line in the annotation file."""

    start: float
    end: float
    crackle: int
    wheeze: int
    line: int

    @property
    def label(self) -> int:
        """0 normal, 1 crackle only, 2 wheeze only, 3 both."""
        return cycle_label(self.crackle, self.wheeze)


def cycle_label(crackle: int, wheeze: int) -> int:
    """The 4-class ICBHI label: 0 normal, 1 crackle only, 2 wheeze only, 3 both."""
    return int(crackle) + 2 * int(wheeze)


_FIX = "each line must be 'start end crackle wheeze' (seconds, seconds, 0/1, 0/1)"


def _parse_time(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_annotation_text(text: str, file: str, item: str) -> tuple[list[Cycle], list[Problem]]:
    """Parse the text of one annotation file; returns the good cycles and every problem found.

    Problems: a line without exactly four fields, a time that is not a number, a negative start,
    ``end <= start``, a flag other than 0/1, and a file without any cycle.
    """
    cycles: list[Cycle] = []
    problems: list[Problem] = []

    def bad(lineno: int | None, reason: str) -> None:
        problems.append(Problem(item, file, lineno, reason))

    for lineno, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != 4:
            bad(lineno, f"malformed line {raw.strip()!r}: {len(fields)} field(s); {_FIX}")
            continue
        start, end = _parse_time(fields[0]), _parse_time(fields[1])
        if start is None or end is None:
            bad(lineno, f"malformed line {raw.strip()!r}: start/end are not numbers; {_FIX}")
            continue
        bad_flags = [(name, token) for name, token in (("crackle", fields[2]), ("wheeze", fields[3]))
                     if token not in ("0", "1")]
        for name, token in bad_flags:
            bad(lineno, f"{name} flag is {token!r}, not 0 or 1; fix the annotation ({_FIX})")
        if bad_flags:
            continue
        if start < 0:
            bad(lineno, f"cycle starts at {start} s, before the recording; fix the start time")
            continue
        if end <= start:
            bad(lineno, f"cycle ends at {end} s, not after its start {start} s; fix the times")
            continue
        cycles.append(Cycle(start, end, int(fields[2]), int(fields[3]), lineno))
    if not cycles and not problems:
        bad(None, "no respiratory cycles in the annotation file; add its cycles or remove the "
                  "recording (its .wav and .txt)")
    return cycles, problems


def read_annotations(path: Path, item: str | None = None) -> tuple[list[Cycle], list[Problem]]:
    """Read and check one annotation file (see :func:`parse_annotation_text`)."""
    path = Path(path)
    item = item or path.stem
    try:
        text = path.read_text(encoding="utf-8-sig")  # a UTF-8 byte-order mark is stripped
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Problem(item, str(path), None, f"cannot read the annotation file ({exc})")]
    return parse_annotation_text(text, str(path), item)


def load_annotations(path: Path) -> list[Cycle]:
    """Read one annotation file; a DataError listing every problem when it has any."""
    cycles, problems = read_annotations(path)
    if problems:
        raise problems_error(problems)
    return cycles
