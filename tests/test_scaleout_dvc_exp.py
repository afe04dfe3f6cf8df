"""Every run lands in the user's store: `dvc exp run --temp` and `--queue` run the stage in a copy
under `<repo>/.dvc/tmp/exps/…` that is deleted afterwards; `resolve_tracking_uri` must point them at
the original repository's mlflow.db. Real git + DVC commands on a tiny project whose one stage
logs an MLflow run through lungpipe.tracking (as the train and tune stages do)."""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from mlflow_store import fresh_db

from lungpipe.tracking import resolve_tracking_uri, user_repo_root

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "dvc-exp-test"

STAGE = textwrap.dedent('''\
    """Log one MLflow run for this variant (the tiny project's only stage)."""
    import sys, time, json
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    import yaml
    from lungpipe.tracking import resolve_tracking_uri, start_run

    ROOT = Path(__file__).resolve().parent
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    uri = resolve_tracking_uri(ROOT)
    with start_run(uri, {experiment!r}, f"variant-{{params['variant']}}", params=params) as run:
        time.sleep(params["hold_s"])  # long enough for two queued variants to overlap
    (ROOT / "out.json").write_text(json.dumps({{"uri": uri, "run_id": run.info.run_id}}))
''')


def test_a_dvc_experiment_copy_resolves_to_the_original_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for copy in (tmp_path / ".dvc/tmp/exps/standalone/tmpk7umbhrt", tmp_path / ".dvc/tmp/exps/tmpja7gy_fb"):
        assert user_repo_root(copy) == tmp_path.resolve()
        assert resolve_tracking_uri(copy) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert resolve_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert user_repo_root(tmp_path / "exps" / "tmp1") == (tmp_path / "exps" / "tmp1").resolve()  # not a DVC copy
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team:5000")
    assert resolve_tracking_uri(tmp_path / ".dvc/tmp/exps/tmp1") == "http://team:5000"


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _runs(db: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(EXPERIMENT)
    return [] if exp is None else client.search_runs([exp.experiment_id])


@pytest.mark.slow
def test_temp_and_queued_experiments_log_into_the_users_store(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@e",
               OMP_NUM_THREADS="1", DVC_NO_ANALYTICS="1")  # no usage-report daemon per dvc command
    (project / "log_run.py").write_text(STAGE.format(repo=str(REPO), experiment=EXPERIMENT))
    (project / "params.yaml").write_text("variant: 0\nhold_s: 0\n")
    (project / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          log:
            cmd: python log_run.py
            deps: [log_run.py]
            params: [variant, hold_s]
            outs: [out.json]
        """))
    (project / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    _run(["git", "init", "-q"], project, env)
    _run(["dvc", "init", "-q"], project, env)
    _run(["git", "add", "-A"], project, env)
    _run(["git", "commit", "-qm", "tiny project"], project, env)
    db = project / "mlflow.db"
    fresh_db(db)  # the user's store exists (empty; git-ignored, so no experiment copy has it)

    _run(["dvc", "repro"], project, env)
    assert len(_runs(db)) == 1

    _run(["dvc", "exp", "run", "--temp", "-S", "variant=1"], project, env)
    runs = _runs(db)
    assert sorted(r.info.run_name for r in runs) == ["variant-0", "variant-1"]  # the store grew

    # two queued variants run in parallel by two queue workers, both into the same store
    for variant in (2, 3):
        _run(["dvc", "exp", "run", "--queue", "-S", f"variant={variant}", "-S", "hold_s=6"], project, env)
    try:
        _run(["dvc", "queue", "start", "-j", "2"], project, env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = _run(["dvc", "queue", "status"], project, env)
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
        assert "Failed" not in status and "Success" in status, status
    finally:
        subprocess.run(["dvc", "queue", "stop"], cwd=project, env=env, capture_output=True, timeout=120, check=False)
    runs = {r.info.run_name: r for r in _runs(db)}
    assert sorted(runs) == ["variant-0", "variant-1", "variant-2", "variant-3"]
    a, b = runs["variant-2"].info, runs["variant-3"].info
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert a.start_time < b.end_time and b.start_time < a.end_time  # the two queued runs overlapped
