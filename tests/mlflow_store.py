"""Test helper: a small MLflow store with training runs and an Optuna study, made with the MLflow
API exactly as the train and tune stages log them (no training needed)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow.entities import Metric
from servers import free_port, stop_process_group, wait_for_http

from lungpipe.evaluation.plots import plot_confusion
from lungpipe.evaluation.predictions import write_predictions

EXPERIMENT = "lungpipe-synth"
CLASSES = ["normal", "crackle", "wheeze", "both"]
T0 = 1_700_000_000_000  # ms
_TEMPLATE: list[Path] = []


def fresh_db(path: Path) -> str:
    """A new, empty MLflow SQLite store at ``path``; returns its URI. Creating the tables takes
    MLflow several seconds, so they are created once per test session and copied."""
    if not _TEMPLATE:
        from mlflow import MlflowClient

        template = Path(tempfile.mkdtemp(prefix="lungpipe-mlflow-template-")) / "mlflow.db"
        atexit.register(shutil.rmtree, template.parent, True)
        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
        _TEMPLATE.append(template)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATE[0], path)
    return f"sqlite:///{path}"


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log_path: Path, *, workers: int = 1,
                  timeout: float = 180) -> Iterator[str]:
    """A real ``mlflow server`` (``backend_uri`` store, artifacts proxied into ``artifacts``) on a
    free local port; yields its URL once /health answers; stops its whole process group after."""
    port = free_port()
    log = open(log_path, "w")  # noqa: SIM115 - open for the server's whole life
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts), "--workers", str(workers)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=log_path.parent,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no background job workers
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", proc, log, timeout=timeout, what="mlflow server did not become healthy")
        yield uri
    finally:
        stop_process_group(proc, grace=5)
        log.close()


@dataclass
class Store:
    uri: str
    root: Path
    expected_confusion: dict[str, np.ndarray] = field(default_factory=dict)
    run_ids: dict[str, list[str]] = field(default_factory=dict)


def _predictions(path: Path, cm: np.ndarray, patient_offset: int = 0) -> Path:
    """A predictions CSV whose confusion matrix is exactly ``cm``."""
    labels, preds = [], []
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            labels += [i] * int(cm[i, j])
            preds += [j] * int(cm[i, j])
    n = len(labels)
    probs = np.full((n, cm.shape[1]), 0.1 / (cm.shape[1] - 1))
    probs[np.arange(n), preds] = 0.9
    return write_predictions(path, [f"rec{i // 3}" for i in range(n)], [i % 3 for i in range(n)],
                             [f"p{patient_offset + i % 5}" for i in range(n)], labels, probs)


def _train_run(client, exp_id: str, tmp: Path, arch: str, seed: int, start: int, score: float, *,
               status: str = "FINISHED", confusion: np.ndarray | None = None, draw_png: bool = True,
               curves: tuple[list[float], list[float]] | None = None) -> str:
    run = client.create_run(exp_id, start_time=start, run_name=f"{arch}-official-seed{seed}", tags={
        "architecture": arch, "dataset": "icbhi_synth", "fold": "official", "seed": str(seed), "device": "cpu",
        "git_commit": "0123456789abcdef", "dvc_stage": f"train@{arch}-official", "selection": "validation"})
    rid = run.info.run_id
    metrics = []
    for key, value in {"sp": score + 0.1, "se": score - 0.1, "score": score}.items():
        metrics += [Metric(f"test_{key}", value, start, 0), Metric(f"test_{key}_ci_low", value - 0.05, start, 0),
                    Metric(f"test_{key}_ci_high", value + 0.04, start, 0)]
    losses, vals = curves or ([1.2, 0.9, 0.7], [0.4, 0.5, 0.55])
    for epoch, (loss, val) in enumerate(zip(losses, vals)):
        metrics += [Metric("train_loss", loss, start, epoch), Metric("val_score", val, start, epoch)]
    client.log_batch(rid, metrics=metrics)
    out = tmp / rid
    out.mkdir(parents=True)
    if confusion is not None:
        client.log_artifact(rid, str(_predictions(out / "predictions.csv", confusion, seed * 10)))
        if draw_png:
            client.log_artifact(rid, str(plot_confusion(confusion, CLASSES, out / "confusion.png", title=arch)))
    client.set_terminated(rid, status, end_time=start + 1000)
    return rid


def _study(client, exp_id: str, tmp: Path, arch: str, values: list[float]) -> str:
    from matplotlib.figure import Figure

    study = f"{EXPERIMENT}-{arch}"
    parent = client.create_run(exp_id, start_time=T0 + 50_000, run_name=f"study-{study}", tags={
        "architecture": arch, "dataset": "icbhi_synth", "optuna_study": study, "kind": "optuna-study"})
    pid = parent.info.run_id
    for number, value in enumerate(values):
        trial = client.create_run(exp_id, start_time=T0 + 51_000 + number, run_name=f"{arch}-trial{number}", tags={
            "architecture": arch, "optuna_trial": str(number), "optuna_study": study, "optuna_state": "COMPLETE",
            "mlflow.parentRunId": pid})
        client.log_param(trial.info.run_id, "train.selection_metric", "score")
        client.log_metric(trial.info.run_id, "best_val_score", value)
        client.set_terminated(trial.info.run_id, "FINISHED")
    client.log_metric(pid, "best_value", max(values))
    client.log_param(pid, "best.lr", "0.003")
    fig = Figure(figsize=(4, 3))
    fig.add_subplot().plot(range(len(values)), values)
    png = tmp / "optimization_history.png"
    fig.savefig(png, format="png")
    client.log_artifact(pid, str(png))
    client.set_terminated(pid, "FINISHED")
    return pid


CM_CNN6_SEED0 = np.array([[5, 1, 0, 0], [1, 3, 0, 1], [0, 0, 2, 1], [0, 1, 0, 2]])
CM_CNN6_SEED1 = np.array([[4, 2, 0, 0], [0, 4, 1, 0], [1, 0, 2, 0], [0, 0, 1, 2]])
CM_AST = np.array([[6, 0, 0, 0], [2, 2, 1, 0], [1, 1, 1, 0], [0, 1, 1, 1]])


def make_store(root: Path) -> Store:
    """Runs (test Score): cnn6 seeds 0/1 (0.60, 0.70), resnet50 seed 0 (an old 0.10 run, then the
    latest 0.80), ast seed 0 (0.50, predictions but no confusion.png; plus a FAILED 0.99 run), an
    Optuna trial with a test metric that must be ignored, and one study of cnn6 (3 trials)."""
    from mlflow import MlflowClient

    uri = fresh_db(root / "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    client.create_experiment("lungpipe-esc50", artifact_location=(root / "artifacts-esc").as_uri())
    tmp = root / "staging"
    store = Store(uri=uri, root=root)
    store.run_ids["cnn6"] = [
        _train_run(client, exp_id, tmp, "cnn6", 0, T0 + 1000, 0.60, confusion=CM_CNN6_SEED0),
        _train_run(client, exp_id, tmp, "cnn6", 1, T0 + 2000, 0.70, confusion=CM_CNN6_SEED1,
                   curves=([1.0, 0.8, 0.6, 0.5], [0.45, 0.5, 0.6, 0.65])),
    ]
    _train_run(client, exp_id, tmp, "resnet50", 0, T0 + 500, 0.10, confusion=CM_AST)
    store.run_ids["resnet50"] = [
        _train_run(client, exp_id, tmp, "resnet50", 0, T0 + 3000, 0.80, confusion=CM_CNN6_SEED0)]
    store.run_ids["ast"] = [
        _train_run(client, exp_id, tmp, "ast", 0, T0 + 4000, 0.50, confusion=CM_AST, draw_png=False)]
    _train_run(client, exp_id, tmp, "ast", 0, T0 + 9000, 0.99, status="FAILED")
    trial = client.create_run(exp_id, start_time=T0 + 9500, tags={"architecture": "cnn6", "optuna_trial": "9"})
    client.log_metric(trial.info.run_id, "test_score", 0.97)
    client.set_terminated(trial.info.run_id, "FINISHED")
    _study(client, exp_id, tmp, "cnn6", [0.41, 0.55, 0.48])
    store.expected_confusion = {"cnn6": CM_CNN6_SEED0 + CM_CNN6_SEED1, "ast": CM_AST}
    return store
