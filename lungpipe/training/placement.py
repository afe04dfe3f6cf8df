"""Where and how this process takes part in training: the seam for data-parallel training.

:class:`SingleProcess` is one process on one device. A distributed placement (DDP under torchrun)
replaces its four hooks: the training loader (a ``DistributedSampler``), ``start_epoch`` (its
``set_epoch``), ``wrap`` (DistributedDataParallel, SyncBatchNorm) and ``writer`` (rank 0 alone
writes checkpoints and calls the epoch callbacks); ``gather`` collects validation probabilities
from all ranks in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from lungpipe.training.config import TrainConfig
from lungpipe.training.data import SpectrogramDataset, make_loader


def wants_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Models that declare ``prefers_channels_last`` (the CNNs) run channels-last on CUDA."""
    return device.type == "cuda" and bool(getattr(model, "prefers_channels_last", False))


@dataclass
class SingleProcess:
    device: torch.device
    writer: bool = True

    def prepare(self, model: nn.Module, cfg: TrainConfig) -> nn.Module:
        """Move ``model`` to the device (channels-last when it asks for it) and compile it if asked.
        Returns the module the training step calls."""
        model.to(self.device)
        if wants_channels_last(model, self.device):
            model.to(memory_format=torch.channels_last)
        if cfg.compile:
            model.compile()  # in place: state_dict keys and training_loss stay as they are
        return self.wrap(model)

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def train_loader(self, dataset: SpectrogramDataset, cfg: TrainConfig, generator: torch.Generator) -> DataLoader:
        return make_loader(dataset, cfg.batch_size, shuffle=True, num_workers=cfg.num_workers, generator=generator,
                           pin_memory=self.device.type == "cuda", drop_last=cfg.drop_last)

    def eval_loader(self, dataset: SpectrogramDataset, cfg: TrainConfig) -> DataLoader:
        return make_loader(dataset, cfg.eval_batch_size, shuffle=False, num_workers=cfg.num_workers,
                           pin_memory=self.device.type == "cuda")

    def start_epoch(self, loader: DataLoader, epoch: int) -> None:
        """Nothing to do for one process (a DistributedSampler's ``set_epoch`` goes here)."""

    def gather(self, probs: np.ndarray) -> np.ndarray:
        return probs
