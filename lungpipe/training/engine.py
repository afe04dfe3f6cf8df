"""The training engine: one loop for every architecture.

It never special-cases a model: the loss comes from the model's ``training_loss`` hook (see
``lungpipe.models.base``). Per epoch it trains (:class:`~lungpipe.training.step.TrainStep`),
predicts the validation set, scores it with the caller's ``evaluate`` function, keeps the best
epoch by ``cfg.selection_metric`` (:class:`~lungpipe.training.selection.BestEpoch`), writes a
resumable ``last.pt`` (:class:`~lungpipe.training.checkpoint.Checkpointer`), tells the callbacks
(MLflow logging, Optuna pruning), and stops early when the validation metric has not improved for
``early_stopping_patience`` epochs. Where it runs and who writes is the placement's business
(:mod:`lungpipe.training.placement`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from lungpipe.training.checkpoint import Checkpointer, plain, restore_rng, rng_state
from lungpipe.training.config import TrainConfig
from lungpipe.training.data import SpectrogramDataset
from lungpipe.training.device import pick_device
from lungpipe.training.display import FitDisplay
from lungpipe.training.optim import build_criterion, build_optimizer
from lungpipe.training.placement import SingleProcess
from lungpipe.training.probabilities import predict_loader, predict_proba
from lungpipe.training.seeding import determinism, seed_everything
from lungpipe.training.selection import BestEpoch
from lungpipe.training.step import LossMeter, NonFiniteLossError, TrainStep

__all__ = ["EpochCallback", "FitResult", "NonFiniteLossError", "build_optimizer", "fit", "predict_proba",
           "run_signature"]

log = logging.getLogger(__name__)

EvaluateFn = Callable[[np.ndarray, np.ndarray], dict[str, Any]]


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


@dataclass
class _Run:
    """What one training run holds while it trains."""

    cfg: TrainConfig
    placement: SingleProcess
    model: nn.Module
    step: TrainStep
    loader: DataLoader
    val_loader: DataLoader
    val_labels: np.ndarray
    steps_per_epoch: int
    generator: torch.Generator
    description: str

    @classmethod
    def build(cls, model, train_ds, val_ds, cfg, num_classes, placement, generator, description) -> _Run:
        model = placement.prepare(model, cfg)
        loader = placement.train_loader(train_ds, cfg, generator)
        spe = len(loader) if cfg.max_steps_per_epoch <= 0 else min(len(loader), cfg.max_steps_per_epoch)
        criterion = build_criterion(cfg, train_ds.subset_labels, num_classes, placement.device)
        step = TrainStep(model, cfg, placement.device, criterion, generator, spe)
        return cls(cfg, placement, model, step, loader, placement.eval_loader(val_ds, cfg), val_ds.subset_labels,
                   spe, generator, description)

    def resume_state(self, history: list[dict[str, Any]], epoch: int, best: BestEpoch) -> dict[str, Any]:
        return {"model": self.model.state_dict(), **self.step.state_dict(), "rng": rng_state(),
                "generator": self.generator.get_state(), "history": history, "epoch": epoch, **best.state_dict()}

    def restore(self, state: dict[str, Any], best: BestEpoch) -> int:
        """Load a :meth:`resume_state`; returns the first epoch still to train."""
        self.model.load_state_dict(state["model"])
        self.step.load_state_dict(state)
        restore_rng(state["rng"])
        self.generator.set_state(state["generator"])
        best.load_state_dict(state)
        return int(state["epoch"]) + 1


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
    placement: SingleProcess | None = None,
) -> FitResult:
    """Train ``model`` and return the best epoch by ``cfg.selection_metric`` on ``val_ds``.

    With ``checkpoint_dir``, ``last.pt`` is written after every epoch and ``best.pt`` whenever the
    validation metric improves; if ``last.pt`` of the same ``signature`` exists, training resumes
    after its epoch (model, optimizer, schedule, scaler, RNG and history restored).
    """
    placement = placement or SingleProcess(pick_device(cfg.device))
    with determinism(cfg.deterministic, cfg.threads):
        generator = seed_everything(cfg.seed, cfg.deterministic)
        run = _Run.build(model, train_ds, val_ds, cfg, num_classes, placement, generator, description)
        checkpoints = Checkpointer(checkpoint_dir, signature, writer=placement.writer)
        best = BestEpoch(cfg.selection_metric, cfg.early_stopping_patience)
        history: list[dict[str, Any]] = []
        start_epoch = resumed_from = 0
        state = checkpoints.resume_state(placement.device)
        if state is not None:
            start_epoch = resumed_from = run.restore(state, best)
            history = list(state["history"])
            log.info("resuming %s from epoch %d (%s)", description, start_epoch, checkpoints.last_path)
        best_state = None
        spe = run.steps_per_epoch
        with FitDisplay(description, cfg.epochs * spe, start_epoch * spe, progress) as display:
            for epoch in range(start_epoch, cfg.epochs):
                if best.should_stop:
                    break  # also keeps a finished, early-stopped run that is re-invoked finished
                record = _train_epoch(run, epoch, display)
                val_metrics = plain(evaluate(run.val_labels, placement.gather(
                    predict_loader(run.model, run.val_loader, placement.device, cfg.amp))))
                value = best.value_of(val_metrics)
                record.update({f"val_{k}": v for k, v in val_metrics.items() if isinstance(v, (int, float)) or v is None})
                history.append(record)
                if best.update(epoch, value):
                    best_state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
                    checkpoints.save_best(best_state, epoch=epoch, value=value, metric=cfg.selection_metric)
                checkpoints.save_last(run.resume_state(history, epoch, best))
                display.validation(f"{cfg.selection_metric} {value:.3f} (best {best.best_value:.3f}@{best.best_epoch})")
                if placement.writer:
                    for cb in callbacks:
                        cb(epoch, record)
                if best.should_stop:
                    log.info("%s: early stop at epoch %d (best %d)", description, epoch, best.best_epoch)
        if best_state is None:
            best_state = checkpoints.load_best()
    return FitResult(best_epoch=best.best_epoch, best_value=best.best_value, history=history,
                     best_path=checkpoints.best_path, stopped_early=best.should_stop,
                     resumed_from_epoch=resumed_from or None, device=str(placement.device), best_state=best_state)


def _train_epoch(run: _Run, epoch: int, display: FitDisplay) -> dict[str, Any]:
    """Train one epoch; the host reads the running loss only every ``log_every`` steps."""
    t0 = time.perf_counter()
    run.model.train()
    run.placement.start_epoch(run.loader, epoch)
    meter, pending = LossMeter(run.placement.device, epoch), 0
    for x, y in itertools.islice(run.loader, run.steps_per_epoch):
        run.step(x, y, meter)
        pending += 1
        if pending == run.cfg.log_every:
            meter.check(run.description)
            display.steps(pending, meter.mean_loss())
            pending = 0
    if meter.steps > meter.checked_steps:
        meter.check(run.description)
    run.placement.end_epoch(run.model)
    means = meter.means(run.placement.reduce_sum)
    display.steps(pending, means["train_loss"])
    return {"epoch": epoch, "train_loss": means.pop("train_loss"), "lr": run.step.lr,
            "seconds": time.perf_counter() - t0, **means}
