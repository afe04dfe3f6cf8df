"""lungpipe.atomic: outputs appear whole or not at all, with the usual file mode."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from lungpipe import atomic


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
