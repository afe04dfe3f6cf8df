"""`lungpipe tune …`: join an Optuna study as an extra worker (Optuna's own distributed mode)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Hyperparameter tuning (Optuna).", no_args_is_help=True)


@app.command("worker")
def worker(
    storage: str = typer.Option(..., help="Study storage: postgresql://…, mysql://…, sqlite:///… or a journal file path"),
    study: str = typer.Option(..., help="Study name (the tune stage prints it; tuned/<arch>.yaml records it)"),
    trials: int = typer.Option(..., min=1, help="Number of trials this worker runs"),
    worker_seed: int = typer.Option(0, help="Offset of this worker's sampler seed (give each worker its own)"),
    tracking_uri: str = typer.Option(None, envvar="MLFLOW_TRACKING_URI",
                                     help="MLflow store of this worker's trial runs (default: the study creator's)"),
    heartbeat_interval: int = typer.Option(60, min=1, help="RDB storages: seconds between heartbeats; a worker "
                                           "silent for twice this is failed and its trial re-queued"),
) -> None:
    """Run TRIALS more trials of an existing study created by the tune stage."""
    from rich.console import Console

    from lungpipe.tuning import make_storage, run_worker

    result = run_worker(make_storage(storage, heartbeat_interval=heartbeat_interval), study, trials,
                        worker_seed=worker_seed, tracking_uri=tracking_uri)
    Console().print(
        f"study {result.study_name}: {result.n_complete} complete, {result.n_pruned} pruned, "
        f"{result.n_failed} failed; best {result.best_value} with {result.best_params}"
    )
