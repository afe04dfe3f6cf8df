"""The comparison report, built from the pipeline's own outputs (metrics/, models/, tuned/):
a static HTML page (plus ``summary.md`` for CI and ``summary.json``) with the metrics table,
per-architecture hyperparameters, runs with their MLflow links, confusion matrices and curves.

    from lungpipe.report import build_report
    build_report("report", root=".")
"""

from lungpipe.report.build import build_report
from lungpipe.report.outputs import NoResultsError

__all__ = ["NoResultsError", "build_report"]
