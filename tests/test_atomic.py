"""lungpipe.util.atomic: outputs appear whole or not at all, with the usual file mode."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from lungpipe.util import atomic


def test_write_replaces_target_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic.write_json(target, {"a": 1})
    atomic.write_json(target, {"a": 2})
    assert target.read_text() == '{\n  "a": 2\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_failure_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "table.csv"
    atomic.write_csv(target, pd.DataFrame({"x": [1, 2]}))
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="interrupted"), atomic.atomic_path(target) as tmp:
        tmp.write_text("half a ta")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_temp_keeps_target_suffix_for_format_sniffing_libraries(tmp_path):
    with atomic.atomic_path(tmp_path / "arr.npy") as tmp:
        assert tmp.name.endswith(".npy.tmp") and tmp.parent == tmp_path


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_file_mode_follows_umask_not_mkstemp(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic.write_text(tmp_path / f"f{umask:o}.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_directory_target(tmp_path):
    target = tmp_path / "folder"
    with atomic.atomic_path(target, suffix="") as tmp:
        tmp.unlink()
        tmp.mkdir()
        (tmp / "a.txt").write_text("a")
    assert (target / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]


def test_make_readable_opens_a_staged_folder(tmp_path):
    import tempfile

    staged = tempfile.mkdtemp(dir=tmp_path)
    fd, name = tempfile.mkstemp(dir=staged)
    os.close(fd)
    os.mkdir(os.path.join(staged, "sub"), 0o700)
    old = os.umask(0o022)
    try:
        atomic.make_readable(staged)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(staged).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(name).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(os.path.join(staged, "sub")).st_mode) == 0o755


# ----------------------------------------------------------------------------- staging area, failures, kills


def _project(tmp_path):
    root = tmp_path / "proj"
    (root / ".dvc").mkdir(parents=True)
    return root


def test_in_a_project_temporaries_live_in_the_ignored_staging_area(tmp_path):
    root = _project(tmp_path)
    target = root / "metrics" / "cnn6.json"
    with atomic.atomic_path(target) as tmp:
        assert tmp.parent == root / atomic.STAGING_DIR_NAME and tmp.name.startswith(f"{os.getpid()}-cnn6.json.")
        tmp.write_text("{}")
    assert [p.name for p in target.parent.iterdir()] == ["cnn6.json"]
    assert list((root / atomic.STAGING_DIR_NAME).iterdir()) == []


def test_a_failed_folder_output_is_removed_not_unlinked(tmp_path):
    """The download stage's pattern (mkdir in the temporary path, then fail) used to end in
    IsADirectoryError from unlink() and leave data/.raw.*.tmp behind."""
    root = _project(tmp_path)
    with pytest.raises(RuntimeError, match="offline"), atomic.atomic_path(root / "data" / "raw", suffix="") as tmp:
        tmp.unlink()
        tmp.mkdir()
        (tmp / "part.wav").write_bytes(b"x")
        raise RuntimeError("offline")
    assert list((root / "data").iterdir()) == []
    assert list((root / atomic.STAGING_DIR_NAME).iterdir()) == []


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    root = _project(tmp_path)
    target = root / "data" / "features" / "small"
    with atomic.atomic_dir(target) as staged:
        (staged / "a.npy").write_bytes(b"1")
    with pytest.raises(KeyboardInterrupt), atomic.atomic_dir(target) as staged:
        (staged / "b.npy").write_bytes(b"2")
        raise KeyboardInterrupt
    assert [p.name for p in target.iterdir()] == ["a.npy"]
    with atomic.atomic_dir(target) as staged:
        (staged / "c.npy").write_bytes(b"3")
    assert [p.name for p in target.iterdir()] == ["c.npy"]
    assert list((root / atomic.STAGING_DIR_NAME).iterdir()) == []


def test_entries_of_dead_processes_are_swept_at_the_next_start(tmp_path):
    import subprocess
    import sys

    root = _project(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = root / atomic.STAGING_DIR_NAME / f"{int(dead.stdout)}-small.abc.tmp"
    stale.mkdir(parents=True)
    (stale / "train.npy").write_bytes(b"half")
    mine = root / atomic.STAGING_DIR_NAME / f"{os.getpid()}-other.tmp"
    mine.mkdir()
    atomic.write_text(root / "x.txt", "x")
    assert not stale.exists() and mine.exists()


def test_sigkilled_preprocess_leaves_nothing_in_data_features_and_the_next_run_succeeds(tmp_path):
    """SIGKILL a preprocess while it writes its arrays; data/features holds no temporary folder
    (DVC would see a changed dependency), and the next run succeeds and sweeps the debris."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = _project(tmp_path)
    repo = Path(__file__).resolve().parents[1]
    from lungpipe.data.icbhi import build_manifest
    from lungpipe.data.synth import SynthConfig, write_synthetic_icbhi

    raw = root / "data" / "raw"  # the inputs, written here (the processes below are the preprocess runs)
    write_synthetic_icbhi(raw, SynthConfig(seed=2, n_patients=6, recordings_per_patient=(2, 3)))
    atomic.write_csv(root / "data" / "manifest.csv", build_manifest(raw).cycles)
    script = (
        "import sys; from pathlib import Path; root = Path(sys.argv[1])\n"
        "from lungpipe.features import CycleConfig, FrontendConfig, PreprocessConfig, preprocess\n"
        "raw = root / 'data' / 'raw'\n"
        "cfg = PreprocessConfig(cycle=CycleConfig(max_len_s=8.0), frontend=FrontendConfig(n_mels=128), workers=2)\n"
        "preprocess(root / 'data' / 'manifest.csv', raw, root / 'data' / 'features' / 'small', cfg, progress=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    run = [sys.executable, "-c", script, str(root)]
    staging = root / atomic.STAGING_DIR_NAME
    proc = subprocess.Popen(run, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(staging.glob("*-small.*/train.npy")):
        assert proc.poll() is None, "preprocess finished before it could be killed"
        time.sleep(0.02)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its worker processes
    proc.wait()
    features = root / "data" / "features"
    assert proc.returncode == -signal.SIGKILL
    assert not features.exists() or list(features.iterdir()) == []
    assert list(staging.iterdir())  # the killed run's staging folder, outside data/features

    subprocess.run(run, env=env, check=True)
    assert sorted(p.name for p in (features / "small").iterdir()) == [
        "stats.json", "test.csv", "test.npy", "train.csv", "train.npy"]
    assert list(staging.iterdir()) == []
