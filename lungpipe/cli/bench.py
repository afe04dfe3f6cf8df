"""`lungpipe bench …` commands: time the pipeline's steps on real or synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lungpipe.util.errors import print_error

app = typer.Typer(help="Benchmarks of pipeline steps (speed, memory).", no_args_is_help=True)


def _peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory (MB) of this process and of its largest finished child (Linux: KB)."""
    import resource
    import sys

    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale
    return own, child


def _cpu_seconds() -> float:
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@app.command("preprocess")
def preprocess_bench(
    raw_dir: Annotated[Path, typer.Argument(
        help="Raw folder (ICBHI layout, or the folder the manifest's paths are relative to).")],
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", "-m", help="Cycle manifest CSV; built from RAW_DIR when omitted.")] = None,
    split_file: Annotated[Path | None, typer.Option(
        "--split-file", help="ICBHI split file when building the manifest.")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes.")] = 2,
    frontend: Annotated[str, typer.Option("--frontend", help="kaldi_fbank or logmel.")] = "kaldi_fbank",
    n_mels: Annotated[int, typer.Option("--n-mels", help="Mel bins.")] = 128,
    max_len_s: Annotated[float, typer.Option("--max-len-s", help="Fixed cycle length (s).")] = 8.0,
    norm: Annotated[str, typer.Option("--norm", help="train_stats, audioset or none.")] = "train_stats",
    keep: Annotated[Path | None, typer.Option(
        "--keep", help="Write the features here and keep them (default: a temporary folder, deleted).")] = None,
) -> None:
    """Run the preprocess step over RAW_DIR and report cycles/s, wall time, audio hours and peak memory."""
    import shutil
    import tempfile
    import time

    import pandas as pd

    from lungpipe.features import CycleConfig, FrontendConfig, NormConfig, PreprocessConfig, preprocess
    from lungpipe.util.errors import DataError
    from lungpipe.util.typed_config import ConfigError

    try:
        cfg = PreprocessConfig(
            cycle=CycleConfig(max_len_s=max_len_s),
            frontend=FrontendConfig(kind=frontend, n_mels=n_mels),
            norm=NormConfig(mode=norm),
            workers=workers,
        )
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc

    try:
        started = time.perf_counter()
        if manifest is None:
            from lungpipe.data.icbhi import build_manifest  # written alongside; imported lazily

            frame = build_manifest(raw_dir, split_file).cycles
            typer.echo(f"manifest: {len(frame)} cycles built from {raw_dir} in {time.perf_counter() - started:.1f} s")
        else:
            frame = pd.read_csv(manifest)
        work = Path(tempfile.mkdtemp(prefix="lungpipe-bench-")) if keep is None else None
        out_dir = keep if keep is not None else work / "features"
        try:
            cpu0 = _cpu_seconds()
            summary = preprocess(frame, raw_dir, out_dir, cfg, progress=True)
            cpu = _cpu_seconds() - cpu0
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
    except DataError as exc:
        print_error(str(exc))
        raise typer.Exit(code=1) from exc

    own_mb, child_mb = _peak_rss_mb()
    hours = summary.audio_seconds / 3600
    typer.echo(f"frontend      {summary.frontend_key}  ({summary.n_frames} frames x {summary.n_mels} mels)")
    typer.echo(f"cycles        {summary.n_cycles} (train {summary.counts['train']}, test {summary.counts['test']}) "
               f"from {summary.n_recordings} recordings, {hours:.2f} h of audio")
    typer.echo(f"wall          {summary.wall_s:.1f} s  ->  {summary.cycles_per_s:.0f} cycles/s "
               f"({summary.audio_seconds / summary.wall_s:.0f}x real time), {workers} worker(s)")
    typer.echo(f"cpu           {cpu:.1f} s (this process + workers)")
    typer.echo(f"peak memory   {own_mb + child_mb:.0f} MB (maxrss: this process {own_mb:.0f} MB + "
               f"largest worker {child_mb:.0f} MB; all {workers} workers at once at most "
               f"{own_mb + workers * child_mb:.0f} MB)")
    if keep is not None:
        typer.echo(f"features kept in {keep}")


@app.command("train")
def bench_train(
    arch: list[str] = typer.Option(None, "--arch", help="Architecture(s); default: every registered one"),
    preset: str = typer.Option("paper", help="Registry preset (paper | small | …)"),
    batch_size: int = typer.Option(8, help="Batch size"),
    n_frames: int = typer.Option(None, help="Input frames (default: the paper recipe's, 798 = 8 s; MRINet 1024)"),
    n_mels: int = typer.Option(None, help="Input mel bins (default: the paper recipe's, 128; MRINet 64)"),
    steps: int = typer.Option(5, help="Timed training steps (after 2 warm-up steps)"),
    isolated: bool = typer.Option(True, help="Each architecture in a fresh process (per-model CPU peak memory)"),
    plain: bool = typer.Option(True, help="Also time the plain loop (per-step .item(), deep-copy averaging)"),
    loader_workers: int = typer.Option(0, help="Data-loader workers of the timed loops"),
    features: Path = typer.Option(None, help="A features folder (data/features/<f>) to time the data loader"),
    workers: int = typer.Option(2, help="Data-loader workers when timing --features"),
) -> None:
    """Training samples/s, data-wait share and peak memory per architecture: the engine's loop and a
    plain loop on the same model and batch, side by side with their ratio."""
    from lungpipe.models import model_names
    from lungpipe.training.bench import bench_loader, bench_model, bench_model_isolated, paper_input

    run = bench_model_isolated if isolated else bench_model
    typer.echo(f"training throughput ({preset} preset, batch {batch_size}, {steps} timed steps, "
               f"{loader_workers} loader workers); plain loop = per-step .item(), deep-copy averaging, no fusion")
    row = "{:<18} {:<26} {:>10} {:>11} {:>9} {:>9} {:>14} {:>17} {:>15}"
    typer.echo(row.format("architecture", "device", "input", "parameters", "engine/s", "plain/s", "engine / plain",
                          "data wait e | p", "peak MB e | p"))
    for name in arch or model_names():
        frames, mels = paper_input(name)
        frames, mels = n_frames or frames, n_mels or mels
        r = run(name, preset, batch_size, frames, mels, steps=steps, workers=loader_workers, plain=plain)
        e, p = r.engine, r.plain
        typer.echo(row.format(
            name, r.device, f"{frames}x{mels}", f"{r.parameters / 1e6:.2f} M", f"{e.samples_per_s:.1f}",
            f"{p.samples_per_s:.1f}" if p else "-", f"{r.ratio:.2f}x" if p else "-",
            f"{e.data_wait_share:.1%} | {p.data_wait_share:.1%}" if p else f"{e.data_wait_share:.1%} | -",
            f"{e.peak_memory_mb:.0f} | {p.peak_memory_mb:.0f}" if p else f"{e.peak_memory_mb:.0f} | -"))
    if features is not None:
        typer.echo(f"data loader alone ({features}, {workers} workers): "
                   f"{bench_loader(features, batch_size, workers):.0f} samples/s")
