"""Checkpoints hold tensors and plain data only, load with the safe unpickler, and refuse the rest."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from tiny_training import K, TinyNet, quiet_cfg, separable_task

from lungpipe.training import checkpoint
from lungpipe.training.checkpoint import Checkpointer, UnsafeCheckpointError
from lungpipe.training.data import SpectrogramDataset
from lungpipe.training.engine import fit


class _CreatesAFile:
    """Unpickling this calls open(target, "w"): a stand-in for any code a crafted file could run."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return open, (self.target, "w")


def test_a_crafted_checkpoint_is_refused_nothing_runs_and_the_error_names_the_file(tmp_path):
    target = tmp_path / "pwned.txt"
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    evil = ckpt_dir / checkpoint.LAST
    torch.save({"signature": "s", "payload": _CreatesAFile(target)}, evil)
    with pytest.raises(UnsafeCheckpointError) as info:
        Checkpointer(ckpt_dir, "s").resume_state()
    assert f"refusing to load {evil}" in str(info.value) and "delete it" in str(info.value)
    assert not target.exists()
    x, y = separable_task(16)
    ds = SpectrogramDataset(x, y)
    with pytest.raises(UnsafeCheckpointError, match=str(evil)):  # training refuses to resume from it
        fit(TinyNet(), ds, ds, quiet_cfg(epochs=1), num_classes=K, evaluate=lambda l, p: {"accuracy": 0.0},
            checkpoint_dir=ckpt_dir, signature="s", progress=False)
    assert not target.exists()
    torch.load(evil, weights_only=False)  # the file is a live attack: the unsafe loader runs it
    assert target.exists()


def test_rng_states_survive_the_safe_loader(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # numpy caches a gaussian: part of its state
    path = checkpoint.save(tmp_path / "rng.pt", {"rng": checkpoint.rng_state()})
    expected = (random.random(), np.random.normal(), torch.rand(1).item())
    checkpoint.restore_rng(torch.load(path, weights_only=True)["rng"])
    assert (random.random(), np.random.normal(), torch.rand(1).item()) == expected


def test_checkpoints_written_by_fit_load_with_weights_only(tmp_path):
    x, y = separable_task(32)
    ds = SpectrogramDataset(x, y)

    def numpy_metrics(labels, probs):  # evaluate functions may return numpy scalars
        return {"accuracy": np.float64((probs.argmax(1) == labels).mean()), "n": np.int64(len(labels))}

    fit(TinyNet(), ds, ds, quiet_cfg(epochs=2), num_classes=K, evaluate=numpy_metrics, checkpoint_dir=tmp_path,
        signature="sig", progress=False)
    last = torch.load(tmp_path / checkpoint.LAST, weights_only=True)
    best = torch.load(tmp_path / checkpoint.BEST, weights_only=True)
    assert last["epoch"] == 1 and last["signature"] == "sig" and best["metric"] == "accuracy"
    assert type(last["history"][0]["val_accuracy"]) is float and type(last["best_value"]) is float
    res = fit(TinyNet(), ds, ds, quiet_cfg(epochs=3), num_classes=K, evaluate=numpy_metrics,
              checkpoint_dir=tmp_path, signature="sig", progress=False)
    assert res.resumed_from_epoch == 2 and len(res.history) == 3
