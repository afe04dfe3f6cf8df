"""A team MLflow server: `mlflow server` on a PostgreSQL backend store with artifacts proxied into
a local folder (standing in for object storage). A training run and two parallel tuning workers
log through it; runs, nested trials and the logged model read back. Plus the server's rough
edges: a half-broken server (/health 200, API 503) stops training start within 30 s naming the
URI, MLflow's own retries are bounded, and parallel writers on one SQLite file are told to use a
server instead of failing with a bare "database is locked"."""

from __future__ import annotations

import dataclasses
import http.server
import sqlite3
import subprocess
import threading
import time

import numpy as np
import optuna
import pytest
import torch
from featuredir import write_feature_dir
from mlflow_store import fresh_db, mlflow_server
from pg_cluster import postgres_server, postgres_url  # noqa: F401 - fixtures
from test_mlflow_server import CLASSES, N_FRAMES, N_MELS, _job, restore_mlflow_uri  # noqa: F401 - fixture
from test_tuning import _job as _tune_job
from test_tuning import _worker_cmd, _worker_env

from lungpipe.inference.model_file import load_model
from lungpipe.tracking import TrackingUnavailableError, bound_http_retries, start_run
from lungpipe.training.job import run_training
from lungpipe.tuning import TuningConfig, create_or_load_study, job_to_attrs, make_storage, sqlalchemy_url


class _HalfBroken(http.server.BaseHTTPRequestHandler):
    """/health says 200; every API call says 503 (a server whose backend store is down)."""

    def _answer(self) -> None:
        code = 200 if self.path.startswith("/health") else 503
        body = b"OK" if code == 200 else b'{"error_code": "TEMPORARILY_UNAVAILABLE"}'
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def half_broken_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HalfBroken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_half_broken_server_stops_training_start_within_30_s(tmp_path, half_broken_server, restore_mlflow_uri):  # noqa: F811
    features = write_feature_dir(tmp_path / "features", n_train=32, n_test=16, n_frames=N_FRAMES, n_mels=N_MELS)
    epochs: list[int] = []
    started = time.monotonic()
    with pytest.raises(TrackingUnavailableError) as info:
        run_training(_job(tmp_path, half_broken_server, features, epochs))
    assert time.monotonic() - started < 30
    assert half_broken_server in str(info.value) and "503" in str(info.value)
    assert epochs == [] and not (tmp_path / "out" / "model.pt").exists()


def test_mlflow_retries_against_a_failing_api_are_bounded(half_broken_server, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    bound_http_retries()  # what lungpipe.tracking.setup does before any MLflow call
    started = time.monotonic()
    with pytest.raises(MlflowException):
        MlflowClient(half_broken_server).search_experiments()  # past the start-up check: MLflow's own retries
    assert time.monotonic() - started < 30  # MLflow's defaults take about 4 minutes here


def test_parallel_writers_on_one_sqlite_file_are_told_to_use_a_server(tmp_path, restore_mlflow_uri):  # noqa: F811
    uri = fresh_db(tmp_path / "mlflow.db")
    other_writer = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    other_writer.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    try:
        with pytest.raises(TrackingUnavailableError) as info, start_run(uri, "exp", "r"):
            pass
    finally:
        other_writer.execute("ROLLBACK")
        other_writer.close()
    message = str(info.value)
    assert str(tmp_path / "mlflow.db") in message and "database is locked" in message
    assert "mlflow server" in message and "MLFLOW_TRACKING_URI" in message


@pytest.mark.slow
def test_training_and_two_tuning_workers_log_through_a_team_server_on_postgresql(
        tmp_path, postgres_server, postgres_url, monkeypatch, restore_mlflow_uri):  # noqa: F811
    import mlflow
    from mlflow import MlflowClient
    from pg_cluster import create_database

    backend = sqlalchemy_url(create_database(postgres_server, f"{postgres_url.rsplit('/', 1)[1]}_mlflow"))
    artifacts = tmp_path / "object-store"
    with mlflow_server(backend, artifacts, tmp_path / "server.log", workers=2) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
        client = MlflowClient(server)

        # a training run
        features = write_feature_dir(tmp_path / "features", n_train=48, n_test=24, n_frames=N_FRAMES, n_mels=N_MELS)
        result = run_training(_job(tmp_path, server, features, []))
        run = client.get_run(result.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["architecture"] == "cnn6"
        assert len(client.get_metric_history(result.run_id, "val_score")) == 2
        models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
        model_id = next(m.model_id for m in models if m.source_run_id == result.run_id)
        from lungpipe.serving.pyfunc import download_model_file  # the audio pyfunc's model file, read safely

        loaded = load_model(download_model_file(f"models:/{model_id}", server, tmp_path / "download"))
        x = torch.from_numpy(np.asarray(np.load(features / "test.npy")[:3], dtype=np.float32))[:, None]
        with torch.no_grad():
            np.testing.assert_allclose(loaded(x).numpy(), load_model(tmp_path / "out" / "model.pt")(x).numpy(),
                                       atol=1e-5)
        # artifacts went through the server into its destination folder, none into the client's cwd
        stored = [str(p) for p in artifacts.rglob("*") if p.is_file()]
        assert any(result.run_id in p and p.endswith("predictions.csv") for p in stored)
        assert any(model_id in p for p in stored)

        # two parallel tuning workers on one study (PostgreSQL storage), trials nested under the study's run
        tune_job = _tune_job(tmp_path, features=write_feature_dir(tmp_path / "tune-features", n_train=48, n_test=8),
                             tracking=server)
        cfg = TuningConfig(n_trials=2, epochs=1, pruner="none")
        with start_run(server, "tune-test", "study-team", tags={"kind": "optuna-study"}) as parent:
            parent_id = parent.info.run_id
        tune_job = dataclasses.replace(tune_job, parent_run_id=parent_id)
        storage = make_storage(postgres_url)
        create_or_load_study(storage, "team", cfg, user_attrs={"job": job_to_attrs(tune_job),
                                                                "tuning": dataclasses.asdict(cfg)})
        env = {**_worker_env(), "MLFLOW_TRACKING_URI": server}
        procs = [subprocess.Popen(_worker_cmd(postgres_url, "team", 1, "--worker-seed", str(i)), env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
        outs = [p.communicate(timeout=300)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        trials = optuna.load_study(study_name="team", storage=storage).trials
        assert sorted(t.number for t in trials) == [0, 1]

        exp = client.get_experiment_by_name("tune-test")
        children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
        assert sorted(r.data.tags["optuna_trial"] for r in children) == ["0", "1"]
        assert all(r.info.status == "FINISHED" and r.data.tags["optuna_state"] == "COMPLETE" for r in children)
        assert all("val_score" in r.data.metrics for r in children)
        by_trial = {int(r.data.tags["optuna_trial"]): r for r in children}
        for t in trials:
            assert by_trial[t.number].data.metrics["best_val_score"] == pytest.approx(t.value)
