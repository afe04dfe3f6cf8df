"""Learning-rate schedules: values at known steps, through a real optimizer and through fit."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from tiny_training import K, TinyNet, accuracy_eval, quiet_cfg, separable_task

from lungpipe.training.data import SpectrogramDataset
from lungpipe.training.engine import fit
from lungpipe.training.schedule import build_schedule, htsat_factor


def _lrs(schedule: str, steps: int, base_lr: float = 0.1, **kw) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = build_schedule(opt, schedule, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_cosine_values_at_known_steps():
    lrs = _lrs("warmup_cosine", 101, base_lr=1.0, epochs=10, steps_per_epoch=10, warmup_epochs=1.0, min_lr_ratio=1e-3)
    assert lrs[0] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.5) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)  # cosine starts at the top
    assert lrs[55] == pytest.approx(1e-3 + (1 - 1e-3) * 0.5)  # half-way through the decay
    assert lrs[100] == pytest.approx(1e-3)  # the floor after the last step
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_cosine_per_epoch_holds_per_epoch_and_ends_at_the_floor():
    spe, epochs = 3, 50
    lrs = _lrs("cosine_per_epoch", spe * epochs, base_lr=5e-5, epochs=epochs, steps_per_epoch=spe, min_lr_ratio=1e-3)
    per_epoch = [lrs[e * spe] for e in range(epochs)]
    assert all(lrs[e * spe + i] == per_epoch[e] for e in range(epochs) for i in range(spe))
    first = 1e-3 + (1 - 1e-3) * (1 + math.cos(math.pi / 50)) / 2  # the release counts epochs from 1
    assert per_epoch[0] == pytest.approx(5e-5 * first) and first == pytest.approx(0.999014351, abs=1e-9)
    assert per_epoch[24] == pytest.approx(5e-5 * 0.5005)
    assert per_epoch[49] == pytest.approx(5e-5 * 1e-3)


@pytest.mark.parametrize("epoch,factor", [(0, 0.02), (1, 0.05), (2, 0.1), (3, 0.1), (10, 0.1), (11, 0.05),
                                          (20, 0.05), (21, 0.02), (30, 0.02), (31, 0.03), (99, 0.03)])
def test_htsat_steps_multipliers(epoch, factor):
    assert htsat_factor(epoch) == factor
    lrs = _lrs("htsat_steps", 2 * (epoch + 1), base_lr=1e-3, epochs=100, steps_per_epoch=2)
    assert lrs[2 * epoch] == pytest.approx(1e-3 * factor) and lrs[2 * epoch + 1] == pytest.approx(1e-3 * factor)


def test_fit_trains_with_the_named_schedule():
    x, y = separable_task(32)
    ds = SpectrogramDataset(x, y)
    res = fit(TinyNet(), ds, ds, quiet_cfg(epochs=4, lr=1e-2, schedule="htsat_steps"), num_classes=K,
              evaluate=accuracy_eval, progress=False)
    # each record's lr is the one the next epoch starts with
    assert [h["lr"] for h in res.history] == pytest.approx([1e-2 * htsat_factor(e + 1) for e in range(4)])
