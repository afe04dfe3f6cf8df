"""Exclusive use of an output folder by one process, and a writability check before long work.

The train stage holds :class:`FolderLock` on its checkpoint folder for as long as it trains, so a
second trainer (e.g. a new ``dvc repro`` while the trainer of a killed ``dvc repro`` still runs)
refuses to start and names the PID that holds the folder. The lock is ``fcntl.flock`` on a lock
file with the holder's PID inside: the kernel releases it when the holder dies, however it dies,
so a lock left by a dead process is simply taken over (and said so).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import tempfile
from pathlib import Path
from types import TracebackType

from lungpipe.util.errors import LungpipeError, TrainingLockedError

log = logging.getLogger(__name__)

LOCK_NAME = "train.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """``with FolderLock(folder):`` — hold ``folder/train.lock`` exclusively or raise
    :class:`~lungpipe.util.errors.TrainingLockedError` naming the PID that holds it."""

    def __init__(self, folder: str | os.PathLike, what: str = "trainer"):
        self.folder = Path(folder)
        self.file = self.folder / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        ensure_writable(self.folder)
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            who = f"PID {holder}" if holder else "another process"
            raise TrainingLockedError(
                f"{self.folder} is in use by another {self.what} ({who}, still running); wait for it to finish "
                f"or stop it (kill {holder or '<pid>'}), then run again") from None
        previous = _read_pid(fd)
        if previous and previous != os.getpid():
            state = "no longer running" if not _pid_alive(previous) else "its lock was released"
            log.warning("%s: taking over the lock left by PID %d (%s)", self.folder, previous, state)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove a file can be written in it; otherwise raise a
    LungpipeError naming the folder (so a read-only output folder fails before training, not
    after it)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise LungpipeError(f"{folder}: output folder is not writable ({exc.strerror or exc}); "
                            "fix its permissions or free space, then run again") from None
    return folder
