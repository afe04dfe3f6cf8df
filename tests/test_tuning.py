"""Tuning: search-space validation, pruning, failures recorded, MLflow nesting, parallel workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from featuredir import write_feature_dir

import optuna
from lungpipe.config import ConfigError, to_dict
from lungpipe.tuning import Objective, TuneJob, TuningConfig, create_or_load_study, make_storage, run_study

REPO = Path(__file__).resolve().parents[1]


def _settings() -> dict:
    sys.path.insert(0, str(REPO / "stages"))
    import _common

    p = _common.load_params(REPO / "params.yaml")
    p["train"]["defaults"].update(batch_size=16, num_workers=0)
    return to_dict(_common.arch_settings(p, "cnn6"))


SPACE = {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "augment.time_mask_width": {"type": "int", "low": 0, "high": 8}}


def _job(tmp_path, space=SPACE, tracking=None) -> TuneJob:
    feats = write_feature_dir(tmp_path / "features")
    return TuneJob(arch="cnn6", settings=_settings(), space=space, features_dir=str(feats), tracking_uri=tracking,
                   experiment="tune-test", class_names=["normal", "crackle", "wheeze", "both"])


def test_unknown_search_key_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="learning_rate"):
        Objective(_job(tmp_path, {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}),
                  TuningConfig(epochs=1))
    with pytest.raises(ConfigError, match="low <= high"):
        Objective(_job(tmp_path, {"train.lr": {"type": "float", "low": 1.0, "high": 0.1}}), TuningConfig(epochs=1))


def test_failed_and_pruned_trials_are_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    import lungpipe.training.job as jobmod

    calls = {"n": 0}
    real = jobmod.run_training

    def flaky(job):
        calls["n"] += 1
        if calls["n"] == 2:
            raise FloatingPointError("loss is nan")  # a failing trial
        if calls["n"] >= 4:  # later trials see bad validation epochs: the median pruner stops them
            original = list(job.callbacks)
            job.callbacks = [lambda e, r, cbs=original: [cb(e, {**r, "val_score": 0.0}) for cb in cbs]]
        return real(job)

    monkeypatch.setattr(jobmod, "run_training", flaky)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = TuningConfig(n_trials=5, epochs=2, pruner="median")
    storage = make_storage(None, default_path=tmp_path / "study.log")
    result = run_study(_job(tmp_path, tracking=uri), cfg, storage, "s1", progress=False, plots_dir=tmp_path)
    assert result.n_failed == 1 and result.n_pruned >= 1 and result.n_complete >= 2
    assert result.n_complete + result.n_pruned + result.n_failed == 5
    assert (tmp_path / "optimization_history.png").stat().st_size > 1000

    # resumable: running the stage again adds nothing when n_trials is reached, more when raised
    again = run_study(_job(tmp_path, tracking=None), TuningConfig(n_trials=6, epochs=1), storage, "s1", progress=False)
    assert again.n_complete + again.n_pruned + again.n_failed == 6

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tune-test")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("kind") == "optuna-study"]
    assert len(parent) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(children) == 4  # the failing trial raised before its run started
    assert {r.data.tags.get("optuna_state") for r in children} >= {"COMPLETE", "PRUNED"}
    assert "best_value" in parent[0].data.metrics and any(k.startswith("best.") for k in parent[0].data.params)
    assert all("val_score" in r.data.metrics for r in children)


def test_two_worker_processes_share_one_study(tmp_path):
    storage_path = tmp_path / "journal.log"
    storage = make_storage(str(storage_path))
    job = _job(tmp_path)
    cfg = TuningConfig(n_trials=4, epochs=1, pruner="none")
    import dataclasses

    create_or_load_study(storage, "shared", cfg, user_attrs={"job": dataclasses.asdict(job),
                                                              "tuning": dataclasses.asdict(cfg)})
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "lungpipe.cli", "tune", "worker", "--storage", str(storage_path),
           "--study", "shared", "--trials", "2"]
    procs = [subprocess.Popen(cmd + ["--worker-seed", str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    study = optuna.load_study(study_name="shared", storage=make_storage(str(storage_path)))
    numbers = sorted(t.number for t in study.trials)
    assert numbers == [0, 1, 2, 3]  # none lost, none duplicated
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
