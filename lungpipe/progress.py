"""Console output of long-running work: the rich progress bars, and numbers as people read them."""

from __future__ import annotations

import sys

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def make_progress(*extra_columns, transient: bool = False, disable: bool | None = None) -> Progress:
    """A progress bar: description, bar, n/N, elapsed, remaining, plus any extra columns.

    Disabled automatically when stderr is not a terminal unless ``disable`` says otherwise
    (DVC and CI logs then stay readable).
    """
    if disable is None:
        disable = not sys.stderr.isatty()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        transient=transient,
        disable=disable,
    )


#: Decimals of every printed summary number (scores, CIs, means).
SUMMARY_DECIMALS = 3


def format_number(value: float | None, decimals: int = SUMMARY_DECIMALS) -> str:
    """``value`` rounded to ``decimals`` ("n/a" when missing or not finite)."""
    import math

    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:.{decimals}f}"


def format_estimate(value: float | None, low: float | None = None, high: float | None = None,
                    decimals: int = SUMMARY_DECIMALS) -> str:
    """``0.906 [0.880, 0.931]``: a value with its confidence interval in brackets (omitted when unknown)."""
    text = format_number(value, decimals)
    if low is None and high is None:
        return text
    return f"{text} [{format_number(low, decimals)}, {format_number(high, decimals)}]"
