"""Typed configuration of a training run (built by stages from params.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lungpipe.training.augment_config import AugmentConfig
from lungpipe.util.typed_config import require, require_choice

__all__ = ["AMP_MODES", "OPTIMIZERS", "SCHEDULES", "SELECTIONS", "AugmentConfig", "SplitConfig", "TrainConfig"]

OPTIMIZERS = ("adam", "adamw", "sgd")
#: see lungpipe.training.schedule
SCHEDULES = ("warmup_cosine", "cosine_per_epoch", "htsat_steps")
#: see lungpipe.training.device; CPU always trains in float32
AMP_MODES = ("auto", "bf16", "fp16", "off")
SELECTIONS = ("validation", "test")


@dataclass
class TrainConfig:
    """Everything the engine needs besides the model and the data."""

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"  # "adam" | "adamw" | "sgd"
    lr: float = 1e-3
    weight_decay: float = 1e-6
    schedule: str = "warmup_cosine"  # "warmup_cosine" (per step) | "cosine_per_epoch" | "htsat_steps"
    warmup_epochs: float = 1.0  # warmup_cosine only
    min_lr_ratio: float = 1e-3  # the cosine schedules decay to lr * min_lr_ratio
    grad_clip: float = 1.0  # 0 disables clipping
    class_weighted: bool = True  # false: plain, unweighted cross-entropy
    label_smoothing: float = 0.0
    ma_update: bool = False  # weight moving average after every optimizer step (patch-mix / ADD4RSC)
    ma_beta: float = 0.5  # w <- ma_beta * w_before_step + (1 - ma_beta) * w_after_step
    drop_last: bool = False  # drop the last incomplete training batch (a batch of 1 is always dropped)
    early_stopping_patience: int = 0  # 0 disables early stopping
    selection_metric: str = "auto"  # validation metric that picks the best epoch (auto: the task's headline)
    seed: int = 0
    deterministic: bool = True  # torch.use_deterministic_algorithms (warn-only where an op has no such variant)
    threads: int = 0  # CPU threads of torch; 0 keeps torch's default. Same value => same bits on CPU
    num_workers: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    amp: str = "auto"  # "auto" (bf16 on CUDA) | "bf16" | "fp16" (with a gradient scaler) | "off"
    compile: bool = False  # torch.compile the model's forward
    sync_batchnorm: bool = False  # under torchrun: BatchNorm statistics over the global batch (MRINet's release)
    log_every: int = 50  # optimizer steps between host reads of the running loss (progress, non-finite check)
    eval_batch_size: int = 64
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_steps_per_epoch: int = 0  # 0 = whole epoch; >0 caps steps (smoke runs, benchmarks)

    def __post_init__(self) -> None:
        require(self, "epochs", self.epochs >= 1, "must be >= 1")
        require(self, "batch_size", self.batch_size >= 1, "must be >= 1")
        require(self, "eval_batch_size", self.eval_batch_size >= 1, "must be >= 1")
        require_choice(self, "optimizer", OPTIMIZERS)
        require_choice(self, "schedule", SCHEDULES)
        require(self, "lr", self.lr > 0 and self.lr == self.lr, "must be > 0")
        require(self, "weight_decay", self.weight_decay >= 0, "must be >= 0")
        require(self, "warmup_epochs", self.warmup_epochs >= 0, "must be >= 0")
        require(self, "min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "must be between 0 and 1")
        require(self, "grad_clip", self.grad_clip >= 0, "must be >= 0 (0 disables clipping)")
        require(self, "label_smoothing", 0 <= self.label_smoothing < 1, "must be in [0, 1)")
        require(self, "ma_beta", 0 <= self.ma_beta < 1, "must be in [0, 1)")
        require(self, "early_stopping_patience", self.early_stopping_patience >= 0, "must be >= 0 (0 disables it)")
        require(self, "threads", self.threads >= 0, "must be >= 0 (0: torch's default)")
        require(self, "num_workers", self.num_workers >= 0, "must be >= 0")
        require(self, "log_every", self.log_every >= 1, "must be >= 1")
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
    scheme: str = "official"  # train/test split of the manifest (lungpipe.data.split.SplitScheme; applied there)

    def __post_init__(self) -> None:
        require(self, "val_fraction", 0 < self.val_fraction < 1, "must be between 0 and 1 (exclusive)")
        require_choice(self, "selection", SELECTIONS)
