"""``build_report``: MLflow runs → a report folder (``index.html``, ``summary.md``,
``summary.json`` and PNG figures), written into a temporary sibling folder and renamed into
place, so a reader never sees half a report and a failed build leaves the previous one intact."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from lungpipe import atomic
from lungpipe.report import figures
from lungpipe.report.render import ReportData, render_html, render_markdown, summary_json
from lungpipe.report.runs import (
    NoRunsError,
    choose_metric_set,
    collect_studies,
    collect_train_runs,
    find_experiment,
    latest_per_key,
    open_client,
    redact_uri,
)
from lungpipe.report.summary import summarize_architectures

log = logging.getLogger(__name__)

HTML_NAME = "index.html"
MARKDOWN_NAME = "summary.md"
JSON_NAME = "summary.json"


def collect_report(client, experiment: str | None, tracking_uri: str, out_dir: Path) -> ReportData:
    """Read the runs and draw every figure into ``out_dir``; returns what the page shows."""
    exp = find_experiment(client, experiment)
    all_runs = collect_train_runs(client, exp.experiment_id)
    if not all_runs:
        raise NoRunsError(
            f"experiment {exp.name!r} at {redact_uri(tracking_uri)} has no finished training runs (runs "
            "tagged 'architecture', not Optuna trials). Train first: `dvc repro` or "
            "`python stages/train.py <arch>`."
        )
    runs = latest_per_key(all_runs)
    metric_set = choose_metric_set(runs)
    summaries = summarize_architectures(runs, metric_set)
    data = ReportData(experiment=exp.name, tracking_uri=redact_uri(tracking_uri), metric_set=metric_set,
                      summaries=summaries, n_runs_seen=len(all_runs))
    bars = figures.score_bars(summaries, metric_set, out_dir / "score_bars.png")
    data.score_bars = bars.name if bars else None
    for s in summaries:
        base = figures.slug(s.architecture)
        cm = figures.confusion_figure(client, s, out_dir / f"confusion-{base}.png")
        if cm is not None:
            data.confusion[s.architecture] = cm.name
        curves = figures.curves_figure(client, s, metric_set, out_dir / f"curves-{base}.png")
        if curves is not None:
            data.curves[s.architecture] = curves.name
    data.studies = collect_studies(client, exp.experiment_id)
    for study in data.studies:
        data.study_images[study.name] = [p.name for p in figures.study_figures(client, study, out_dir)]
    return data


def build_report(out: str | os.PathLike, *, tracking_uri: str, experiment: str | None = None) -> ReportData:
    """Write the report for ``experiment`` (default: the lungpipe experiment with the latest run)
    of the store at ``tracking_uri`` into the folder ``out`` (replaced as a whole).

    Raises :class:`NoRunsError` (nothing written) when there is nothing to report.
    """
    out = Path(out).resolve()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep CI logs readable
    client = open_client(tracking_uri)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        data = collect_report(client, experiment, tracking_uri, staging)
        atomic.write_text(staging / HTML_NAME, render_html(data))
        atomic.write_text(staging / MARKDOWN_NAME, render_markdown(data))
        atomic.write_text(staging / JSON_NAME, summary_json(data))
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
