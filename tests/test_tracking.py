"""MLflow runs of real (tiny) trainings in a real SQLite store: what links a run to its inputs,
one run per (stage, architecture, fold, seed, params hash), a resumed training continuing its run,
the run files the report reads, and a pruned-style stop that ends FINISHED."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from featuredir import write_feature_dir
from mlflow_store import fresh_db

from lungpipe.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    RUN_FILE,
    RUN_KEY_TAG,
    dvc_md5,
    params_hash,
)
from lungpipe.training.job import TrainJob, hashed_params, run_training

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "stages"))
from _run import arch_settings  # noqa: E402  (the stages build typed settings from params)

CLASSES = ["normal", "crackle", "wheeze", "both"]
EXPERIMENT = "lungpipe-synth"


class Stop(Exception):
    """Stands for a kill (or an Optuna prune) after an epoch."""


def _settings(epochs: int, **train):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    s = arch_settings(params, "cnn6")
    s.train = replace(s.train, epochs=epochs, batch_size=16, device="cpu", num_workers=0, early_stopping_patience=0,
                      **train)
    return s


@pytest.fixture
def store(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    before = mlflow.get_tracking_uri()
    uri = fresh_db(tmp_path / "mlflow.db")
    from mlflow import MlflowClient

    MlflowClient(uri).create_experiment(EXPERIMENT, artifact_location=(tmp_path / "artifacts").as_uri())
    features = write_feature_dir(tmp_path / "data" / "features" / "small", n_train=48, n_test=24, n_frames=32,
                                 n_mels=16)
    yield {"uri": uri, "features": features, "root": tmp_path}
    while mlflow.active_run() is not None:
        mlflow.end_run("FAILED")
    mlflow.set_tracking_uri(before)


def _job(store, epochs=2, callbacks=(), **kw) -> TrainJob:
    root = store["root"]
    fields = {"settings": _settings(epochs), "features_dir": store["features"],
              "out_dir": root / "models" / "cnn6" / "official" / "seed0",
              "checkpoint_dir": root / "checkpoints" / "cnn6" / "official" / "seed0", "seed": 0,
              "dataset": "icbhi_synth", "class_names": CLASSES, "tracking_uri": store["uri"], "experiment": EXPERIMENT,
              "progress": False, "n_boot": 10, "callbacks": list(callbacks), "tags": {"dvc_stage": "train@cnn6-official"}}
    return TrainJob(**{**fields, **kw})


def _runs(uri: str, deleted: bool = False):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL if deleted else ViewType.ACTIVE_ONLY)


def test_a_run_is_linked_to_its_data_code_and_experiment(store, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("DVC_EXP_NAME", "lean-lr")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123abcd")
    # the features folder as DVC recorded it
    (store["root"] / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"preprocess@small": {
        "outs": [{"path": "data/features/small", "hash": "md5", "md5": "0a9ba900687b8b28e3935e9ffa455e68.dir"}]}}}))
    assert dvc_md5(store["features"]) == ("0a9ba900687b8b28e3935e9ffa455e68.dir", "data/features/small")
    result = run_training(_job(store))
    client = MlflowClient(store["uri"])
    run = client.get_run(result.run_id)
    tags = run.data.tags
    assert tags["dvc_exp_name"] == "lean-lr" and tags["dvc_exp_baseline_rev"] == "0123abcd"
    assert len(tags["git_commit"]) == 40 and tags["git_dirty"] in ("true", "false")
    config = json.loads((result.out_dir / "config.json").read_text())
    assert tags["params_hash"] == params_hash(hashed_params(config))
    assert hashed_params(config)["features"] == {"n_frames": 32, "n_mels": 16}  # not where the folder lies
    inputs = {{t.key: t.value for t in i.tags}["mlflow.data.context"]: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "evaluation"}
    assert {d.digest for d in inputs.values()} == {"0a9ba900687b8b28e3935e9ffa455e68.dir"}
    assert (inputs["training"].name, inputs["evaluation"].name) == ("icbhi_synth/small:train", "icbhi_synth/small:test")
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)
    # the run file beside the outputs (the report links it) and in the checkpoint folder
    saved = json.loads((result.out_dir / RUN_FILE).read_text())
    assert saved == {"run_id": result.run_id, "experiment_id": run.info.experiment_id,
                     "tracking_uri": store["uri"], "run_name": "cnn6[small]-official-seed0"}
    assert json.loads((store["root"] / "checkpoints/cnn6/official/seed0" / RUN_FILE).read_text()) == saved
    # the LoggedModel is named after the run, not "model"
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert [m.name for m in models if m.source_run_id == result.run_id] == ["icbhi_synth-cnn6-small-official-seed0"]


def test_the_logged_model_carries_every_step_0_metric_of_its_run(store):
    """The run's final metrics (test_*, best_val_*, best_epoch) and its epoch-0 and step-0 system
    metrics are the LoggedModel's metrics, as MLflow links them to a model logged at step 0."""
    from mlflow import MlflowClient

    result = run_training(_job(store))
    client = MlflowClient(store["uri"])
    run = client.get_run(result.run_id)
    at_step_0 = {(m.key, m.value) for key in run.data.metrics for m in client.get_metric_history(run.info.run_id, key)
                 if m.step == 0}
    [model] = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                          filter_string=f"source_run_id = '{result.run_id}'")
    assert {(m.key, m.value) for m in model.metrics} == at_step_0
    assert {"best_epoch", "test_score", "best_val_score", "val_score", "train_loss"} <= {k for k, _ in at_step_0}


def test_same_inputs_replace_the_run_other_params_add_one(store):
    first = run_training(_job(store, epochs=1))
    import shutil

    shutil.rmtree(store["root"] / "checkpoints")  # a fresh re-run with the same inputs
    second = run_training(_job(store, epochs=1))
    active = _runs(store["uri"])
    assert [r.info.run_id for r in active] == [second.run_id] != [first.run_id]
    assert {r.info.run_name for r in active} == {"cnn6[small]-official-seed0"}
    other = run_training(_job(store, epochs=1, settings=_settings(1, lr=0.0123)))
    keys = {r.data.tags[RUN_KEY_TAG] for r in _runs(store["uri"])}
    assert other.run_id != second.run_id and len(keys) == 2


def test_a_resumed_training_continues_its_run_and_its_history_is_whole(store):
    from mlflow import MlflowClient

    def kill_after_epoch_1(epoch, record):
        if epoch == 1:
            raise Stop()

    with pytest.raises(Stop):
        run_training(_job(store, epochs=4, callbacks=[kill_after_epoch_1]))
    killed = json.loads((store["root"] / "checkpoints/cnn6/official/seed0" / RUN_FILE).read_text())["run_id"]
    client = MlflowClient(store["uri"])
    assert client.get_run(killed).info.status == "FAILED"
    result = run_training(_job(store, epochs=4))
    assert result.fit.resumed_from_epoch == 2 and result.run_id == killed
    run = client.get_run(killed)
    assert run.info.status == "FINISHED" and len(_runs(store["uri"], deleted=True)) == 1
    steps = sorted(m.step for m in client.get_metric_history(killed, "train_loss"))
    assert steps == [0, 1, 2, 3]
    assert "test_score" in run.data.metrics


def test_an_exception_named_finished_ends_the_run_finished(store):
    from mlflow import MlflowClient

    def prune(epoch, record):
        import mlflow

        mlflow.set_tag("optuna_state", "PRUNED")
        raise Stop()

    job = _job(store, epochs=3, callbacks=[prune], run_finished_on=(Stop,), checkpoint_dir=None, score_test=False,
               tags={"optuna_trial": "0"}, run_name="cnn6-trial0")
    with pytest.raises(Stop):
        run_training(job)
    (run,) = _runs(store["uri"])
    assert run.info.status == "FINISHED" and run.data.tags["optuna_state"] == "PRUNED"
    assert MlflowClient(store["uri"]).get_metric_history(run.info.run_id, "train_loss")[0].step == 0


def test_a_replacing_parent_adopts_the_children_of_the_run_it_replaces(store):
    """A resumed study: one parent per key, its earlier trials re-parented, the old parent gone."""
    from mlflow import MlflowClient

    from lungpipe.tracking import run_key, start_run

    key = run_key("tune", "cnn6", "study", 0, params_hash({"study": "s1"}))
    with start_run(store["uri"], EXPERIMENT, "study-s1", key=key) as first:
        with start_run(store["uri"], EXPERIMENT, "cnn6-trial0", parent_run_id=first.info.run_id) as trial:
            pass
    with start_run(store["uri"], EXPERIMENT, "study-s1", key=key) as second:
        pass
    client = MlflowClient(store["uri"])
    active = _runs(store["uri"])
    assert {r.info.run_id for r in active} == {second.info.run_id, trial.info.run_id}
    assert client.get_run(trial.info.run_id).data.tags["mlflow.parentRunId"] == second.info.run_id
    assert client.get_run(first.info.run_id).info.lifecycle_stage == "deleted"
    assert client.get_run(second.info.run_id).info.status == "FINISHED"
