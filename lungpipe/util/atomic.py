"""Atomic file output: write to a temporary name, then rename onto the target.

An interrupted stage therefore never leaves a half-written file behind that DVC could cache.
Temporaries live in :data:`STAGING_DIR_NAME` (``.lungpipe-tmp/``, git- and dvc-ignored) at the
root of the project that holds the target (the nearest folder up with ``.dvc`` or ``.git``; or
``$LUNGPIPE_TMP_DIR``), so that a killed process leaves no debris *inside* a DVC-tracked output
or dependency folder (``data/features/``, ``metrics/``…). Entries there are named after the
process that made them; one whose process is gone is removed the next time any staging starts.
Outside a project (or on another file system than the target) temporaries sit beside the target,
as hidden ``.<name>.*.tmp`` files. A failed write removes its temporary, file or folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_readable(folder: str | os.PathLike) -> None:
    """Give a staged folder (``mkdtemp`` makes it 0700) and the files in it the modes a plain
    ``mkdir``/``open`` would have, before it is renamed into place."""
    mask = _current_umask()
    folder = Path(folder)
    folder.chmod(0o777 & ~mask)
    for path in folder.iterdir():
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


STAGING_DIR_NAME = ".lungpipe-tmp"
_PROJECT_MARKERS = (".dvc", ".git")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_path(path: str | os.PathLike) -> None:
    """Remove a file, link or folder tree; nothing when it is already gone."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def sweep_stale(staging_root: str | os.PathLike) -> list[Path]:
    """Remove the entries of a staging folder whose process (the ``<pid>-`` prefix) is gone;
    returns what was removed."""
    removed = []
    root = Path(staging_root)
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        pid_text = entry.name.split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            remove_path(entry)
            removed.append(entry)
    return removed


def staging_root(target: str | os.PathLike) -> Path:
    """Where temporaries for ``target`` go (see the module doc); created, stale entries swept."""
    target = Path(os.path.abspath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    root: Path | None = None
    if os.environ.get("LUNGPIPE_TMP_DIR"):
        root = Path(os.environ["LUNGPIPE_TMP_DIR"])
    else:
        for parent in target.parents:
            if any((parent / marker).exists() for marker in _PROJECT_MARKERS):
                root = parent / STAGING_DIR_NAME
                break
    if root is None:
        return target.parent
    root.mkdir(parents=True, exist_ok=True)
    if os.stat(root).st_dev != os.stat(target.parent).st_dev:  # a rename across file systems is a copy
        return target.parent
    sweep_stale(root)
    return root


def _temp_name_parts(target: Path, root: Path, suffix: str) -> tuple[str, str]:
    prefix = f".{target.name}." if root == target.parent else f"{os.getpid()}-{target.name}."
    return prefix, suffix + ".tmp"


def staging_dir(target: str | os.PathLike) -> Path:
    """A new private folder in which to assemble ``target`` (a folder) before
    :func:`replace_dir`; the caller removes it on failure (:func:`remove_path`)."""
    target = Path(target)
    root = staging_root(target)
    prefix, suffix = _temp_name_parts(target, root, "")
    return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=root))


def replace_dir(staged: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the folder ``staged`` onto ``target``; an existing ``target`` is moved aside into
    the staging area first and removed after, so ``target`` is never half old, half new."""
    staged, target = Path(staged), Path(target)
    if not target.exists():
        os.replace(staged, target)
        return
    old = staging_dir(target)
    os.replace(target, old / "old")
    try:
        os.replace(staged, target)
    except BaseException:
        os.replace(old / "old", target)
        raise
    finally:
        remove_path(old)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces the folder ``target`` (made
    readable as a plain ``mkdir`` would be), on any exception it is removed."""
    staged = staging_dir(target)
    try:
        yield staged
        make_readable(staged)
        replace_dir(staged, target)
    except BaseException:
        remove_path(staged)
        raise


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path for ``target``; on success rename it onto ``target``.

    On any exception the temporary (a file, or a folder the caller made there) is removed and
    ``target`` is left untouched. ``suffix`` defaults to the target's own suffix so libraries
    that choose a format by extension (numpy, matplotlib) keep working.
    """
    target = Path(target)
    root = staging_root(target)
    prefix, tmp_suffix = _temp_name_parts(target, root, target.suffix if suffix is None else suffix)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=tmp_suffix, dir=root)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():  # mkstemp makes owner-only files; give the result the usual mode
            os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, target)
    except BaseException:
        remove_path(tmp_path)
        raise


def write_text(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json(target: str | os.PathLike, obj: Any) -> Path:
    return write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_yaml(target: str | os.PathLike, obj: Any) -> Path:
    return write_text(target, yaml.safe_dump(obj, sort_keys=False))


def write_csv(target: str | os.PathLike, frame) -> Path:
    """Write a pandas DataFrame as CSV (no index) atomically."""
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(target)
