"""Tuning across machines: Optuna workers on a real PostgreSQL storage (a throwaway cluster from
.ci/run or the pg_cluster fixture). Two worker processes lose and duplicate no trial; a worker
killed mid-trial is found by its stopped heartbeat and its trial re-run with the same params."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time

import optuna
from featuredir import write_feature_dir
from pg_cluster import postgres_server, postgres_url  # noqa: F401 - fixtures
from test_tuning import _job, _worker_cmd, _worker_env, wait_for_running_trial

from lungpipe.tuning import TuningConfig, create_or_load_study, job_to_attrs, make_storage


def _new_study(url: str, name: str, job, cfg: TuningConfig, heartbeat: int = 60):
    storage = make_storage(url, heartbeat_interval=heartbeat)
    create_or_load_study(storage, name, cfg, user_attrs={"job": job_to_attrs(job), "tuning": dataclasses.asdict(cfg)})
    return storage


def test_two_workers_on_postgresql_lose_and_duplicate_no_trial(tmp_path, postgres_url):  # noqa: F811
    cfg = TuningConfig(n_trials=4, epochs=1, pruner="none")
    storage = _new_study(postgres_url, "pg-shared", _job(tmp_path, features=write_feature_dir(
        tmp_path / "features", n_train=48, n_test=8)), cfg)
    procs = [subprocess.Popen(_worker_cmd(postgres_url, "pg-shared", 2, "--worker-seed", str(i)), env=_worker_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    trials = optuna.load_study(study_name="pg-shared", storage=storage).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4
    assert {t.user_attrs["lungpipe_worker"]["pid"] for t in trials} == {p.pid for p in procs}  # both worked


def test_a_killed_worker_is_found_by_heartbeat_and_its_trial_retried(tmp_path, postgres_url):  # noqa: F811
    job = _job(tmp_path, features=write_feature_dir(tmp_path / "features", n_train=192))
    slow = TuningConfig(n_trials=1, epochs=30, pruner="none", heartbeat_interval=1)
    storage = _new_study(postgres_url, "pg-killed", job, slow, heartbeat=1)
    victim_proc = subprocess.Popen(_worker_cmd(postgres_url, "pg-killed", 1, "--heartbeat-interval", "1"),
                                   env=_worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
    try:
        victim = wait_for_running_trial(storage, "pg-killed", victim_proc)
    finally:
        os.killpg(victim_proc.pid, signal.SIGKILL)
        victim_proc.communicate(timeout=30)
    time.sleep(2.5)  # past the grace period (2 x heartbeat) since the last beat
    study = optuna.load_study(study_name="pg-killed", storage=storage)
    study.set_user_attr("tuning", dataclasses.asdict(dataclasses.replace(slow, epochs=1)))  # a short retry
    rescue = subprocess.run(_worker_cmd(postgres_url, "pg-killed", 1, "--heartbeat-interval", "1"), env=_worker_env(),
                            capture_output=True, text=True, timeout=300, check=False)
    assert rescue.returncode == 0, rescue.stdout + rescue.stderr
    trials = optuna.load_study(study_name="pg-killed", storage=storage).trials
    assert trials[victim.number].state == optuna.trial.TrialState.FAIL  # failed by the heartbeat check
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params  # RetryHeartbeatStaleTrialCallback re-queued it
    assert retry[0].state == optuna.trial.TrialState.COMPLETE and len(trials) == 2
