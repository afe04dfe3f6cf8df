"""Problems found while reading a dataset: collected, then raised together or reported.

A :class:`Problem` names the item (a recording), the file, the line where known, and what is wrong
with the fix. Readers collect every problem they meet so that one run lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lungpipe.util.errors import DataError

#: Columns of a rejects table.
REJECT_COLUMNS: tuple[str, ...] = ("item", "file", "line", "reason")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: which item, where, and what (with the fix)."""

    item: str
    file: str
    line: int | None
    reason: str

    def describe(self) -> str:
        where = self.file if self.line is None else f"{self.file}, line {self.line}"
        return f"{where}: {self.reason}"


def problems_error(problems: list[Problem], limit: int = 20, hint: str = "") -> DataError:
    """One :class:`DataError` listing (the first ``limit`` of) ``problems``."""
    shown = "\n".join(f"  - {p.describe()}" for p in problems[:limit])
    more = f"\n  … and {len(problems) - limit} more" if len(problems) > limit else ""
    return DataError(f"{len(problems)} problem(s) in the input:\n{shown}{more}{hint}")


def as_posix(path: Path | str) -> str:
    return Path(path).as_posix()
