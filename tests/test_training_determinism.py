"""Deterministic CPU training: the same inputs give the same bits."""

from __future__ import annotations

import numpy as np
import torch
from tiny_training import K, TinyNet, accuracy_eval, quiet_cfg, separable_task

from lungpipe.training.config import AugmentConfig
from lungpipe.training.data import SpectrogramDataset
from lungpipe.training.engine import fit


class NoisyDataset(SpectrogramDataset):
    """Adds numpy noise in ``__getitem__``: in loader workers, only seeded workers repeat it."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x + torch.from_numpy(np.random.normal(0, 0.1, size=x.shape).astype(np.float32)), y


def _run(seed: int):
    x, y = separable_task(96)
    xv, yv = separable_task(32, seed=1)
    torch.manual_seed(123)  # same init every time
    model = TinyNet()
    cfg = quiet_cfg(epochs=2, seed=seed, num_workers=2, threads=2, ma_update=True, augment=AugmentConfig(
        mode="release", mixup_alpha=0.4, mixup_prob=1.0))
    res = fit(model, NoisyDataset(x, y), SpectrogramDataset(xv, yv), cfg, num_classes=K, evaluate=accuracy_eval,
              progress=False)
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in res.history]
    return model.state_dict(), history


def test_two_runs_from_the_same_inputs_give_identical_weights_and_history():
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    threads_before = torch.get_num_threads()
    a, hist_a = _run(seed=0)
    b, hist_b = _run(seed=0)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert hist_a == hist_b
    c, hist_c = _run(seed=1)  # another seed: other data order, augmentation and worker noise
    assert not all(torch.equal(a[k], c[k]) for k in a) and hist_a != hist_c
    # fit leaves the process's settings as it found them
    assert torch.are_deterministic_algorithms_enabled() == deterministic_before
    assert torch.get_num_threads() == threads_before
