"""`lungpipe report`: the architecture comparison page from the MLflow runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lungpipe.errors import print_error


def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder (replaced as a whole).")] = Path("report"),
    experiment: Annotated[str | None, typer.Option(
        "--experiment", "-e", help="MLflow experiment (lungpipe-<data.source>); default: the lungpipe "
                                   "experiment with the most recent finished run.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", help="MLflow store; default MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db.")]
        = None,
) -> None:
    """Compare every architecture's latest runs: an HTML page with a metrics table (mean ± sd over
    seeds/folds, bootstrap CIs, best marked), score bars, confusion matrices, training curves and
    Optuna histories, plus summary.md for CI."""
    from rich.console import Console

    from lungpipe.errors import LungpipeError
    from lungpipe.report import NoRunsError, build_report
    from lungpipe.report.build import HTML_NAME, MARKDOWN_NAME
    from lungpipe.report.render import ci_text, value_text
    from lungpipe.tracking import resolve_tracking_uri

    uri = tracking_uri or resolve_tracking_uri(Path.cwd())
    err = Console(stderr=True)
    try:
        data = build_report(out, tracking_uri=uri, experiment=experiment)
    except NoRunsError as exc:
        err.print("[yellow]nothing to report:[/yellow]", escape(str(exc)), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except LungpipeError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None

    from rich.table import Table

    ms = data.metric_set
    table = Table(title=f"{data.experiment}: test metrics (%)", title_justify="left")
    table.add_column("architecture")
    for _, label in ms.columns:
        table.add_column(label, justify="right")
    table.add_column(f"{ms.label(ms.headline)} 95% CI", justify="right")
    table.add_column("runs", justify="right")
    for s in data.summaries:
        name = f"[bold green]{s.architecture} ★[/]" if s.best else s.architecture
        table.add_row(name, *(value_text(s.metrics[k]) for k in ms.keys), ci_text(s.metrics[ms.headline]),
                      str(len(s.runs)))
    console = Console()
    console.print(table)
    console.print(f"report written to {out / HTML_NAME} (summary: {out / MARKDOWN_NAME})", highlight=False)
