"""`lungpipe predict`: classify the cycles (or fixed windows) of one recording."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lungpipe.util.errors import print_error


def predict(
    wav: Annotated[Path, typer.Argument(help="The recording (WAV/FLAC, any sample rate).")],
    model: Annotated[str, typer.Option(
        "--model", "-m", help="model.pt written by training, the folder holding it "
                              "(models/<arch>/<fold>/seed<k>), an MLflow run id, or a logged or "
                              "registered model: models:/<name>@<alias>, models:/<name>/<version>, "
                              "models:/<model id>. Model files are read as tensors and plain data only.")],
    annotations: Annotated[Path | None, typer.Option(
        "--annotations", "-a", help="ICBHI annotation file (start end crackle wheeze per line): "
                                    "classify its cycles and fill the label column.")] = None,
    window_s: Annotated[float, typer.Option(
        "--window-s", min=0.05, help="Without annotations: classify consecutive windows of this "
                                     "length (seconds).")] = 4.0,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the predictions CSV here (recording, cycle, patient, label, pred, "
                            "prob_0..).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", help="MLflow store for a run id or models:/ URI (default MLFLOW_TRACKING_URI, else "
                               "sqlite:///<cwd>/mlflow.db).")] = None,
) -> None:
    """Predict the class of every cycle of a recording and print a per-cycle table."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from lungpipe.inference.predict import load_predictor, predict_recording, write_recording_predictions
    from lungpipe.util.errors import LungpipeError

    try:
        predictor = load_predictor(model, tracking_uri)
        result = predict_recording(predictor, wav, annotations=annotations, window_s=window_s)
        written = write_recording_predictions(result, out) if out is not None else None
    except (LungpipeError, ValueError) as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None

    names = result.class_names
    what = "annotated cycles" if annotations is not None else f"{window_s:g} s windows"
    table = Table(title=f"{result.recording}: {len(result.segments)} {what}, model {predictor.arch} "
                        f"({predictor.source})", title_justify="left")
    table.add_column("cycle", justify="right")
    table.add_column("start–end (s)", justify="right")
    table.add_column("predicted")
    if annotations is not None:
        table.add_column("true")
    for name in names:
        table.add_column(f"p({name})", justify="right")
    for i, (segment, row) in enumerate(zip(result.segments, result.probs)):
        pred = int(row.argmax())
        cells = [str(i), f"{segment.start_s:.2f}–{segment.end_s:.2f}", f"[bold]{names[pred]}[/]"]
        if annotations is not None:
            cells.append("—" if segment.label is None else names[segment.label])
        cells += [f"{p:.3f}" for p in row]
        table.add_row(*cells)
    console = Console()
    console.print(table)
    if written is not None:
        console.print(f"predictions written to {written}", highlight=False)
