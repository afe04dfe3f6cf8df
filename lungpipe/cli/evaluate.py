"""`lungpipe evaluate`: metrics, patient-bootstrap intervals and a confusion matrix from a
predictions CSV (see :mod:`lungpipe.evaluation.predictions` for the format)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from lungpipe.util.errors import print_error


class Task(str, Enum):
    icbhi = "icbhi"
    multiclass = "multiclass"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _interval(metrics: dict, key: str) -> str:
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    if f"{key}_ci_low" not in metrics:
        return ""
    return f"[{_fmt(low)}, {_fmt(high)}]"


def _metrics_table(metrics: dict, level: float | None):
    from rich.table import Table

    from lungpipe.evaluation.metrics import class_key

    title = "Metrics (%)" + (f", {100 * level:g}% bootstrap CI over patients" if level else "")
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if level:
        table.add_column("CI", justify="right")

    def add(label: str, key: str, end_section: bool = False) -> None:
        cells = [label, _fmt(metrics[key])]
        if level:
            cells.append(_interval(metrics, key))
        table.add_row(*cells, end_section=end_section)

    if metrics["task"] == "icbhi":
        add("Specificity (Sp)", "sp")
        add("Sensitivity (Se)", "se")
        add("Score", "score", end_section=True)
        add("Se, 2-class", "se_2class")
        add("Score, 2-class", "score_2class", end_section=True)
    add("Accuracy", "accuracy")
    add("Balanced accuracy", "balanced_accuracy")
    add("Macro-F1", "macro_f1", end_section=True)
    names = metrics["class_names"]
    for i, name in enumerate(names):
        add(f"Recall {name}", f"recall_{class_key(name)}", end_section=i == len(names) - 1)
    for name in names:
        add(f"Precision {name}", f"precision_{class_key(name)}")
    return table


def _confusion_table(metrics: dict):
    from rich.table import Table

    names = metrics["class_names"]
    table = Table(title="Confusion matrix (rows true, columns predicted)", title_justify="left")
    table.add_column("true \\ pred")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right", style="dim")
    for name, row in zip(names, metrics["confusion"]):
        table.add_row(name, *(str(c) for c in row), str(sum(row)))
    return table


def evaluate(
    predictions: Annotated[Path, typer.Argument(
        help="Predictions CSV: recording, cycle, patient, label, pred, prob_0..prob_{K-1}.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the metrics here as JSON (fractions in [0, 1]).")] = None,
    task: Annotated[Task, typer.Option(
        help="icbhi: Sp/Se/Score on normal, crackle, wheeze, both; multiclass: any K classes.")]
        = Task.icbhi,
    n_boot: Annotated[int, typer.Option(
        "--n-boot", min=0, help="Bootstrap resamples over patients for the intervals (0: none).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    ci_level: Annotated[float, typer.Option(
        "--ci-level", min=0.5, max=0.999, help="Coverage of the intervals.")] = 0.95,
    confusion_png: Annotated[Path | None, typer.Option(
        "--confusion-png", help="Also draw the confusion matrix to this PNG.")] = None,
    class_names: Annotated[str | None, typer.Option(
        "--class-names", help="Comma-separated class names in index order (default: ICBHI's "
                              "normal,crackle,wheeze,both; 0..K-1 for multiclass).")] = None,
) -> None:
    """Score a predictions CSV: Sp/Se/Score (ICBHI) or accuracy/macro-F1, with patient-bootstrap
    intervals, a confusion matrix, and optionally JSON and PNG outputs."""
    from rich.console import Console

    from lungpipe.evaluation.metrics import compute_metrics
    from lungpipe.evaluation.predictions import read_predictions
    from lungpipe.util.atomic import write_json
    from lungpipe.util.errors import DataError

    names = [n.strip() for n in class_names.split(",")] if class_names else None
    try:
        preds = read_predictions(predictions)
        if not preds.has_labels:
            unlabelled = (~preds.labelled).nonzero()[0]
            raise DataError(f"{predictions}: {unlabelled.size} of {len(preds)} rows have no label (first at "
                            f"line {int(unlabelled[0]) + 2}); evaluation needs the true class of every row")
        try:
            metrics = compute_metrics(preds.labels, preds.preds, task=task.value,
                                      num_classes=preds.num_classes, class_names=names,
                                      patients=preds.patients, n_resamples=n_boot, seed=seed,
                                      ci_level=ci_level)
        except ValueError as exc:
            raise DataError(f"{predictions}: {exc}") from None
    except DataError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None

    console = Console()
    console.print(f"[bold]{predictions}[/bold]: {metrics['n_samples']} rows, {metrics['n_patients']} "
                  f"patients, {metrics['num_classes']} classes, task {task.value}", highlight=False)
    console.print(_metrics_table(metrics, ci_level if n_boot > 0 else None))
    console.print(_confusion_table(metrics))

    if out is not None:
        write_json(out, metrics)
        console.print(f"metrics written to {out}", highlight=False)
    if confusion_png is not None:
        from lungpipe.evaluation.plots import plot_confusion

        plot_confusion(metrics["confusion"], metrics["class_names"], confusion_png,
                       title=f"{predictions.stem} ({task.value})")
        console.print(f"confusion matrix drawn to {confusion_png}", highlight=False)
