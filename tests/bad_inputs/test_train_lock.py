"""Killed processes: the train stage's lock on its checkpoint folder, and the writability check.

Kill test: a trainer started by a parent (as `dvc repro` starts it) survives a SIGKILL of the
parent; a second start refuses while that orphan runs and names its PID; once the orphan is dead
its stale lock is taken over and training succeeds."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lungpipe.util.errors import LungpipeError, TrainingLockedError
from lungpipe.util.locks import LOCK_NAME, FolderLock, ensure_writable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from featuredir import write_feature_dir
from mlflow_store import fresh_db


def test_a_second_holder_is_refused_naming_the_pid(tmp_path):
    with FolderLock(tmp_path / "ck"):
        assert (tmp_path / "ck" / LOCK_NAME).read_text().strip() == str(os.getpid())
        # flock locks belong to the open file: a second open in this process conflicts like another process
        with pytest.raises(TrainingLockedError, match=rf"ck is in use by another trainer \(PID {os.getpid()}, still running\)"):
            FolderLock(tmp_path / "ck").acquire()
    with FolderLock(tmp_path / "ck"):  # released: free again
        pass


def test_an_unwritable_output_folder_is_named_before_any_work(tmp_path):
    (tmp_path / "models").write_text("a file where the folder should be")
    with pytest.raises(LungpipeError, match=r"models/cnn6: output folder is not writable"):
        ensure_writable(tmp_path / "models" / "cnn6")


def _project(root: Path, epochs: int) -> Path:
    shutil.copytree(REPO / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(architectures=["cnn6"], use_tuned=False, seeds=[0])
    params["arch"] = {"cnn6": params["arch"]["cnn6"]}  # train.architectures lists exactly the arch sections
    params["arch"]["cnn6"].setdefault("train", {}).pop("epochs", None)  # the defaults' epochs below apply
    params["tuning"].update(architectures=["cnn6"])
    params["train"]["defaults"].update(epochs=epochs, batch_size=16, max_steps_per_epoch=1, device="cpu")
    params["evaluate"]["n_boot"] = 10
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_feature_dir(root / "data" / "features" / "small", n_train=48, n_test=16, n_frames=32, n_mels=16)
    return root


def _env(root: Path, params: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    env.pop("LUNGPIPE_DEBUG", None)
    if params is not None:
        env["LUNGPIPE_PARAMS"] = str(params)
    return env


def _wait_for_lock_pid(lock: Path, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = lock.read_text().strip() if lock.exists() else ""
        if text.isdigit():
            return int(text)
        time.sleep(0.2)
    raise AssertionError(f"no trainer took {lock} within {timeout} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_an_orphaned_trainer_blocks_a_second_one_until_it_dies(tmp_path):
    root = _project(tmp_path / "repo", epochs=100_000)  # trains until killed
    # the store exists (as after a first run): the orphan, SIGKILLed below, is not left creating its tables
    fresh_db(root / "mlflow.db")
    lock = root / "checkpoints" / "cnn6" / LOCK_NAME  # the stage locks the architecture's checkpoint folder
    # the parent plays `dvc repro`: a process whose child is the trainer
    parent = subprocess.Popen(["sh", "-c", f"{sys.executable} stages/train.py cnn6 --fold official; sleep 600"],
                              cwd=root, env=_env(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    orphan = None
    try:
        orphan = _wait_for_lock_pid(lock)
        assert orphan != parent.pid
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        assert _alive(orphan), "the trainer should outlive its killed parent"
        # paused, not ended: it still holds the lock and its PID is alive, but leaves the CPU to the
        # second trainer's start-up (it trained flat out until killed, beside the other tests)
        os.kill(orphan, signal.SIGSTOP)

        second = subprocess.run(check=False, args=[sys.executable, "stages/train.py", "cnn6"], cwd=root, env=_env(root),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"in use by another trainer (PID {orphan}, still running)" in second.stderr
        assert _alive(orphan)

        os.kill(orphan, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(orphan)

        short = tmp_path / "short.yaml"
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["train"]["defaults"]["epochs"] = 1
        short.write_text(yaml.safe_dump(params, sort_keys=False))
        third = subprocess.run(check=False, args=[sys.executable, "stages/train.py", "cnn6"], cwd=root, env=_env(root, short),
                               capture_output=True, text=True, timeout=300)
        assert third.returncode == 0, third.stderr[-3000:]
        assert f"taking over the lock left by PID {orphan} (no longer running)" in third.stderr
        assert (root / "models" / "cnn6" / "official" / "seed0" / "model.pt").is_file()
        assert lock.read_text() == ""  # released at the end
    finally:
        for pid in (orphan,):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
