"""Model selection during training: the best epoch by the validation metric, and early stopping."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class BestEpoch:
    """Tracks the best validation value (higher is better) and the epochs since it improved."""

    metric: str
    patience: int = 0  # 0 disables early stopping
    best_value: float = -math.inf
    best_epoch: int = -1
    stale: int = 0

    def value_of(self, val_metrics: dict[str, Any]) -> float:
        if self.metric not in val_metrics:
            raise KeyError(f"selection_metric {self.metric!r} not among the validation metrics {sorted(val_metrics)}")
        value = val_metrics[self.metric]
        return -math.inf if value is None else float(value)

    def update(self, epoch: int, value: float) -> bool:
        """Record ``epoch``'s value; True when it is a new best."""
        if value > self.best_value:
            self.best_value, self.best_epoch, self.stale = float(value), epoch, 0
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return bool(self.patience) and self.stale >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "stale": self.stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_epoch, self.stale = float(state["best_value"]), int(state["best_epoch"]), \
            int(state["stale"])
