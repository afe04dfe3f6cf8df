"""MRINet (multi-resolution interlaced net + time–frequency feature enhancement), registered as ``mrinet``.

A frequency branch (interlaced two-stream pre-activation CNN) and a time branch (HTS-AT's Swin
encoder on the spectrogram folded into an image, implemented here without timm) produce maps of
the same ``(C, freq, time)`` shape; a branch attention mixes them per channel, and a
token-semantic head turns the mix into a class × time map whose time mean is the logits.

Presets: ``paper`` (the released code: blocks [6, 8, 12, 10], 119,733,980 trainable parameters at
4 classes), ``paper67m`` (lungpipe's own approximation of the paper's unreproducible 67.15 M: blocks
[6, 8, 12, 2], 69.32 M), ``small`` (CPU).
"""

from __future__ import annotations

from lungpipe.models.mrinet.config import PRESETS, MRINetConfig
from lungpipe.models.mrinet.geometry import MRINetGeometry, plan_geometry
from lungpipe.models.mrinet.model import MRINet, MRINetOutputs
from lungpipe.models.mrinet.weights import load_model_weights, load_swin_weights
from lungpipe.models.pretrained import wants_pretrained
from lungpipe.models.registry import register_model

__all__ = [
    "PRESETS",
    "MRINet",
    "MRINetConfig",
    "MRINetGeometry",
    "MRINetOutputs",
    "build_mrinet",
    "load_model_weights",
    "load_swin_weights",
    "plan_geometry",
]


@register_model(
    "mrinet",
    MRINetConfig,
    presets=PRESETS,
    description="MRINet: interlaced-CNN frequency branch + HTS-AT Swin time branch, branch attention",
    summaries={
        "paper": "interlaced blocks 6-8-12-10 (64-512), Swin-T time branch, 1024×64 input, focal loss, "
        "119.7 M (as released)",
        "paper67m": "stage 4 cut to 2 blocks, 69.3 M (lungpipe's approximation of the 67.15 million the paper "
        "states; no released config)",
        "small": "interlaced blocks 1-1-1-1 (8-64), 3-stage Swin width 32, 192 frames, max over time, the "
        "engine's loss and augmentation (lungpipe's CPU size)",
    },
)
def build_mrinet(cfg: MRINetConfig) -> MRINet:
    """Build MRINet; load ``time_pretrained`` (Swin + bn0) then ``pretrained`` (whole model) if set."""
    model = MRINet(cfg)
    if wants_pretrained(cfg.time_pretrained):
        load_swin_weights(model, cfg.time_pretrained)
    if wants_pretrained(cfg.pretrained):
        load_model_weights(model, cfg.pretrained)
    return model
