"""MRINet's released loss: focal loss on softmax probabilities.

``FL = alpha · (1 − p_y)^gamma · (−log p_y)`` per sample, averaged over the batch (released:
gamma 2, alpha 0.5, one alpha for every class). With gamma 0 and alpha 1 it is cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    log_p = F.log_softmax(logits.float(), dim=-1).gather(1, target.long()[:, None]).squeeze(1)
    p = log_p.exp()
    return (alpha * (1.0 - p).pow(gamma) * -log_p).mean()
