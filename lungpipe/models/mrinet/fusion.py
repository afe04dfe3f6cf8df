"""Branch attention (selective fusion of the two branches) and the semantic head, as released.

Branch attention: ``U = F + T``; ``s`` = global average of ``U`` over (freq, time), a length-1
sequence of ``C`` channels; ``z = ReLU(BN1d(Conv1d_C→C(s)))`` (kernel 3, padding 1, bias); one
``Conv1d_C→C`` per branch (kernel 3, padding 1, bias) gives per-channel logits; a softmax across
the two branches gives ``αF + αT = 1`` per channel; ``Y = αF·F + αT·T``. At C = 512 that is
3·(3·512² + 512) + 2·512 = 2,361,856 parameters. (On a length-1 sequence only the centre tap of
each kernel meets data; the side taps stay as initialised, as in the release. SK-Net's reduction
width ``max(C/16, 32)`` is computed by the release but unused, so it is not a setting here.)

Semantic head (HTS-AT's token-semantic classifier, two-step in MRINet): a ``(freq × 3)``
convolution collapses the frequency axis (C → head_channels), then, with nothing between, a
``(1 × 3)`` stride-2 convolution to one channel per class gives a class × time map; the logits
are its mean over time.
"""

from __future__ import annotations

import torch
from torch import nn


class BranchAttention(nn.Module):
    """Soft per-channel selection between a frequency-branch and a time-branch map of equal shape."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv1d(channels, channels, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm1d(channels)
        self.freq_logits = nn.Conv1d(channels, channels, kernel_size=3, padding=1)
        self.time_logits = nn.Conv1d(channels, channels, kernel_size=3, padding=1)

    def weights(self, freq: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """``(B, 2, C)``: per-channel weights of the frequency (index 0) and time (index 1) branch."""
        s = (freq + time).mean(dim=(2, 3)).unsqueeze(-1)  # (B, C, 1)
        z = torch.relu(self.bn(self.squeeze(s)))
        logits = torch.stack([self.freq_logits(z), self.time_logits(z)], dim=1).squeeze(-1)
        return logits.softmax(dim=1)

    def fuse(self, freq: torch.Tensor, time: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Y, weights)`` with ``Y = αF·F + αT·T``."""
        alpha = self.weights(freq, time)
        fused = alpha[:, 0, :, None, None] * freq + alpha[:, 1, :, None, None] * time
        return fused, alpha

    def forward(self, freq: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return self.fuse(freq, time)[0]


class SemanticHead(nn.Module):
    """``(B, C, freq, time)`` → class map ``(B, K, ceil(time / 2))``: two convolutions, nothing between."""

    def __init__(self, channels: int, hidden: int, num_classes: int, freq_rows: int) -> None:
        super().__init__()
        self.collapse_freq = nn.Conv2d(channels, hidden, kernel_size=(freq_rows, 3), padding=(0, 1))
        self.to_classes = nn.Conv2d(hidden, num_classes, kernel_size=(1, 3), stride=(1, 2), padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_classes(self.collapse_freq(x)).squeeze(2)
