"""The settings of :mod:`lungpipe.training.augment` (SpecAugment masking and mixup; its docstring
describes the two modes), in a module without torch: the report stage reads the training
defaults (:class:`~lungpipe.training.config.TrainConfig`) and would otherwise import torch (~2.5 s)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lungpipe.util.typed_config import require, require_choice

AUGMENT_MODES = ("lungpipe", "release")
FILLS = ("mean", "zero")
#: ``release`` mode applies the augmentation when a standard-normal draw is at most this value.
RELEASE_APPLY_Z = 1.0
#: Its probability, P(z <= 1) = Phi(1).
RELEASE_APPLY_PROB = 0.5 * (1.0 + math.erf(RELEASE_APPLY_Z / math.sqrt(2.0)))
#: The release's largest masks, 48 of 128 mel bins and 160 of 798 frames, as fractions of the axis.
RELEASE_FREQ_MASK_FRAC = 48 / 128
RELEASE_TIME_MASK_FRAC = 160 / 798


@dataclass
class AugmentConfig:
    """SpecAugment-style masking and mixup, applied to training batches only."""

    mode: str = "lungpipe"  # "lungpipe" | "release" (see lungpipe.training.augment's docstring)
    freq_masks: int = 2
    freq_mask_frac: float = 0.125  # largest frequency mask, as a fraction of the mel bins (16 of 128)
    time_masks: int = 2
    time_mask_frac: float = 0.05  # largest time mask, as a fraction of the frames (40 of 798)
    fill: str = "mean"  # "mean" (of each spectrogram) or "zero"
    mixup_alpha: float = 0.0  # 0 disables mixup; Beta(alpha, alpha) mixing weights otherwise
    mixup_prob: float = 0.5  # chance that a batch is mixed when mixup_alpha > 0

    def __post_init__(self) -> None:
        require_choice(self, "mode", AUGMENT_MODES)
        require_choice(self, "fill", FILLS)
        for name in ("freq_mask_frac", "time_mask_frac"):
            require(self, name, 0.0 <= getattr(self, name) <= 1.0, "must be a fraction of the axis in [0, 1]")
        for name in ("freq_masks", "time_masks"):
            require(self, name, getattr(self, name) >= 0, "must be >= 0")
        require(self, "mixup_alpha", self.mixup_alpha >= 0, "must be >= 0 (0 disables mixup)")
        require(self, "mixup_prob", 0 <= self.mixup_prob <= 1, "must be between 0 and 1")
