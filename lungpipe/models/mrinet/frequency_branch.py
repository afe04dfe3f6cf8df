"""MRINet's frequency branch: a pre-activation CNN of interlaced two-stream blocks, as released.

Widths: each stage ``i`` carries two streams ``a`` and ``b`` of ``widths[i]`` channels *each*;
``x = concat(a, b)`` therefore has ``2·widths[i]`` channels. In a block:

- ``a' = conv3×3(reduce_a(x))`` — the 1×1 reduction takes 2w → w channels, the 3×3 keeps w;
- ``b' = dilated_conv3×3(reduce_b(concat(b, a'))) + shortcut(x)`` — reduction 2w → w, a 3×3
  convolution with dilation 2 keeping w, and a pre-activated 1×1 projection 2w → w of ``x``.

Every convolution is pre-activated (BN → ReLU → conv) and has a bias, the shortcut included. A
block holds 24·w² weights, 5·w biases and 16·w BatchNorm parameters.

The stem (7×7 stride-2 conv 1 → widths[0] with padding (5, 3) and a bias, BN, ReLU, 3/2 max-pool
with padding 1) feeds the same map to both streams. Between stages a transition (BN, ReLU, 1×1
conv with bias widths[i] → widths[i+1], 2×2 average pool) is called once per stream with shared
weights, so each stream is normalised with its own batch statistics (in training mode the BN's
running statistics are updated twice per step, stream a first, as in the release). The output is
stream ``b`` of the last stage, permuted to ``(B, C, freq, time)``, projected to the fused width
by a 1×1 conv when the last width differs from it (never at the released widths), and
LayerNorm'd over the time axis. Convolutions keep PyTorch's default initialisation, as released.
"""

from __future__ import annotations

import torch
from torch import nn

from lungpipe.models.mrinet.config import MRINetConfig
from lungpipe.models.mrinet.geometry import STEM_PADDING, MRINetGeometry


class PreActConv(nn.Sequential):
    """BN → ReLU → conv (with bias)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1) -> None:
        super().__init__(
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_in, c_out, kernel, padding=dilation * (kernel // 2), dilation=dilation),
        )


class InterlacedBlock(nn.Module):
    """One two-stream block at stream width ``width`` (see the module docstring)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.reduce_a = PreActConv(2 * width, width, 1)
        self.conv_a = PreActConv(width, width, 3)
        self.reduce_b = PreActConv(2 * width, width, 1)
        self.conv_b = PreActConv(width, width, 3, dilation=2)
        self.shortcut = PreActConv(2 * width, width, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([a, b], dim=1)
        a_new = self.conv_a(self.reduce_a(x))
        b_new = self.conv_b(self.reduce_b(torch.cat([b, a_new], dim=1))) + self.shortcut(x)
        return a_new, b_new


class Transition(nn.Sequential):
    """BN → ReLU → 1×1 conv (with bias) → 2×2 average pool."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_in, c_out, 1),
            nn.AvgPool2d(2),
        )


class FrequencyBranch(nn.Module):
    """``(B, 1, target_frames, n_mels)`` → ``(B, fused_channels, freq, time)``."""

    #: the training engine may put this branch's convolutions in channels_last memory format
    prefers_channels_last = True

    def __init__(self, cfg: MRINetConfig, geometry: MRINetGeometry) -> None:
        super().__init__()
        widths = list(cfg.widths)
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 7, stride=2, padding=STEM_PADDING),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.stages = nn.ModuleList(
            nn.ModuleList(InterlacedBlock(width) for _ in range(n)) for n, width in zip(cfg.blocks, widths)
        )
        self.transitions = nn.ModuleList(Transition(widths[i], widths[i + 1]) for i in range(len(widths) - 1))
        self.project = (
            nn.Conv2d(widths[-1], cfg.fused_channels, 1) if widths[-1] != cfg.fused_channels else nn.Identity()
        )
        self.norm = nn.LayerNorm(geometry.freq_map[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = b = self.stem(x)  # (B, w0, time, freq)
        for i, blocks in enumerate(self.stages):
            if i > 0:
                transition = self.transitions[i - 1]
                a, b = transition(a), transition(b)
            for block in blocks:
                a, b = block(a, b)
        out = self.project(b.transpose(2, 3))  # (B, C, freq, time)
        return self.norm(out)
