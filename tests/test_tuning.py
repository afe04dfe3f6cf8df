"""Tuning: search-space validation, pruning, failures recorded, MLflow nesting, parallel workers,
study identity (a changed question starts a new study), COMPLETE-only counting, failing studies,
fresh points on continuation, and trials of a killed worker failed and retried (journal file)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from featuredir import write_feature_dir

from lungpipe.tuning import (
    OWNER_ATTR,
    TuneJob,
    TuningConfig,
    TuningFailedError,
    create_or_load_study,
    job_to_attrs,
    make_storage,
    parse_space,
    run_study,
    sampler_seed,
    study_name_for,
)
from lungpipe.util.typed_config import ConfigError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "stages"))
import _common  # noqa: E402
import _run  # noqa: E402


def _params(space: dict) -> dict:
    p = _common.load_params(REPO / "params.yaml")
    p["tuning"]["space"] = {"cnn6": space}
    p["train"]["defaults"].update(batch_size=16, num_workers=0)
    return p


SPACE = {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "augment.time_mask_frac": {"type": "float", "low": 0.0, "high": 0.2}}


def _job(tmp_path, space=SPACE, tracking=None, features=None, **train) -> TuneJob:
    """A job as the tune stage builds it: typed base settings and a parsed space (no params mapping)."""
    feats = features or write_feature_dir(tmp_path / "features")
    params = _params(space)
    params["train"]["defaults"].update(train)
    settings = _run.arch_settings(params, "cnn6")
    return TuneJob(settings=settings, space=parse_space("cnn6", params["tuning"]["space"]["cnn6"], settings),
                   features_dir=str(feats), tracking_uri=tracking, experiment="tune-test",
                   class_names=["normal", "crackle", "wheeze", "both"])


def test_unknown_search_key_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="learning_rate"):
        _job(tmp_path, {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}})
    with pytest.raises(ConfigError, match="low <= high"):
        _job(tmp_path, {"train.lr": {"type": "float", "low": 1.0, "high": 0.1}})


def test_namespaced_search_keys_reach_train_augment_and_model(tmp_path):
    from lungpipe.tuning import with_values

    job = _job(tmp_path, {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2},
                          "augment.mixup_alpha": {"type": "float", "low": 0.0, "high": 0.4},
                          "model.dropout": {"type": "float", "low": 0.0, "high": 0.5}})
    s = with_values(job.settings, {"train.lr": 0.005, "augment.mixup_alpha": 0.3, "model.dropout": 0.25})
    assert (s.train.lr, s.train.augment.mixup_alpha, s.model["dropout"]) == (0.005, 0.3, 0.25)
    assert job.settings.train.lr != 0.005  # the base settings are untouched


def test_failed_and_pruned_trials_are_recorded_and_only_complete_ones_count(tmp_path, monkeypatch):
    import lungpipe.tuning as tuning_module  # the objective calls run_training by this module's name

    calls = {"n": 0}
    real = tuning_module.run_training

    def flaky(job):
        calls["n"] += 1
        if calls["n"] == 2:
            raise FloatingPointError("loss is nan")  # a failing trial
        # the pruner sees bad validation epochs in calls 4 and 5 (it stops them) and perfect ones in
        # the others (so it stops no other trial); the trials themselves train for real
        seen = 0.0 if calls["n"] in (4, 5) else 1.0
        original = list(job.callbacks)
        job.callbacks = [lambda e, r, cbs=original: [cb(e, {**r, "val_score": seen}) for cb in cbs]]
        return real(job)

    monkeypatch.setattr(tuning_module, "run_training", flaky)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = TuningConfig(n_trials=3, epochs=2, pruner="median")
    storage = make_storage(None, default_path=tmp_path / "study.log")
    small = write_feature_dir(tmp_path / "features", n_train=48, n_test=8)
    result = run_study(_job(tmp_path, tracking=uri, features=small), cfg, storage, "s1", progress=False,
                       plots_dir=tmp_path)
    # trials 0 ok, 1 failed, 2 ok, 3 and 4 pruned, 5 ok: the study ran until 3 were COMPLETE
    assert (result.n_complete, result.n_failed, result.n_pruned) == (3, 1, 2)
    assert (tmp_path / "optimization_history.png").stat().st_size > 1000
    study = optuna.load_study(study_name="s1", storage=storage)
    assert study.trials[1].user_attrs["error"] == "FloatingPointError: loss is nan"

    # resumable: running the stage again adds nothing when n_trials is reached, more when raised
    job = _job(tmp_path, features=small)
    same = run_study(job, TuningConfig(n_trials=3, epochs=1), storage, "s1", progress=False)
    assert len(optuna.load_study(study_name="s1", storage=storage).trials) == 6 and same.n_complete == 3
    again = run_study(job, TuningConfig(n_trials=4, epochs=1), storage, "s1", progress=False)
    assert again.n_complete == 4 and len(optuna.load_study(study_name="s1", storage=storage).trials) == 7

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tune-test")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("kind") == "optuna-study"]
    assert len(parent) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(children) == 5  # the failing trial raised before its run started
    assert {r.data.tags.get("optuna_state") for r in children} == {"COMPLETE", "PRUNED"}
    assert {r.info.status for r in children if r.data.tags["optuna_state"] == "PRUNED"} == {"FINISHED"}
    assert "best_value" in parent[0].data.metrics and any(k.startswith("best.") for k in parent[0].data.params)
    assert all("val_score" in r.data.metrics for r in children)


def test_a_study_whose_trials_all_fail_fails_naming_the_first_error(tmp_path, monkeypatch):
    import lungpipe.tuning as tuning_module  # the objective calls run_training by this module's name

    errors = iter(["features are constant", "second error", "third", "fourth"])

    def broken(job):
        raise ValueError(next(errors))

    monkeypatch.setattr(tuning_module, "run_training", broken)
    storage = make_storage(None, default_path=tmp_path / "study.log")
    with pytest.raises(TuningFailedError) as info:
        run_study(_job(tmp_path), TuningConfig(n_trials=2, epochs=1), storage, "bad", progress=False)
    message = str(info.value)
    assert "study bad" in message and "trial 0" in message and "ValueError: features are constant" in message
    assert "4 failed" in message  # at most 2 * n_trials attempts, then it gives up


def test_a_changed_question_starts_a_new_study_and_keeps_the_old(tmp_path):
    feats = write_feature_dir(tmp_path / "features")
    cfg = TuningConfig(n_trials=2, epochs=1)
    base_name, ident = study_name_for("lungpipe-synth", _job(tmp_path, features=feats), cfg)
    assert base_name.startswith("lungpipe-synth-cnn6-") and set(ident) >= {"space", "settings", "data", "metric"}
    # the same question asked again (another process, an operational setting) keeps the name
    assert study_name_for("lungpipe-synth", _job(tmp_path, features=feats), cfg)[0] == base_name
    assert study_name_for("lungpipe-synth", _job(tmp_path, features=feats, num_workers=2), cfg)[0] == base_name
    narrower = {**SPACE, "train.lr": {"type": "float", "low": 0.1, "high": 0.5}}
    other_data = write_feature_dir(tmp_path / "features2", seed=1)
    changed = {
        "space": study_name_for("lungpipe-synth", _job(tmp_path, narrower, features=feats), cfg),
        "settings": study_name_for("lungpipe-synth", _job(tmp_path, features=feats, weight_decay=0.5), cfg),
        "data": study_name_for("lungpipe-synth", _job(tmp_path, features=other_data), cfg),
        "metric": study_name_for("lungpipe-synth", _job(tmp_path, features=feats), dataclasses.replace(cfg, metric="se")),
        "settings ": study_name_for("lungpipe-synth", _job(tmp_path, features=feats), dataclasses.replace(cfg, epochs=9)),
    }
    for what, (name, new_ident) in changed.items():
        assert name != base_name, what
        assert new_ident[what.strip()] != ident[what.strip()], what
    assert len({name for name, _ in changed.values()}) == len(changed)

    # a run on the narrower space gets a new study whose best lr lies inside the new space
    storage = make_storage(None, default_path=tmp_path / "study.log")
    run_study(_job(tmp_path, features=feats), cfg, storage, base_name, progress=False)
    narrow_name = changed["space"][0]
    result = run_study(_job(tmp_path, narrower, features=feats), cfg, storage, narrow_name, progress=False)
    assert 0.1 <= result.best_params["train.lr"] <= 0.5 and result.n_complete == 2
    assert set(optuna.get_all_study_names(storage)) == {base_name, narrow_name}  # the old one is kept


def test_a_continued_study_proposes_new_points(tmp_path):
    assert len({sampler_seed(0, w, n) for w in range(3) for n in range(5)}) == 15
    storage = make_storage(None, default_path=tmp_path / "study.log")
    job = _job(tmp_path)
    run_study(job, TuningConfig(n_trials=2, epochs=1, pruner="none"), storage, "cont", progress=False)
    run_study(job, TuningConfig(n_trials=4, epochs=1, pruner="none"), storage, "cont", progress=False)
    trials = optuna.load_study(study_name="cont", storage=storage).trials
    first, later = [t.params for t in trials[:2]], [t.params for t in trials[2:]]
    assert len(later) == 2 and all(p not in first for p in later)  # no replay of trials 0 and 1


def _worker_cmd(storage: str, study: str, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lungpipe.cli", "tune", "worker", "--storage", storage, "--study", study,
            "--trials", str(trials), *extra]


def _worker_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def wait_for_running_trial(storage, study_name: str, proc: subprocess.Popen, timeout: float = 120):
    """The first trial a worker process has started training (owner attribute and params set), polled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        running = [t for t in optuna.load_study(study_name=study_name, storage=storage).trials
                   if t.state == optuna.trial.TrialState.RUNNING and OWNER_ATTR in t.user_attrs and t.params]
        if running:
            return running[0]
        time.sleep(0.2)
    raise AssertionError("the worker started no trial")


def test_a_trial_left_running_by_a_killed_worker_is_failed_and_retried_on_the_journal(tmp_path):
    journal = tmp_path / "journal.log"
    storage = make_storage(str(journal))
    job = _job(tmp_path, features=write_feature_dir(tmp_path / "features", n_train=192))
    slow = TuningConfig(n_trials=1, epochs=30, pruner="none")  # long enough to be killed mid-trial
    create_or_load_study(storage, "killed", slow, user_attrs={"job": job_to_attrs(job),
                                                               "tuning": dataclasses.asdict(slow)})
    proc = subprocess.Popen(_worker_cmd(str(journal), "killed", 1), env=_worker_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        victim = wait_for_running_trial(make_storage(str(journal)), "killed", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    # the stage resumes the study: the orphan is failed and its params retried (1 epoch now)
    result = run_study(job, TuningConfig(n_trials=1, epochs=1, pruner="none"), make_storage(str(journal)),
                       "killed", progress=False)
    trials = optuna.load_study(study_name="killed", storage=make_storage(str(journal))).trials
    assert trials[victim.number].state == optuna.trial.TrialState.FAIL
    assert "died" in trials[victim.number].user_attrs["error"]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params
    assert retry[0].state == optuna.trial.TrialState.COMPLETE and result.n_complete == 1
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]


def test_two_worker_processes_share_one_study(tmp_path):
    storage_path = tmp_path / "journal.log"
    storage = make_storage(str(storage_path))
    job = _job(tmp_path)
    cfg = TuningConfig(n_trials=4, epochs=1, pruner="none")
    create_or_load_study(storage, "shared", cfg, user_attrs={"job": job_to_attrs(job),
                                                              "tuning": dataclasses.asdict(cfg)})
    procs = [subprocess.Popen(_worker_cmd(str(storage_path), "shared", 2, "--worker-seed", str(i)), env=_worker_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    study = optuna.load_study(study_name="shared", storage=make_storage(str(storage_path)))
    numbers = sorted(t.number for t in study.trials)
    assert numbers == [0, 1, 2, 3]  # none lost, none duplicated
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4  # the workers did not replay each other
