"""A tiny, real copy of this repository for end-to-end tests of the DVC pipeline.

``make_tiny_project(dst)`` copies the git-tracked files of the working tree (the code, stage
scripts, dvc.yaml; not the committed outputs dvc.lock, metrics/, plots/), ``git init``s and
commits it, and writes a tiny params.yaml derived from the repository's: one cheap architecture
(cnn6, small preset), a synthetic set of a dozen patients with short cycles, 2 tuning trials ×
1 epoch, 1 training epoch. Stages run there with ``PYTHONPATH`` set to the copy, so the copy's
code is what runs (and what a test may edit).

    from tiny_project import make_tiny_project, run
    project = make_tiny_project(tmp_path / "proj")
    run(project, "dvc", "repro")
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
#: Committed outputs that a fresh project regenerates (copying them would make DVC see stale outputs).
_NOT_COPIED = ("dvc.lock", "metrics/", "plots/", "data/")
ARCH = "cnn6"


def tracked_files(repo: Path = REPO) -> list[str]:
    """Git-tracked files of ``repo`` that exist in its working tree (uncommitted edits included)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            check=True, capture_output=True).stdout.decode().split("\0")
    return [f for f in listed if f and (repo / f).is_file() and not f.startswith(_NOT_COPIED)]


def tiny_params(base: dict[str, Any], seeds: list[int] | None = None) -> dict[str, Any]:
    """The repository's params with every size cut down (only keys the pipeline already has)."""
    params = yaml.safe_load(yaml.safe_dump(base))  # deep copy
    data = params["data"]
    data.update(source="synth", folds=["official"])
    data["synth"] = {"seed": 0, "n_patients": 12, "recordings_per_patient": [1, 2], "cycles_per_recording": [4, 6],
                     "cycle_duration_s": [1.0, 1.5], "multichannel_prob": 0.0}
    params["frontends"] = {"small": {
        "cycle": {"sample_rate": 4000, "max_len_s": 1.0, "pad": "repeat"},
        "frontend": {"kind": "kaldi_fbank", "n_mels": 32, "frame_length_ms": 25.0, "frame_shift_ms": 20.0},
        "norm": {"mode": "train_stats"}}}
    arch = dict(params["arch"][ARCH])
    arch.update(frontend="small", model={"preset": "small"}, train={"epochs": 1})
    params["arch"] = {ARCH: arch}
    train = params["train"]
    train["seeds"] = seeds if seeds is not None else [0, 1]
    train["use_tuned"] = True
    train["defaults"].update(epochs=1, batch_size=16)
    if "architectures" in train:
        train["architectures"] = [ARCH]
    params["evaluate"] = {"n_boot": 50, "seed": 0}
    tuning = params["tuning"]
    tuning.update(architectures=[ARCH], n_trials=2, epochs=1, pruner="none", storage=None)
    tuning["space"] = {ARCH: {"train.lr": {"type": "float", "low": 0.0005, "high": 0.005, "log": True}}}
    return params


def env(project: Path) -> dict[str, str]:
    out = dict(os.environ)
    out.update(PYTHONPATH=str(project), MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}",
               LUNGPIPE_LOG="WARNING", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="tiny", GIT_AUTHOR_EMAIL="tiny@example.com", GIT_COMMITTER_NAME="tiny",
               GIT_COMMITTER_EMAIL="tiny@example.com")
    out.pop("LUNGPIPE_PARAMS", None)
    return out


def run(project: Path, *cmd: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``cmd`` in the project (its own code first on the path); a failure shows the output."""
    done = subprocess.run(list(cmd), check=False, cwd=project, env=env(project), capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n"
                             f"{done.stderr[-6000:]}")
    return done


def make_tiny_project(dst: Path, *, seeds: list[int] | None = None) -> Path:
    """Copy the working tree into ``dst`` with tiny params and make it a git repository."""
    dst = Path(dst)
    dst.mkdir(parents=True)
    for rel in tracked_files():
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    base = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    (dst / "params.yaml").write_text(yaml.safe_dump(tiny_params(base, seeds), sort_keys=False), encoding="utf-8")
    run(dst, "git", "init", "-q")
    run(dst, "git", "add", "-A")
    run(dst, "git", "commit", "-q", "-m", "tiny project")
    return dst
