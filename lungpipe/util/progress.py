"""Console output of long-running work: the rich progress bars, and numbers as people read them."""

from __future__ import annotations

import math
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column


def _kept(column: ProgressColumn) -> ProgressColumn:
    """``column`` never wrapped nor shortened when the terminal is narrow."""
    column._table_column = Column(no_wrap=True, overflow="ignore")
    return column


def make_progress(*extra_columns: ProgressColumn, transient: bool = False, disable: bool | None = None,
                  console: Console | None = None) -> Progress:
    """A progress bar: description, bar, n/N, elapsed, remaining, plus any extra columns.

    On a narrow terminal (80 columns) the description is cut with an ellipsis and the bar shrinks,
    while the step count, the times and the extra columns (loss, ...) stay whole. Disabled
    automatically when stderr is not a terminal unless ``disable`` says otherwise (DVC and CI logs
    then stay readable).
    """
    if disable is None:
        disable = not sys.stderr.isatty()
    return Progress(
        TextColumn("[bold]{task.description}", table_column=Column(ratio=3, no_wrap=True, overflow="ellipsis",
                                                                   min_width=6)),
        BarColumn(bar_width=None, table_column=Column(ratio=2, min_width=4)),
        _kept(MofNCompleteColumn()),
        _kept(TimeElapsedColumn()),
        _kept(TimeRemainingColumn()),
        *map(_kept, extra_columns),
        transient=transient,
        disable=disable,
        console=console,
        expand=True,
    )


#: Decimals of every printed summary number (scores, CIs, means).
SUMMARY_DECIMALS = 3


def format_number(value: float | None, decimals: int = SUMMARY_DECIMALS) -> str:
    """``value`` rounded to ``decimals`` ("n/a" when missing or not finite)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:.{decimals}f}"
