"""The optimizer and the main loss of a training run."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lungpipe.training.config import TrainConfig
from lungpipe.training.data import class_weights

#: SGD's momentum (Nesterov); Adam and AdamW keep torch's betas (0.9, 0.999) and eps 1e-8.
SGD_MOMENTUM = 0.9


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device | str = "cpu") -> torch.optim.Optimizer:
    """``cfg.optimizer`` over the trainable parameters. On CUDA, Adam and AdamW use the fused kernel
    (one launch for all tensors, and no host sync under a float16 gradient scaler)."""
    params = [p for p in model.parameters() if p.requires_grad]
    name = cfg.optimizer.lower()
    fused = {"fused": True} if torch.device(device).type == "cuda" else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=SGD_MOMENTUM, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use adam, adamw or sgd")


def build_criterion(cfg: TrainConfig, train_labels: np.ndarray, num_classes: int,
                    device: torch.device | str = "cpu") -> nn.CrossEntropyLoss:
    """Cross-entropy; with ``class_weighted`` each class weighs its inverse frequency in
    ``train_labels``, without it the loss is plain and unweighted (``weight`` is None)."""
    weight = class_weights(train_labels, num_classes).to(device) if cfg.class_weighted else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
