"""Device choice and mixed precision: CUDA when present, else CPU.

``amp``: ``auto`` and ``bf16`` autocast to bfloat16 on CUDA; ``fp16`` autocasts to float16 and
scales the loss with a ``GradScaler`` (the ADD4RSC / patch-mix release); ``off`` is float32.
On the CPU every mode trains in float32.
"""

from __future__ import annotations

import contextlib

import torch

from lungpipe.training.config import AMP_MODES


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but CUDA is not available; use device: auto or cpu")
    return device


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device``; None means float32."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {list(AMP_MODES)}, got {amp!r}")
    if device.type != "cuda" or amp == "off":
        return None
    return torch.float16 if amp == "fp16" else torch.bfloat16


def autocast(device: torch.device, amp: str = "auto"):
    """Autocast to :func:`amp_dtype`; a no-op context for float32."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, amp: str = "auto") -> torch.amp.GradScaler:
    """A GradScaler, enabled only when training in float16 (a disabled one passes steps through)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(device, amp) == torch.float16)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()}threads"
