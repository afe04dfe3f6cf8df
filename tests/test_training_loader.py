"""Training and evaluation loaders: which batches they yield."""

from __future__ import annotations

import numpy as np
import torch
from tiny_training import quiet_cfg

from lungpipe.training.data import SpectrogramDataset, make_loader
from lungpipe.training.placement import SingleProcess


def _ds(n: int) -> SpectrogramDataset:
    return SpectrogramDataset(np.zeros((n, 4, 2), np.float32), np.arange(n) % 4)


def _sizes(loader) -> list[int]:
    return [len(y) for _, y in loader]


def test_drop_last_drops_the_incomplete_training_batch_only_when_asked():
    gen = torch.Generator().manual_seed(0)
    assert _sizes(make_loader(_ds(20), 8, shuffle=True, generator=gen)) == [8, 8, 4]
    assert _sizes(make_loader(_ds(20), 8, shuffle=True, generator=gen, drop_last=True)) == [8, 8]
    assert _sizes(make_loader(_ds(17), 8, shuffle=True, generator=gen)) == [8, 8]  # a batch of 1 breaks BatchNorm
    assert _sizes(make_loader(_ds(5), 8, shuffle=True, generator=gen, drop_last=True)) == [5]  # never empty
    assert _sizes(make_loader(_ds(20), 8, shuffle=False, drop_last=True)) == [8, 8, 4]  # evaluation sees all rows


def test_the_placement_builds_the_training_loader_from_the_config():
    place = SingleProcess(torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    assert _sizes(place.train_loader(_ds(20), quiet_cfg(batch_size=8, drop_last=True), gen)) == [8, 8]
    assert _sizes(place.train_loader(_ds(20), quiet_cfg(batch_size=8), gen)) == [8, 8, 4]
    assert _sizes(place.eval_loader(_ds(20), quiet_cfg(eval_batch_size=16))) == [16, 4]
    order_a = [y.tolist() for _, y in place.train_loader(_ds(20), quiet_cfg(batch_size=8),
                                                          torch.Generator().manual_seed(1))]
    order_b = [y.tolist() for _, y in place.train_loader(_ds(20), quiet_cfg(batch_size=8),
                                                          torch.Generator().manual_seed(1))]
    assert order_a == order_b
