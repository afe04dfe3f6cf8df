"""The ``lungpipe`` command line (typer).

Sub-command groups live in their own modules (one job each) and are mounted here:
``lungpipe data …``, ``lungpipe models …``, ``lungpipe bench …``, ``lungpipe tune …``, and the
top-level commands ``lungpipe evaluate``, ``lungpipe report``, ``lungpipe predict``.
Heavy imports (torch, mlflow) happen inside the commands so ``lungpipe --help`` stays fast.
"""

from __future__ import annotations

import typer

from lungpipe.cli import bench, ci, data, evaluate, models, predict, report, tune
from lungpipe.util.errors import report_errors

app = typer.Typer(
    name="lungpipe",
    help="Respiratory-sound classification pipeline (ICBHI 2017, ESC-50, diagnosis datasets).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.add_typer(bench.app, name="bench")
app.add_typer(tune.app, name="tune")
app.add_typer(ci.app, name="ci")
app.command("evaluate")(evaluate.evaluate)
app.command("report")(report.report)
app.command("predict")(predict.predict)


@report_errors
def main() -> None:
    """Entry point of ``lungpipe``: a failure prints ``error: <message>`` and exits 1 (no traceback
    unless LUNGPIPE_DEBUG=1)."""
    app(standalone_mode=True)
