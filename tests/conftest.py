"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_icbhi_dir() -> Path:
    env = os.environ.get("LUNGPIPE_SHARED")
    base = Path(env) if env else REPO_ROOT.parent / "shared"
    return base / "icbhi"


@pytest.fixture(scope="session")
def shared_icbhi() -> Path:
    """The real ICBHI metadata in ../shared/icbhi (annotations, official split, file-name
    differences, diagnoses). Tests using it are skipped when it is absent (a user's clone)."""
    path = _shared_icbhi_dir()
    if not (path / "official_split.txt").is_file():
        pytest.skip(f"real ICBHI metadata not found at {path} (set LUNGPIPE_SHARED)")
    return path


def _threads_per_process() -> int:
    """CPU threads for torch in this test process and the processes it starts: the machine's cores
    shared among the pytest-xdist workers (``-n``), at most 2. More threads than free cores is far
    slower, not faster: torch's OpenMP workers wait on each other when one of them is descheduled
    (measured: a CNN6 step 10x slower with 2 threads beside another busy process on 2 cores)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(2, (os.cpu_count() or 1) // workers))


THREADS = _threads_per_process()
# Read when torch loads (in the subprocesses the tests start: stages, workers, servers); tests that
# need another value set it in the child's environment themselves. Set, not defaulted: the xdist
# workers inherit the controller's environment, where the worker count is not known yet.
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(THREADS)
# Every `dvc` command the tests run (and DVC's own queue workers) would start an analytics daemon,
# another Python process, that tries to post a usage report (tests/tiny_project.py already sets it).
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Tests share the cores with each other (xdist workers) and whatever else runs: keep torch's
    intra-op pool small."""
    try:
        import torch

        torch.set_num_threads(THREADS)
    except ImportError:  # pragma: no cover
        pass
    yield


def pytest_collection_modifyitems(config, items):
    """Files with ``slow`` tests run first: pytest-xdist (``--dist loadfile``, in pyproject's
    addopts) hands whole files to its workers in this order, so the long ones start early instead
    of leaving one worker busy at the end. Within a file the order stays as written."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the rest keep their order
