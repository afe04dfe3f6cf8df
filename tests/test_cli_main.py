"""`python -m lungpipe` runs the command line, as the installed `lungpipe` script does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lungpipe", *args], check=False, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)}, timeout=120)


def test_python_m_lungpipe_help_lists_the_commands():
    result = _module("--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    for command in ("data", "models", "tune", "evaluate", "report", "predict"):
        assert command in result.stdout


def test_python_m_lungpipe_rejects_an_unknown_command():
    result = _module("no-such-command")
    assert result.returncode != 0 and "No such command" in result.stdout + result.stderr
