"""Console output: the training bar at 80 columns keeps its step count and ETA; summaries print
rounded numbers, not reprs."""

from __future__ import annotations

import io
import re

from rich.console import Console
from rich.progress import TextColumn

from lungpipe.util.progress import format_number, make_progress


def _render(width: int, description: str) -> str:
    out = io.StringIO()
    console = Console(width=width, file=out, force_terminal=True, color_system=None)
    now = [0.0]
    bar = make_progress(TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("val {task.fields[val]}"),
                        disable=False, console=console)
    bar.get_time = lambda: now[0]
    task = bar.add_task(description, total=49360, loss=0.1234, val="0.512")
    bar.start_task(task)
    for step in range(1, 11):  # 123.4 steps a second: 1234 done after 10 s, 390 s left
        now[0] = float(step)
        bar.update(task, completed=round(123.4 * step))
    console.print(bar.make_tasks_table(bar.tasks))
    return out.getvalue().rstrip("\n")


def test_the_training_bar_keeps_steps_and_eta_at_80_columns():
    line = _render(80, "resnet50 official seed 0 (a long description that cannot fit)")
    assert len(line) <= 80 and "\n" not in line
    assert "1234/49360" in line and "loss 0.1234" in line and "val 0.512" in line
    assert re.search(r"0:06:\d\d", line), line  # the ETA, not "-:--:--" or an ellipsis
    assert "resnet50" in line and "…" in line  # the description is what gets cut
    wide = _render(160, "resnet50 official seed 0")
    assert "resnet50 official seed 0" in wide and "1234/49360" in wide


def test_summary_numbers_are_rounded():
    assert format_number(0.9056456827132193) == "0.906" and format_number(2) == "2.000"
    assert format_number(float("nan")) == "n/a" and format_number(None) == "n/a"


def test_the_preprocess_summary_prints_as_a_sentence_not_a_repr():
    from pathlib import Path

    from lungpipe.features.preprocess import PreprocessSummary

    text = str(PreprocessSummary(Path("data/features/small"), "small", {"train": 4142, "test": 2756}, 920, 398, 64,
                                 19967.123, 41.234567))
    assert "PreprocessSummary(" not in text and "41.234567" not in text
    assert "6898 cycles (train 4142, test 2756) from 920 recordings" in text
    assert "19967.123 s of audio" in text and "took 41.235 s" in text  # rounded to 3 decimals
