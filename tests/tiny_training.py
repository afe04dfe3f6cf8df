"""Test helpers for the training engine: a tiny model and a task it can learn in seconds."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lungpipe.models.base import LungModel
from lungpipe.training.config import AugmentConfig, TrainConfig

T, F, K = 20, 8, 4


class TinyNet(LungModel):
    """Conv, BatchNorm, pooled over time, linear head: the mel band that lights up stays visible."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * F, K)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean(dim=2).flatten(1))


def separable_task(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class k lights up mel band k*2..k*2+1 (plus noise): linearly separable after pooling."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=n)
    x = rng.normal(0, 0.3, size=(n, T, F)).astype(np.float32)
    for i, k in enumerate(y):
        x[i, :, 2 * k : 2 * k + 2] += 2.0
    return x, y


def accuracy_eval(labels, probs):
    return {"accuracy": float((probs.argmax(1) == labels).mean())}


def quiet_cfg(**kw) -> TrainConfig:
    base = {"epochs": 6, "batch_size": 16, "lr": 3e-2, "warmup_epochs": 0.5, "selection_metric": "accuracy",
            "device": "cpu", "augment": AugmentConfig(freq_masks=0, time_masks=0)}
    base.update(kw)
    return TrainConfig(**base)
