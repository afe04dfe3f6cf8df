"""Training against a real `mlflow server` (SQLite backend, proxied artifacts), read back through
the client; and a tracking URI that does not answer stops training before its first epoch."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from featuredir import write_feature_dir
from mlflow_store import fresh_db
from mlflow_store import mlflow_server as start_mlflow_server
from servers import free_port

from lungpipe.tracking import TrackingUnavailableError, resolve_tracking_uri
from lungpipe.training.job import TrainJob, run_training

REPO = Path(__file__).resolve().parents[1]
N_FRAMES, N_MELS, EPOCHS = 32, 16, 2
CLASSES = ["normal", "crackle", "wheeze", "both"]


def _settings():
    sys.path.insert(0, str(REPO / "stages"))
    import _common
    import _run

    s = _run.arch_settings(_common.load_params(REPO / "params.yaml"), "cnn6")
    s.train = replace(s.train, epochs=EPOCHS, batch_size=16, device="cpu", num_workers=0)
    return s


def _job(tmp: Path, uri: str, features: Path, epochs_seen: list[int]) -> TrainJob:
    return TrainJob(settings=_settings(), features_dir=features, out_dir=tmp / "out", seed=0, dataset="icbhi_synth",
                    class_names=CLASSES, tracking_uri=uri, experiment="lungpipe-synth", progress=False, n_boot=20,
                    callbacks=[lambda epoch, record: epochs_seen.append(epoch)],
                    tags={"dvc_stage": "train@cnn6-official"})


@pytest.fixture
def restore_mlflow_uri():
    import mlflow

    before = mlflow.get_tracking_uri()
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run("FAILED")
    mlflow.set_tracking_uri(before)


def test_unreachable_server_stops_training_before_the_first_epoch(tmp_path, monkeypatch, restore_mlflow_uri):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    features = write_feature_dir(tmp_path / "features", n_train=32, n_test=16, n_frames=N_FRAMES, n_mels=N_MELS)
    epochs: list[int] = []
    with pytest.raises(TrackingUnavailableError) as info:
        run_training(_job(tmp_path, resolve_tracking_uri(tmp_path), features, epochs))
    assert uri in str(info.value) and "MLFLOW_TRACKING_URI" in str(info.value)
    assert epochs == [] and not (tmp_path / "out" / "model.pt").exists()


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` (SQLite backend, proxied artifacts) on a free local port."""
    db = tmp_path / "server" / "mlflow.db"
    fresh_db(db)
    with start_mlflow_server(f"sqlite:///{db}", tmp_path / "server" / "artifacts", tmp_path / "server.log") as uri:
        yield uri


@pytest.mark.slow
def test_training_run_logged_to_a_server_reads_back(tmp_path, mlflow_server, monkeypatch, restore_mlflow_uri):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    features = write_feature_dir(tmp_path / "features", n_train=48, n_test=24, n_frames=N_FRAMES, n_mels=N_MELS)
    epochs: list[int] = []
    result = run_training(_job(tmp_path, resolve_tracking_uri(tmp_path), features, epochs))
    assert epochs == list(range(EPOCHS)) and result.run_id

    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "lungpipe-synth"
    assert run.data.params["arch"] == "cnn6" and run.data.params["train.epochs"] == str(EPOCHS)
    assert run.data.params["model.n_mels"] == str(N_MELS)
    tags = run.data.tags
    assert (tags["architecture"], tags["fold"], tags["seed"], tags["dataset"]) == ("cnn6", "official", "0",
                                                                                   "icbhi_synth")
    assert tags["dvc_stage"] == "train@cnn6-official" and tags["selection"] == "validation"
    for key in ("train_loss", "val_score", "val_sp", "val_se"):
        history = client.get_metric_history(result.run_id, key)
        assert sorted(m.step for m in history) == list(range(EPOCHS)), key
    losses = {m.step: m.value for m in client.get_metric_history(result.run_id, "train_loss")}
    assert losses == pytest.approx({r["epoch"]: r["train_loss"] for r in result.fit.history})
    assert run.data.metrics["test_score"] == pytest.approx(result.test_metrics["score"])
    assert "test_score_ci_low" in run.data.metrics
    artifacts = {f.path for f in client.list_artifacts(result.run_id)}
    assert {"confusion.png", "predictions.csv", "config.json", "history.json"} <= artifacts

    # the logged model (an MLflow 3 LoggedModel, the audio-in pyfunc) carries the model file, which
    # loads (as tensors and plain data) and predicts (B, classes) like the local one
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    model_ids = [m.model_id for m in models if m.source_run_id == result.run_id]
    assert len(model_ids) == 1
    import torch

    from lungpipe.inference.model_file import load_model
    from lungpipe.serving.pyfunc import download_model_file

    loaded = load_model(download_model_file(f"models:/{model_ids[0]}", mlflow_server, tmp_path / "download"))
    x = torch.from_numpy(np.asarray(np.load(features / "test.npy")[:3], dtype=np.float32))[:, None]
    with torch.no_grad():
        out = loaded(x)
    assert tuple(out.shape) == (3, len(CLASSES))
    with torch.no_grad():
        np.testing.assert_allclose(out.numpy(), load_model(tmp_path / "out" / "model.pt")(x).numpy(), atol=1e-5)
