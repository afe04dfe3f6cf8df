"""`lungpipe report`: the architecture comparison page from the pipeline outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lungpipe.util.errors import print_error


def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder (replaced as a whole).")] = Path("report"),
    root: Annotated[Path, typer.Option(
        "--root", help="Repository whose metrics/, models/ and tuned/ are reported.")] = Path("."),
) -> None:
    """Compare every architecture from the pipeline outputs (the numbers `dvc metrics show` prints):
    an HTML page with pooled metrics and bootstrap CIs, mean ± sd over seeds, hyperparameters, runs
    with MLflow links, confusion matrices and curves, plus summary.md for CI."""
    from rich.console import Console
    from rich.table import Table

    from lungpipe.report import NoResultsError, build_report
    from lungpipe.report.build import HTML_NAME, MARKDOWN_NAME
    from lungpipe.report.figures import metric_label
    from lungpipe.report.render import pooled_text, spread_text
    from lungpipe.util.errors import LungpipeError

    err = Console(stderr=True)
    try:
        data = build_report(out, root=root)
    except NoResultsError as exc:
        err.print("[yellow]nothing to report:[/yellow]", escape(str(exc)), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except LungpipeError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None

    table = Table(title="test metrics (%): pooled [95% CI] and mean ± sd", title_justify="left")
    table.add_column("architecture")
    for key in data.columns:
        table.add_column(f"{metric_label(key)} pooled", justify="right")
        table.add_column(f"{metric_label(key)} mean ± sd", justify="right")
    table.add_column("runs", justify="right")
    for a in data.archs:
        name = f"[bold green]{a.display_name} ★[/]" if a.best else a.display_name
        cells = [c for key in data.columns for c in (pooled_text(a, key), spread_text(a, key))]
        table.add_row(name, *cells, str(a.details["n_runs"]))
    console = Console()
    console.print(table)
    console.print(f"report written to {out / HTML_NAME} (summary: {out / MARKDOWN_NAME})", highlight=False)
