"""Test helper: local server processes (an MLflow tracking server, ``mlflow models serve``,
PostgreSQL, torchrun's rendezvous): a free port, waiting until one answers, stopping it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TextIO


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, log: TextIO, *, timeout: float, what: str) -> None:
    """Poll ``url`` until it answers 200. If ``proc`` exits or ``timeout`` seconds pass first, raise
    RuntimeError: ``what`` and the end of the process's ``log`` (the file its output goes to)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.flush()
            raise RuntimeError(f"{what}:\n{Path(log.name).read_text()[-3000:]}")
        time.sleep(0.25)


def stop_process_group(proc: subprocess.Popen, *, grace: float) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session=True``); SIGKILL it
    when it has not exited after ``grace`` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
