"""`lungpipe data …` commands: cycle manifest, dataset sources, class counts, synthetic datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lungpipe.util.errors import print_error

app = typer.Typer(help="Data commands: dataset sources, manifests and class counts, synthetic datasets.",
                  no_args_is_help=True)


def _fail(exc: Exception) -> None:
    print_error(str(exc))
    raise typer.Exit(code=1)


@app.command("manifest")
def manifest(
    raw_dir: Annotated[Path, typer.Argument(help="Folder the ICBHI archive unpacked into (.wav + .txt).")],
    out_csv: Annotated[Path, typer.Argument(help="Manifest CSV to write (one row per cycle).")],
    split_file: Annotated[Path | None, typer.Option(
        "--split-file", help="Split file (default: ICBHI_challenge_train_test.txt under RAW_DIR).")] = None,
    skip_bad: Annotated[bool, typer.Option(
        "--skip-bad", help="Leave out bad recordings instead of failing.")] = False,
    rejects: Annotated[Path | None, typer.Option(
        "--rejects", help="CSV listing the left-out items and why.")] = None,
    end_tolerance_s: Annotated[float, typer.Option(
        "--end-tolerance", help="Seconds a cycle may end after its recording.")] = 0.05,
    strict_cycles: Annotated[bool, typer.Option(
        "--strict-cycles", help="Duplicated or overlapping cycles are errors (default: a warning).")] = False,
) -> None:
    """Read RAW_DIR into a cycle manifest (written atomically to OUT_CSV) and print a summary."""
    from rich.console import Console
    from rich.table import Table

    from lungpipe.data.icbhi import build_manifest, summarize_manifest
    from lungpipe.labels import ICBHI_CLASS_NAMES
    from lungpipe.util.atomic import write_csv
    from lungpipe.util.errors import DataError

    try:
        result = build_manifest(raw_dir, split_file, skip_bad=skip_bad, end_tolerance_s=end_tolerance_s,
                                strict_cycles=strict_cycles)
    except DataError as exc:
        _fail(exc)
    write_csv(out_csv, result.cycles)
    if rejects is not None:
        write_csv(rejects, result.rejects)
    summary = summarize_manifest(result.cycles)
    console = Console()
    table = Table(title=f"{out_csv}: {summary['recordings']} recordings, {summary['patients']} patients, "
                        f"{summary['cycles']} cycles")
    table.add_column("split")
    table.add_column("recordings", justify="right")
    table.add_column("cycles", justify="right")
    for name in ICBHI_CLASS_NAMES:
        table.add_column(name, justify="right")
    for split, per_label in summary["cycles_per_label"].items():
        table.add_row(split, str(summary["recordings_per_split"][split]),
                      str(summary["cycles_per_split"][split]), *(str(per_label[n]) for n in ICBHI_CLASS_NAMES))
    console.print(table)
    if len(result.rejects):
        items = result.rejects["item"].nunique()
        where = f" (listed in {rejects})" if rejects is not None else " (use --rejects FILE to list them)"
        console.print(f"[yellow]skipped {items} item(s) with {len(result.rejects)} problem(s){where}[/]")


@app.command("synth")
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the dataset into (raw ICBHI layout).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed → identical files).")] = 0,
    n_patients: Annotated[int | None, typer.Option("--n-patients", help="Number of patients.")] = None,
    from_annotations: Annotated[Path | None, typer.Option(
        "--from-annotations", help="Render audio for these annotation files instead.")] = None,
    split_file: Annotated[Path | None, typer.Option(
        "--split-file", help="Split file for --from-annotations.")] = None,
    filename_differences: Annotated[Path | None, typer.Option(
        "--filename-differences", help="Archive names to apply with --from-annotations.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes rendering audio.")] = 1,
) -> None:
    """Write a synthetic dataset in the raw ICBHI layout (or audio for given annotations)."""
    import time

    from rich.console import Console

    from lungpipe.data.synth import SynthConfig, render_from_annotations, write_synthetic_icbhi
    from lungpipe.util.errors import DataError

    started = time.perf_counter()
    try:
        if from_annotations is not None:
            if split_file is None:
                raise DataError("--from-annotations needs --split-file (the split file naming them)")
            summary = render_from_annotations(from_annotations, out_dir, split_file, seed=seed,
                                              filename_differences=filename_differences, workers=workers)
        else:
            cfg = SynthConfig(seed=seed)
            if n_patients is not None:
                cfg.n_patients = n_patients
            summary = write_synthetic_icbhi(out_dir, cfg, workers=workers)
    except DataError as exc:
        _fail(exc)
    Console().print(
        f"wrote {summary.n_recordings} recordings ({summary.n_patients} patients, {summary.n_cycles} "
        f"cycles, {summary.total_duration_s / 3600:.2f} h) to {out_dir} in "
        f"{time.perf_counter() - started:.1f} s\n"
        f"  cycles per split {summary.cycles_per_split}, per label {summary.cycles_per_label}\n"
        f"  sample rates {summary.sample_rates}, subtypes {summary.subtypes}, renamed {summary.renamed}",
        highlight=False,
    )


@app.command("sources")
def sources() -> None:
    """List the dataset sources `data.source` accepts: task, metric, classes, description."""
    from rich.console import Console
    from rich.table import Table

    from lungpipe.data.sources import get_source, source_names

    table = Table(title="dataset sources (params.yaml data.source; options in data.<section>)")
    for column in ("name", "section", "task", "metric", "classes"):
        table.add_column(column, justify="right" if column == "classes" else "left", no_wrap=True)
    table.add_column("description", ratio=1)
    for name in source_names():
        source = get_source(name)
        table.add_row(name, f"data.{source.section}", source.task, source.metric_task,
                      str(len(source.class_names)), source.description)
    Console().print(table)


@app.command("class-counts")
def class_counts(
    manifest_csv: Annotated[Path, typer.Argument(help="A manifest CSV (e.g. data/manifest.csv).")],
    unit: Annotated[str, typer.Option("--unit", help="items (manifest rows) or patients.")] = "items",
) -> None:
    """Print the split (or fold) × class table of a manifest."""
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from lungpipe.data.class_counts import UNITS, class_count_table

    if unit not in UNITS:
        _fail(ValueError(f"--unit must be one of {', '.join(UNITS)}, got {unit!r}"))
    try:
        manifest = pd.read_csv(manifest_csv)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        _fail(ValueError(f"{manifest_csv}: cannot read the manifest ({exc})"))
    missing = [c for c in ("label", "split", "patient") if c not in manifest.columns]
    if missing:
        _fail(ValueError(f"{manifest_csv}: not a manifest, missing column(s) {missing}"))
    counts = class_count_table(manifest, unit=unit)
    table = Table(title=f"{manifest_csv}: {unit} per class")
    table.add_column("class")
    for column in counts.columns:
        table.add_column(str(column), justify="right")
    for name, row in counts.iterrows():
        table.add_row(str(name), *(str(v) for v in row.tolist()), end_section=name == counts.index[-2])
    Console().print(table)


@app.command("synth-esc50")
def synth_esc50(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write (meta/esc50.csv + audio/*.wav).")],
    n_classes: Annotated[int, typer.Option("--n-classes", min=1, help="Classes (ESC-50 categories).")] = 10,
    n_per_class: Annotated[int, typer.Option(
        "--n-per-class", min=1, help="Clips per class (2 takes per source clip; >= 2 × folds fills every fold).")] = 10,
    n_folds: Annotated[int, typer.Option("--n-folds", min=1, help="Folds.")] = 5,
    sample_rate: Annotated[int, typer.Option("--sample-rate", min=1000, help="Hz.")] = 16000,
    duration_s: Annotated[float, typer.Option("--duration", min=0.1, help="Seconds per clip.")] = 5.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Write a synthetic ESC-50-shaped folder (class-specific tones, ESC-50 file names)."""
    from rich.console import Console

    from lungpipe.data.synth_datasets import write_synthetic_esc50

    write_synthetic_esc50(out_dir, n_per_class=n_per_class, n_classes=n_classes, n_folds=n_folds,
                          sample_rate=sample_rate, duration_s=duration_s, seed=seed)
    console = Console()
    console.print(f"wrote {n_classes * n_per_class} clips ({n_classes} classes, {n_folds} folds) to {out_dir}",
                  highlight=False)
    if n_per_class < 2 * n_folds:
        console.print(f"[yellow]note: {n_per_class} clips per class fill only "
                      f"{min(n_folds, (n_per_class + 1) // 2)} of {n_folds} folds (2 takes per source clip); "
                      f"use --n-per-class {2 * n_folds} or more for cross-validation[/]")


def _counts_option(text: str | None, option: str) -> dict[str, int] | None:
    """``"Healthy=6,COPD=6"`` → {"Healthy": 6, "COPD": 6}; a malformed entry is a BadParameter."""
    if not text:
        return None
    out: dict[str, int] = {}
    for part in text.split(","):
        name, sep, number = part.rpartition("=")
        if not sep or not name.strip() or not number.strip().isdigit():
            raise typer.BadParameter(f"{part!r}: expected DIAGNOSIS=COUNT", param_hint=option)
        out[name.strip()] = int(number)
    return out


@app.command("synth-diagnosis")
def synth_diagnosis(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write (icbhi/ + kauh/Audio Files/).")],
    icbhi_patients: Annotated[str | None, typer.Option(
        "--icbhi-patients", help="Subjects per raw ICBHI diagnosis, e.g. 'Healthy=6,COPD=6,Asthma=2,URTI=2'.")] = None,
    kauh_patients: Annotated[str | None, typer.Option(
        "--kauh-patients", help="Subjects per raw KAUH diagnosis, e.g. 'N=4,Asthma=4,heart failure=2'.")] = None,
    recordings_per_patient: Annotated[int, typer.Option("--recordings-per-patient", min=1)] = 2,
    sample_rate: Annotated[int, typer.Option("--sample-rate", min=1000, help="Hz.")] = 4000,
    duration_s: Annotated[float, typer.Option("--duration", min=0.1, help="Seconds per recording.")] = 2.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Write a synthetic ICBHI + KAUH-shaped folder for the diagnosis task (`data.source: diagnosis`)."""
    from rich.console import Console

    from lungpipe.data.synth_datasets import write_synthetic_diagnosis

    icbhi = _counts_option(icbhi_patients, "--icbhi-patients")
    kauh = _counts_option(kauh_patients, "--kauh-patients")
    write_synthetic_diagnosis(out_dir, icbhi_patients=icbhi, kauh_patients=kauh,
                              recordings_per_patient=recordings_per_patient, sample_rate=sample_rate,
                              duration_s=duration_s, seed=seed)
    n = sum(1 for _ in Path(out_dir).rglob("*.wav"))
    Console().print(f"wrote {n} recordings to {out_dir} (ICBHI-named in icbhi/, KAUH-named in kauh/)",
                    highlight=False)
