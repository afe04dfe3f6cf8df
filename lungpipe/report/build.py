"""``build_report``: the pipeline outputs (metrics/, models/, tuned/) → a report folder
(``index.html``, ``summary.md``, ``summary.json`` and PNG figures), written into a temporary
sibling folder and renamed into place, so a reader never sees half a report and a failed build
leaves the previous one intact. Also writes the DVC overlay plot of validation curves."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from lungpipe.report import figures
from lungpipe.report.outputs import collect
from lungpipe.report.render import ReportData, render_html, render_markdown, summary_json
from lungpipe.util import atomic

HTML_NAME = "index.html"
MARKDOWN_NAME = "summary.md"
JSON_NAME = "summary.json"
OVERLAY_CSV = Path("plots") / "validation_curves.csv"


def collect_report(root: Path, out_dir: Path, architectures: list[str] | None = None) -> ReportData:
    """Read the outputs and draw every figure into ``out_dir``; returns what the page shows."""
    archs = collect(root, architectures)
    data = ReportData(root=str(root), archs=archs)
    bars = figures.score_bars(archs, out_dir / "score_bars.png")
    data.score_bars = bars.name if bars else None
    overlay = figures.overlay_figure(archs, out_dir / "validation_curves.png")
    data.overlay = overlay.name if overlay else None
    for a in archs:
        base = figures.slug(a.architecture)
        data.confusion[a.architecture] = figures.confusion_figure(a, out_dir / f"confusion-{base}.png").name
        curves = figures.curves_figure(a, out_dir / f"curves-{base}.png")
        if curves is not None:
            data.curves[a.architecture] = curves.name
    return data


def build_report(out: str | os.PathLike, *, root: str | os.PathLike = ".", architectures: list[str] | None = None,
                 overlay_csv: str | os.PathLike | None = None) -> ReportData:
    """Write the report of the pipeline outputs under ``root`` into the folder ``out`` (replaced as
    a whole) and, when ``overlay_csv`` is given, the validation-curve overlay table there.

    Raises :class:`~lungpipe.report.outputs.NoResultsError` (nothing written) when there is
    nothing to report.
    """
    out, root = Path(out).resolve(), Path(root).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        data = collect_report(root, staging, architectures)
        atomic.write_text(staging / HTML_NAME, render_html(data))
        atomic.write_text(staging / MARKDOWN_NAME, render_markdown(data))
        atomic.write_text(staging / JSON_NAME, summary_json(data))
        if overlay_csv is not None:
            figures.write_overlay_csv(data.archs, Path(overlay_csv))
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return data


def replace_dir(staging: Path, target: Path) -> None:
    """Put the finished ``staging`` folder at ``target``: the old folder is renamed aside, the new
    one renamed in, then the old one removed (``target`` is never half-written)."""
    atomic.make_readable(staging)  # mkdtemp and mkstemp make private files; a report is meant to be read
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            with contextlib.suppress(OSError):
                os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
