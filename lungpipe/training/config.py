"""Typed configuration of a training run (built by stages from params.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lungpipe.augment import AugmentConfig

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


@dataclass
class SplitConfig:
    """How the training split is divided, patient-wise, into train and validation."""

    val_fraction: float = 0.2
    seed: int = 0
    selection: str = "validation"  # "validation" | "test" (reproduces published numbers; labelled)
    scheme: str = "official"  # train/test split of the manifest (lungpipe.data.split.SplitScheme; applied there)
