"""The progress display of a training run: one bar over all steps, the running loss and the
validation metric. It is fed every ``log_every`` steps, so showing it costs no per-step sync."""

from __future__ import annotations

from typing import Self

from rich.progress import TextColumn

from lungpipe.util.progress import make_progress


class FitDisplay:
    def __init__(self, description: str, total_steps: int, done_steps: int = 0, enabled: bool | None = None):
        self._bar = make_progress(TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("val {task.fields[val]}"),
                                  disable=(not enabled) if enabled is not None else None)
        self._description, self._total, self._done = description, total_steps, done_steps

    def __enter__(self) -> Self:
        self._bar.__enter__()
        self._task = self._bar.add_task(self._description, total=self._total, loss=float("nan"), val="-")
        self._bar.update(self._task, completed=self._done)
        return self

    def __exit__(self, *exc) -> bool:
        self._bar.__exit__(*exc)
        return False

    def steps(self, n: int, loss: float) -> None:
        self._bar.update(self._task, advance=n, loss=loss)

    def validation(self, text: str) -> None:
        self._bar.update(self._task, val=text)
