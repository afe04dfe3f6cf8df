"""The training engine: one loop for every architecture.

It never special-cases a model: the loss comes from the model's ``training_loss`` hook (see
``lungpipe.models.base``). Per epoch it trains, predicts the validation set, scores it with the
caller's ``evaluate`` function, keeps the best checkpoint by ``cfg.selection_metric``, writes a
resumable ``last.pt``, tells the callbacks (MLflow logging, Optuna pruning), and stops early when
the validation metric has not improved for ``early_stopping_patience`` epochs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from rich.progress import TextColumn
from torch import nn

from lungpipe.augment import mixup, spec_augment
from lungpipe.progress import make_progress
from lungpipe.training import checkpoint
from lungpipe.training.config import TrainConfig
from lungpipe.training.data import SpectrogramDataset, class_weights, make_loader
from lungpipe.training.device import autocast, pick_device
from lungpipe.training.schedule import warmup_cosine
from lungpipe.training.seeding import seed_everything

log = logging.getLogger(__name__)

EvaluateFn = Callable[[np.ndarray, np.ndarray], dict[str, Any]]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class EpochCallback(Protocol):
    def __call__(self, epoch: int, record: dict[str, Any]) -> None: ...


@dataclass
class FitResult:
    best_epoch: int
    best_value: float
    history: list[dict[str, Any]]
    best_path: Path | None
    stopped_early: bool = False
    resumed_from_epoch: int | None = None
    device: str = "cpu"
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)


def run_signature(*parts: Any) -> str:
    """A short hash of everything that defines a run; a checkpoint resumes only the same run."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    name = cfg.optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use adam, adamw or sgd")


@torch.no_grad()
def predict_proba(
    model: nn.Module, dataset: SpectrogramDataset, *, batch_size: int = 64, device: torch.device | str = "cpu",
    amp: str = "auto", num_workers: int = 0,
) -> np.ndarray:
    """Class probabilities (N, K) for every row of ``dataset``, in order."""
    device = torch.device(device)
    model.eval().to(device)
    out = []
    for x, _ in make_loader(dataset, batch_size, shuffle=False, num_workers=num_workers):
        with autocast(device, amp):
            logits = model(x.to(device, non_blocking=True))
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def fit(
    model: nn.Module,
    train_ds: SpectrogramDataset,
    val_ds: SpectrogramDataset,
    cfg: TrainConfig,
    *,
    num_classes: int,
    evaluate: EvaluateFn,
    checkpoint_dir: Path | None = None,
    signature: str = "",
    callbacks: Sequence[EpochCallback] = (),
    progress: bool | None = None,
    description: str = "train",
) -> FitResult:
    """Train ``model`` and return the best epoch by ``cfg.selection_metric`` on ``val_ds``.

    With ``checkpoint_dir``, ``last.pt`` is written after every epoch and ``best.pt`` whenever the
    validation metric improves; if ``last.pt`` of the same ``signature`` exists, training resumes
    after its epoch (model, optimizer, schedule, RNG and history restored).
    """
    device = pick_device(cfg.device)
    generator = seed_everything(cfg.seed)
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    loader = make_loader(
        train_ds, cfg.batch_size, shuffle=True, num_workers=cfg.num_workers, generator=generator,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(loader) if cfg.max_steps_per_epoch <= 0 else min(len(loader), cfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = warmup_cosine(optimizer, total_steps, int(round(cfg.warmup_epochs * steps_per_epoch)), cfg.min_lr_ratio)
    weight = class_weights(train_ds.subset_labels, num_classes).to(device) if cfg.class_weighted else None
    ce = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)

    history: list[dict[str, Any]] = []
    best_value, best_epoch, start_epoch, stale = -math.inf, -1, 0, 0
    best_state: dict[str, torch.Tensor] | None = None
    resumed_from = None
    last_path = Path(checkpoint_dir) / checkpoint.LAST if checkpoint_dir else None
    best_path = Path(checkpoint_dir) / checkpoint.BEST if checkpoint_dir else None
    if last_path is not None and last_path.exists():
        state = checkpoint.load(last_path, map_location=device)
        if state.get("signature") == signature:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            checkpoint.restore_rng(state["rng"])
            generator.set_state(state["generator"])
            history = state["history"]
            best_value, best_epoch, stale = state["best_value"], state["best_epoch"], state["stale"]
            start_epoch = resumed_from = state["epoch"] + 1
            log.info("resuming %s from epoch %d (%s)", description, start_epoch, last_path)
        else:
            log.warning("%s belongs to another configuration; starting afresh", last_path)

    stopped_early = False
    if cfg.early_stopping_patience and stale >= cfg.early_stopping_patience:
        stopped_early = True  # a finished, early-stopped run that is re-invoked stays finished
    val_labels = val_ds.subset_labels
    with make_progress(
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("val {task.fields[val]}"), disable=progress is False
        if progress is not None else None,
    ) as bar:
        task = bar.add_task(description, total=cfg.epochs * steps_per_epoch, loss=float("nan"), val="-")
        bar.update(task, completed=start_epoch * steps_per_epoch)
        for epoch in range(start_epoch, cfg.epochs):
            if stopped_early:
                break
            t0 = time.perf_counter()
            model.train()
            loss_sum, n_seen, parts_sum = 0.0, 0, {}
            for step, (x, y) in enumerate(loader):
                if step >= steps_per_epoch:
                    break
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                x = spec_augment(x, cfg.augment, generator)
                criterion = ce
                if cfg.augment.mixup_alpha > 0 and torch.rand(1, generator=generator).item() < cfg.augment.mixup_prob:
                    x, y_a, y_b, lam = mixup(x, y, cfg.augment.mixup_alpha, generator)
                    criterion = _mixed_criterion(ce, y_b, lam)
                with autocast(device, cfg.amp):
                    out = model.training_loss(x, y, criterion)
                loss = out.loss.float()
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(f"{description}: loss is {loss.item()} at epoch {epoch} step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                loss_sum += loss.item() * len(y)
                n_seen += len(y)
                for key, value in out.parts.items():
                    parts_sum[key] = parts_sum.get(key, 0.0) + float(value) * len(y)
                bar.update(task, advance=1, loss=loss_sum / n_seen)
            probs = predict_proba(model, val_ds, batch_size=cfg.eval_batch_size, device=device, amp=cfg.amp)
            val_metrics = evaluate(val_labels, probs)
            if cfg.selection_metric not in val_metrics:
                raise KeyError(
                    f"selection_metric {cfg.selection_metric!r} not among the validation metrics {sorted(val_metrics)}"
                )
            value = val_metrics[cfg.selection_metric]
            value = -math.inf if value is None else float(value)
            record = {
                "epoch": epoch,
                "train_loss": loss_sum / max(n_seen, 1),
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - t0,
                **{f"train_{k}": v / max(n_seen, 1) for k, v in parts_sum.items()},
                **{f"val_{k}": v for k, v in val_metrics.items() if isinstance(v, (int, float)) or v is None},
            }
            history.append(record)
            improved = value > best_value
            if improved:
                best_value, best_epoch, stale = value, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                if best_path is not None:
                    checkpoint.save(best_path, {"model": best_state, "epoch": epoch, "value": value,
                                                "metric": cfg.selection_metric, "signature": signature})
            else:
                stale += 1
            if cfg.early_stopping_patience and stale >= cfg.early_stopping_patience:
                stopped_early = True
            if last_path is not None:
                checkpoint.save(last_path, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": checkpoint.rng_state(),
                    "generator": generator.get_state(), "history": history, "epoch": epoch,
                    "best_value": best_value, "best_epoch": best_epoch, "stale": stale, "signature": signature,
                })
            bar.update(task, val=f"{cfg.selection_metric} {value:.3f} (best {best_value:.3f}@{best_epoch})")
            for cb in callbacks:
                cb(epoch, record)
            if stopped_early:
                log.info("%s: early stop at epoch %d (best %d)", description, epoch, best_epoch)

    if best_state is None and best_path is not None and best_path.exists():
        best_state = checkpoint.load(best_path)["model"]
    return FitResult(
        best_epoch=best_epoch, best_value=best_value, history=history, best_path=best_path,
        stopped_early=stopped_early, resumed_from_epoch=resumed_from, device=str(device), best_state=best_state,
    )


def _mixed_criterion(ce: nn.Module, y_b: torch.Tensor, lam: float):
    def criterion(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return lam * ce(logits, y) + (1.0 - lam) * ce(logits, y_b)

    return criterion
