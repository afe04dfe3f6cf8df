"""The contract every architecture in the zoo keeps.

Input: a batch of spectrograms ``x`` of shape ``(B, 1, frames, mel_bins)`` (as the preprocess
stage stores them, already normalised). Output of ``forward``: class logits ``(B, num_classes)``.

Extra losses: the training engine never special-cases an architecture. It calls
:meth:`LungModel.training_loss` for every model. The default is the plain criterion on the logits;
a model with an auxiliary objective (ADD4RSC's bias denoising loss) overrides this one hook and
returns the total loss plus its named parts for logging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LossOutput:
    """What :meth:`LungModel.training_loss` returns.

    ``loss`` is what the engine back-propagates, ``logits`` the main head's output (used for
    training metrics), ``parts`` named detached components for logging (e.g. ``{"ce": ..,
    "bias": ..}``).
    """

    loss: torch.Tensor
    logits: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


class LungModel(nn.Module):
    """Base class of every registry model."""

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, criterion: Criterion) -> LossOutput:
        """Loss for one training batch. Override to add auxiliary objectives."""
        logits = self(x)
        loss = criterion(logits, y)
        return LossOutput(loss=loss, logits=logits, parts={"ce": loss.detach()})


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def channels_last_modules(model: nn.Module) -> list[nn.Module]:
    """The convolutional parts of ``model`` that run faster in ``channels_last`` memory format.

    A module says so with a class attribute ``prefers_channels_last = True`` (CNN6's and ResNet's
    trunks, MRINet's frequency branch); transformers (AST, MRINet's Swin, ADD4RSC's denoiser) do not.
    Nested marked modules inside a marked one are not listed again.
    """
    found: list[nn.Module] = []
    for module in model.modules():
        if getattr(module, "prefers_channels_last", False) and not any(module in f.modules() for f in found):
            found.append(module)
    return found


def to_channels_last(model: nn.Module) -> int:
    """Put the 4-D weights of every :func:`channels_last_modules` part in ``channels_last`` format
    (in place); returns how many parts were converted. Inputs stay as they are: a convolution on
    an NCHW input with channels_last weights runs channels_last."""
    parts = channels_last_modules(model)
    for part in parts:
        part.to(memory_format=torch.channels_last)
    return len(parts)


def init_conv_bn(module: nn.Module) -> None:
    """He (fan-out) init for every Conv2d and unit/zero affine for every BatchNorm2d in ``module``,
    the usual initialisation of ResNet-style convolutional trunks."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
