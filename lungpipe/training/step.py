"""One optimizer step, with no host synchronisation: the loss and its parts are summed on the
device, and a non-finite loss sets a device-side record that the host reads only every
``log_every`` steps and at the end of the epoch (:meth:`LossMeter.check`).

A step: batch to the device (asynchronously from pinned memory), SpecAugment and mixup, the
weight-average snapshot, the model's ``training_loss`` under autocast, backward through the
gradient scaler (float16 only), optional gradient clipping, the optimizer and schedule steps,
then the weight moving average.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lungpipe.training.augment import mixup, spec_augment
from lungpipe.training.averaging import WeightMovingAverage
from lungpipe.training.config import TrainConfig
from lungpipe.training.device import autocast, grad_scaler
from lungpipe.training.optim import build_optimizer
from lungpipe.training.placement import wants_channels_last
from lungpipe.training.schedule import build_schedule


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class LossMeter:
    """Sums, on the device, of the loss and its named parts over one epoch, weighted by batch size;
    and the first step whose loss was not finite."""

    def __init__(self, device: torch.device, epoch: int):
        self.device, self.epoch = device, epoch
        self.n = 0
        self.steps = 0
        self.checked_steps = 0
        self._loss = torch.zeros((), dtype=torch.float64, device=device)
        self._parts: dict[str, torch.Tensor] = {}
        self._bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self._bad_value = torch.zeros((), dtype=torch.float32, device=device)

    def add(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], n: int) -> None:
        loss = loss.detach().float()
        self._loss += loss.double() * n
        for key, value in parts.items():
            total = self._parts.get(key)
            part = torch.as_tensor(value).detach().to(self.device, torch.float64) * n
            self._parts[key] = part if total is None else total + part
        newly_bad = ~torch.isfinite(loss) & (self._bad_step < 0)
        self._bad_step = torch.where(newly_bad, self.steps, self._bad_step)
        self._bad_value = torch.where(newly_bad, loss, self._bad_value)
        self.n += n
        self.steps += 1

    def check(self, where: str) -> None:
        """Raise :class:`NonFiniteLossError` if a step since the epoch began had a non-finite loss
        (one host sync)."""
        first, last = self.checked_steps, self.steps - 1
        self.checked_steps = self.steps
        bad = int(self._bad_step.item())
        if bad >= 0:
            raise NonFiniteLossError(
                f"{where}: loss is {float(self._bad_value.item())} at epoch {self.epoch} step {bad} "
                f"(found by the check over steps {first}-{last}); lower train.lr, set train.grad_clip, or use "
                f"train.amp: bf16/off instead of fp16")

    def mean_loss(self) -> float:
        return float(self._loss.item()) / max(self.n, 1)

    def means(self, reduce_sum=None) -> dict[str, float]:
        """``train_loss`` and ``train_<part>`` means of the epoch (one host sync). ``reduce_sum``
        sums the totals and the sample count over the processes of a distributed run."""
        totals = torch.stack([self._loss, *self._parts.values(),
                              torch.tensor(float(self.n), dtype=torch.float64, device=self.device)])
        values = (totals if reduce_sum is None else reduce_sum(totals)).cpu().tolist()
        n = max(values[-1], 1.0)
        return {"train_loss": values[0] / n, **{f"train_{k}": v / n for k, v in zip(self._parts, values[1:-1])}}


class TrainStep:
    """The per-step training machinery of one run: optimizer, schedule, gradient scaler, weight
    average. ``model`` is the module to train (already on ``device``; see ``SingleProcess.prepare``)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device, criterion: nn.Module,
                 generator: torch.Generator, steps_per_epoch: int):
        self.model, self.cfg, self.device, self.criterion, self.generator = model, cfg, device, criterion, generator
        self.optimizer = build_optimizer(model, cfg, device)
        self.scheduler = build_schedule(self.optimizer, cfg.schedule, epochs=cfg.epochs,
                                        steps_per_epoch=steps_per_epoch, warmup_epochs=cfg.warmup_epochs,
                                        min_lr_ratio=cfg.min_lr_ratio)
        self.scaler = grad_scaler(device, cfg.amp)
        self.average = WeightMovingAverage(model, cfg.ma_beta) if cfg.ma_update else None
        self.channels_last = wants_channels_last(model, device)
        self._params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, meter: LossMeter) -> None:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        x = spec_augment(x, self.cfg.augment, self.generator)
        criterion = self.criterion
        aug = self.cfg.augment
        if aug.mixup_alpha > 0 and torch.rand(1, generator=self.generator).item() < aug.mixup_prob:  # CPU draw
            x, _, y_b, lam = mixup(x, y, aug.mixup_alpha, self.generator)
            criterion = mixed_criterion(self.criterion, y_b, lam)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.average is not None:
            self.average.begin_step()
        with autocast(self.device, self.cfg.amp):
            out = self.model.training_loss(x, y, criterion)
        loss = out.loss.float()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self._params, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.average is not None:
            self.average.end_step()
        meter.add(loss, out.parts, len(y))

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def mixed_criterion(ce: nn.Module, y_b: torch.Tensor, lam: float):
    """The mixup loss: ``lam * ce(logits, y) + (1 - lam) * ce(logits, y_partner)``."""

    def criterion(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return lam * ce(logits, y) + (1.0 - lam) * ce(logits, y_b)

    return criterion
