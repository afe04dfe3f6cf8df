"""Class probabilities of a model over a dataset (validation during training, test scoring)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from lungpipe.training.data import SpectrogramDataset, make_loader
from lungpipe.training.device import autocast
from lungpipe.training.placement import wants_channels_last


@torch.no_grad()
def predict_loader(model: nn.Module, loader: DataLoader, device: torch.device, amp: str = "auto") -> np.ndarray:
    """Softmax probabilities (N, K) for every batch of ``loader``, in order; kept on the device
    until the end, so the loop does not wait on the host per batch."""
    model.eval()
    channels_last = wants_channels_last(model, device)
    out = []
    for x, _ in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(x)
        out.append(torch.softmax(logits.float(), dim=1))
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).cpu().numpy().astype(np.float32)


def predict_proba(
    model: nn.Module, dataset: SpectrogramDataset, *, batch_size: int = 64, device: torch.device | str = "cpu",
    amp: str = "auto", num_workers: int = 0,
) -> np.ndarray:
    """Class probabilities (N, K) for every row of ``dataset``, in order."""
    device = torch.device(device)
    model.eval().to(device)
    loader = make_loader(dataset, batch_size, shuffle=False, num_workers=num_workers,
                         pin_memory=device.type == "cuda")
    return predict_loader(model, loader, device, amp)
