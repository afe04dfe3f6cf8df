"""`lungpipe ci …`: the steps of the retrain workflow (.github/workflows/retrain.yml)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Continuous-integration steps: DVC pull, metric/param diff summaries.",
                  no_args_is_help=True)


@app.command("summary")
def summary(
    base: Annotated[str, typer.Option(
        help="Git revision to compare against; 'auto' picks the PR base branch, the commit before a "
             "push, else origin/main.")] = "auto",
    report_md: Annotated[Path | None, typer.Option(
        "--report", help="Append this Markdown (the report's summary.md).")] = Path("report/summary.md"),
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Also write the Markdown to this file (e.g. the body of a PR comment).")] = None,
    step_summary: Annotated[Path | None, typer.Option(
        "--step-summary", envvar="GITHUB_STEP_SUMMARY",
        help="Append to this file (default $GITHUB_STEP_SUMMARY).")] = None,
) -> None:
    """`dvc metrics diff` + `dvc params diff` against the base as Markdown, plus the report table."""
    from lungpipe.ci import build_summary, resolve_base, write_step_summary
    from lungpipe.util import atomic

    rev = resolve_base() if base == "auto" else base
    text = build_summary(rev, report_md=report_md)
    if out is not None:
        atomic.write_text(out, text)
    if step_summary is not None:
        write_step_summary(text, step_summary)
    typer.echo(text)


@app.command("pull")
def pull() -> None:
    """`dvc pull` when a DVC remote is configured; otherwise say so and do nothing."""
    from lungpipe.ci import pull_if_remote

    try:
        result = pull_if_remote()
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if result is None:
        typer.echo("no DVC remote configured: nothing to pull; `dvc repro` builds everything from scratch")
        return
    typer.echo(result.stdout, nl=False)
    if result.returncode != 0:
        typer.echo(result.stderr, err=True, nl=False)
        raise typer.Exit(result.returncode)


@app.command("base")
def base() -> None:
    """Print the git revision `ci summary --base auto` would compare against."""
    from lungpipe.ci import resolve_base

    typer.echo(resolve_base(os.environ))
