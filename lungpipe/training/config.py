"""Typed configuration of a training run (built by stages from params.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lungpipe.augment import AugmentConfig
from lungpipe.config import require, require_choice

OPTIMIZERS = ("adam", "adamw", "sgd")
AMP_MODES = ("auto", "bf16", "off")
SELECTIONS = ("validation", "test")

__all__ = ["AugmentConfig", "SplitConfig", "TrainConfig"]


@dataclass
class TrainConfig:
    """Everything the engine needs besides the model and the data."""

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"  # "adam" | "adamw" | "sgd"
    lr: float = 1e-3
    weight_decay: float = 1e-6
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 1e-3  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # 0 disables clipping
    class_weighted: bool = True
    label_smoothing: float = 0.0
    early_stopping_patience: int = 0  # 0 disables early stopping
    selection_metric: str = "auto"  # validation metric that picks the best epoch (auto: the task's headline)
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    amp: str = "auto"  # "auto" (bf16 on CUDA) | "bf16" | "off"
    eval_batch_size: int = 64
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_steps_per_epoch: int = 0  # 0 = whole epoch; >0 caps steps (smoke runs, benchmarks)

    def __post_init__(self) -> None:
        require(self, "epochs", self.epochs >= 1, "must be >= 1")
        require(self, "batch_size", self.batch_size >= 1, "must be >= 1")
        require(self, "eval_batch_size", self.eval_batch_size >= 1, "must be >= 1")
        require_choice(self, "optimizer", OPTIMIZERS)
        require(self, "lr", self.lr > 0 and self.lr == self.lr, "must be > 0")
        require(self, "weight_decay", self.weight_decay >= 0, "must be >= 0")
        require(self, "warmup_epochs", self.warmup_epochs >= 0, "must be >= 0")
        require(self, "min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "must be between 0 and 1")
        require(self, "grad_clip", self.grad_clip >= 0, "must be >= 0 (0 disables clipping)")
        require(self, "label_smoothing", 0 <= self.label_smoothing < 1, "must be in [0, 1)")
        require(self, "early_stopping_patience", self.early_stopping_patience >= 0, "must be >= 0 (0 disables it)")
        require(self, "num_workers", self.num_workers >= 0, "must be >= 0")
        require(self, "max_steps_per_epoch", self.max_steps_per_epoch >= 0, "must be >= 0 (0 = whole epoch)")
        require_choice(self, "amp", AMP_MODES)
        require(self, "device", self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
                "must be auto, cpu, cuda, cuda:<index> or mps")


@dataclass
class SplitConfig:
    """How the training split is divided, patient-wise, into train and validation."""

    val_fraction: float = 0.2
    seed: int = 0
    selection: str = "validation"  # "validation" | "test" (reproduces published numbers; labelled)

    def __post_init__(self) -> None:
        require(self, "val_fraction", 0 < self.val_fraction < 1, "must be between 0 and 1 (exclusive)")
        require_choice(self, "selection", SELECTIONS)
