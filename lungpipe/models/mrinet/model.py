"""MRINet: the frequency branch and the time branch, fused by branch attention, read by a semantic head.

Input path (``prepare``), as released: per-mel BatchNorm ``bn0`` → (training mode) SpecAugment
stripes → the time axis brought to ``target_frames`` (bicubic, ``align_corners=True``, upsampling
only, in the release) → both branches see the same map. ``training_loss`` is the released focal
loss unless ``loss: criterion``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lungpipe.models.base import Criterion, LossOutput, LungModel
from lungpipe.models.mrinet.augment import drop_stripes
from lungpipe.models.mrinet.config import MRINetConfig
from lungpipe.models.mrinet.frequency_branch import FrequencyBranch
from lungpipe.models.mrinet.fusion import BranchAttention, SemanticHead
from lungpipe.models.mrinet.geometry import plan_geometry
from lungpipe.models.mrinet.loss import focal_loss
from lungpipe.models.mrinet.time_branch import TimeBranch


@dataclass
class MRINetOutputs:
    """Intermediate maps of one forward pass.

    ``freq``/``time``: branch outputs ``(B, C, freq, time)``; ``weights``: branch attention
    ``(B, 2, C)`` (frequency first); ``fused``: ``(B, C, freq, time)``; ``class_map``:
    ``(B, K, frames)``; ``logits``: ``(B, K)``.
    """

    freq: torch.Tensor
    time: torch.Tensor
    weights: torch.Tensor
    fused: torch.Tensor
    class_map: torch.Tensor
    logits: torch.Tensor


class MRINet(LungModel):
    """Dual-branch time–frequency network for ``(B, 1, frames, n_mels)`` spectrograms."""

    def __init__(self, cfg: MRINetConfig) -> None:
        super().__init__()
        self.config = cfg
        self.geometry = plan_geometry(cfg)
        self.bn0 = nn.BatchNorm2d(cfg.n_mels) if cfg.mel_batchnorm else None
        self.frequency_branch = FrequencyBranch(cfg, self.geometry)
        self.time_branch = TimeBranch(cfg, self.geometry)
        self.attention = BranchAttention(cfg.fused_channels)
        self.head = SemanticHead(cfg.fused_channels, cfg.head_channels, cfg.num_classes, self.geometry.freq_map[0])

    def resize_time(self, x: torch.Tensor) -> torch.Tensor:
        """Bring ``(B, 1, frames, mels)`` to ``target_frames`` frames as ``time_resize`` says."""
        cfg = self.config
        frames = x.shape[2]
        if frames == cfg.target_frames:
            return x
        if cfg.time_resize == "bicubic_up":
            if frames > cfg.target_frames:
                raise ValueError(
                    f"MRINet got {frames} frames, more than its target_frames {cfg.target_frames}; "
                    f"time_resize 'bicubic_up' (the release) only upsamples: shorten the features "
                    f"or set the model's time_resize: bilinear"
                )
            return F.interpolate(x, size=(cfg.target_frames, cfg.n_mels), mode="bicubic", align_corners=True)
        return F.interpolate(x, size=(cfg.target_frames, cfg.n_mels), mode="bilinear", align_corners=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Check the input; ``bn0`` per mel bin; SpecAugment stripes in training; resize time."""
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[3] != cfg.n_mels:
            raise ValueError(
                f"MRINet expects spectrograms shaped (batch, 1, frames, {cfg.n_mels}) "
                f"(n_mels of its config), "
                f"got {tuple(x.shape)}"
            )
        if self.bn0 is not None:
            x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        if self.training and (cfg.specaug_time_stripes or cfg.specaug_freq_stripes):
            x = drop_stripes(
                x, cfg.specaug_time_stripes, cfg.specaug_time_width, cfg.specaug_freq_stripes, cfg.specaug_freq_width
            )
        return self.resize_time(x)

    def branch_outputs(self, x: torch.Tensor) -> MRINetOutputs:
        x = self.prepare(x)
        freq = self.frequency_branch(x)
        time = self.time_branch(x)
        fused, weights = self.attention.fuse(freq, time)
        class_map = self.head(fused)
        logits = class_map.amax(dim=2) if self.config.time_pool == "max" else class_map.mean(dim=2)
        return MRINetOutputs(freq, time, weights, fused, class_map, logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch_outputs(x).logits

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, criterion: Criterion) -> LossOutput:
        """Focal loss (released) or the engine's ``criterion`` (``loss: criterion``)."""
        if self.config.loss == "criterion":
            return super().training_loss(x, y, criterion)
        logits = self(x)
        loss = focal_loss(logits, y, self.config.focal_gamma, self.config.focal_alpha)
        return LossOutput(loss=loss, logits=logits, parts={"focal": loss.detach()})
