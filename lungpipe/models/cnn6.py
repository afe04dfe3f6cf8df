"""CNN6 (Kong et al., 2020) on ``(B, 1, frames, mel_bins)`` log-mel inputs, as patch-mix CL uses it.

Layout: optionally a BatchNorm over mel bins (``input_batchnorm``, PANNs' ``bn0``), four conv blocks
of one 5×5 conv (no bias) + BN + ReLU + 2×2 average pooling (``block_dropout`` after each), the
mean over the remaining frequency axis, max + mean pooling over time, then optionally (PANNs)
dropout, ``fc1`` (ReLU), dropout; a linear head.

Presets: ``paper`` = patch-mix CL's CNN6: widths 64-128-256-512, no input BatchNorm, no ``fc1``, no
dropout; the 512-d pooled feature goes straight to the head (4,306,372 parameters with a 4-class
head). ``panns`` = PANNs' CNN6 (``bn0`` over the mel bins, 512-d ``fc1``, dropouts 0.5 / 0.2:
4,569,284 parameters for 128-bin inputs and 4 classes; PANNs' own 64-bin, 527-class model has
4,837,455). ``small`` = the PANNs layout at widths 8-16-32-64 with a 64-d ``fc1`` and dropouts
0.2 / 0.1 (the first block runs at full resolution, so width costs time on a CPU even for a small
model).

Pretrained weights (``pretrained``): a state-dict file in PANNs' checkpoint layout (``model`` key,
``conv_block1.conv1.weight``…, e.g. ``Cnn6_mAP=0.343.pth``) or of this model, or ``audioset``
(PANNs' file on Zenodo, downloaded into torch's cache). Documented adaptations, logged: the
527-class ``fc_audioset`` head and the waveform front end (``spectrogram_extractor``,
``logmel_extractor``) are dropped; when the checkpoint's mel-bin count differs from ``n_mels``
(PANNs uses 64) the input BatchNorm ``bn0`` keeps its fresh initialisation; a model without
``bn0`` or ``fc1`` (the ``paper`` preset) does not use the checkpoint's (as patch-mix CL).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import torch
from torch import nn

from lungpipe.models.base import LungModel
from lungpipe.models.pretrained import (
    LoadReport,
    PretrainedError,
    download_state_dict,
    load_checked,
    read_state_dict,
    rename_keys,
    resolve_source,
    strip_prefix_before,
    wants_pretrained,
)
from lungpipe.models.registry import register_model
from lungpipe.util.typed_config import ConfigError

log = logging.getLogger("lungpipe.models.pretrained")

#: PANNs' AudioSet-trained CNN6 (32 kHz, 64 mel bins, mAP 0.343), Zenodo record 3987831.
PANNS_CNN6_URL = "https://zenodo.org/record/3987831/files/Cnn6_mAP%3D0.343.pth?download=1"
_DROPPED = (r"^(fc_audioset|head|spectrogram_extractor|logmel_extractor)\.",)
_PANNS_RULES = (
    (r"^conv_block(\d+)\.conv1\.", lambda m: f"blocks.{int(m.group(1)) - 1}.conv."),
    (r"^conv_block(\d+)\.bn1\.", lambda m: f"blocks.{int(m.group(1)) - 1}.bn."),
)


@dataclass
class CNN6Config:
    """CNN6 settings. ``channels``: widths of the four conv blocks; ``embed_dim``: ``fc1`` width
    (0: no ``fc1``, the pooled feature of ``channels[-1]`` goes to the head, as in patch-mix CL).

    ``input_batchnorm``: PANNs' ``bn0`` over mel bins. ``dropout`` is applied around ``fc1``
    (PANNs: 0.5), ``block_dropout`` after each conv block (PANNs: 0.2). ``n_frames`` and ``n_mels``
    must each be at least 2^len(channels).
    """

    num_classes: int = 4
    n_frames: int = 798
    n_mels: int = 128
    pretrained: str | None = None
    dropout: float = 0.5
    block_dropout: float = 0.2
    channels: tuple[int, ...] = (64, 128, 256, 512)
    embed_dim: int = 512
    input_batchnorm: bool = True


class ConvBlock5x5(nn.Module):
    """5×5 conv (no bias) → BN → ReLU → 2×2 average pooling."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=5, padding=2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x))))


class CNN6Backbone(nn.Module):
    """CNN6 trunk: ``(B, 1, frames, mel_bins)`` → embedding ``(B, embed_dim)`` (after ``fc1``), or
    the pooled ``(B, channels[-1])`` feature without ``fc1``."""

    #: the training engine may put the convolutions in channels_last memory format
    prefers_channels_last = True

    def __init__(self, cfg: CNN6Config) -> None:
        super().__init__()
        min_size = 2 ** len(cfg.channels)
        if cfg.n_frames < min_size or cfg.n_mels < min_size:
            raise ConfigError(
                f"model cnn6: {len(cfg.channels)} pooling blocks need at least {min_size} frames and "
                f"mel bins, got {cfg.n_frames} × {cfg.n_mels}"
            )
        if cfg.embed_dim < 0:
            raise ConfigError(f"model cnn6: embed_dim must be >= 0 (0: no fc1), got {cfg.embed_dim}")
        self.n_mels = cfg.n_mels
        self.bn0 = nn.BatchNorm2d(cfg.n_mels) if cfg.input_batchnorm else None
        widths = (1, *cfg.channels)
        self.blocks = nn.ModuleList(ConvBlock5x5(a, b) for a, b in itertools.pairwise(widths))
        self.block_dropout = nn.Dropout(cfg.block_dropout)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc1 = nn.Linear(cfg.channels[-1], cfg.embed_dim) if cfg.embed_dim else None
        self.feature_dim = cfg.embed_dim or cfg.channels[-1]
        self._init_weights()
        # channels-last convolutions are markedly faster on CPU (oneDNN), above all the 1-channel first one
        self.to(memory_format=torch.channels_last)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[-1] != self.n_mels:
            raise ValueError(f"CNN6 expects (B, 1, frames, {self.n_mels}) spectrograms, got {tuple(x.shape)}")
        if self.bn0 is not None:
            x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # per-mel-bin normalisation
        x = x.contiguous(memory_format=torch.channels_last)
        for block in self.blocks:
            x = self.block_dropout(block(x))
        x = x.mean(dim=3)  # over frequency → (B, C, T)
        x = x.amax(dim=2) + x.mean(dim=2)
        if self.fc1 is None:
            return x
        x = torch.relu(self.fc1(self.dropout(x)))
        return self.dropout(x)


class CNN6Classifier(LungModel):
    """CNN6 trunk + linear head. ``forward_features`` gives ``(B, embed_dim)``."""

    def __init__(self, cfg: CNN6Config, backbone: CNN6Backbone | None = None) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else CNN6Backbone(cfg)
        self.head = nn.Linear(self.backbone.feature_dim, cfg.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def load_cnn6_pretrained(backbone: CNN6Backbone, spec: str) -> LoadReport:
    """Load ``spec`` (PANNs or zoo state-dict file, ``audioset``, or a URL) into ``backbone``."""
    source = resolve_source(spec, aliases={"audioset": PANNS_CNN6_URL, "panns": PANNS_CNN6_URL})
    if source.kind == "remote":
        state = download_state_dict(source.location)
    elif source.kind == "dir":
        raise PretrainedError(f"{source.location} is a folder; CNN6 weights must be a state-dict file")
    else:
        state = read_state_dict(source.path)
    state = strip_prefix_before(state, ("conv_block1.conv1.weight", "blocks.0.conv.weight"))
    state = rename_keys(state, _PANNS_RULES)  # PANNs conv_blockN.conv1/bn1 → blocks.(N-1).conv/bn
    keep_fresh: list[str] = []
    for part in ("bn0", "fc1"):
        if getattr(backbone, part) is None and any(k.startswith(part + ".") for k in state):
            log.info("%s: this CNN6 has no %s; the checkpoint's is not used", source.location, part)
            state = {k: v for k, v in state.items() if not k.startswith(part + ".")}
    bn0_weight = state.get("bn0.weight")
    if bn0_weight is not None and bn0_weight.shape[0] != backbone.n_mels:
        log.warning(
            "%s: checkpoint normalises %d mel bins, the model %d: bn0 keeps its fresh initialisation",
            source.location,
            bn0_weight.shape[0],
            backbone.n_mels,
        )
        state = {k: v for k, v in state.items() if not k.startswith("bn0.")}
        keep_fresh.append(r"^bn0\.")
    return load_checked(backbone, state, source=source.location, drop_source=_DROPPED, keep_target=keep_fresh)


def build_cnn6_backbone(cfg: CNN6Config) -> tuple[CNN6Backbone, int]:
    """The CNN6 trunk without a head, with ``cfg.pretrained`` loaded: ``(module, feature_dim)``."""
    backbone = CNN6Backbone(cfg)
    if wants_pretrained(cfg.pretrained):
        load_cnn6_pretrained(backbone, str(cfg.pretrained))
    return backbone, backbone.feature_dim


@register_model(
    "cnn6",
    CNN6Config,
    presets={
        # patch-mix CL's CNN6: no input BatchNorm, no fc1, no dropout
        "paper": {"channels": [64, 128, 256, 512], "embed_dim": 0, "input_batchnorm": False, "dropout": 0.0,
                  "block_dropout": 0.0},
        # PANNs' CNN6
        "panns": {"channels": [64, 128, 256, 512], "embed_dim": 512, "input_batchnorm": True, "dropout": 0.5,
                  "block_dropout": 0.2},
        "small": {"channels": [8, 16, 32, 64], "embed_dim": 64, "dropout": 0.2, "block_dropout": 0.1},
    },
    description="CNN6 (4 conv5x5 blocks 64-512, max+mean time pooling; paper = patch-mix CL's, panns = PANNs')",
    summaries={
        "paper": "4 conv5×5 blocks 64-512, no input BatchNorm, no fc1, no dropout (patch-mix CL's CNN6)",
        "panns": "input BatchNorm, 4 conv5×5 blocks 64-512, fc1 512, dropout 0.5/0.2 (PANNs' CNN6)",
        "small": "PANNs layout, blocks 8-64, fc1 64, dropout 0.2/0.1 (lungpipe's CPU size)",
    },
)
def build_cnn6(cfg: CNN6Config) -> CNN6Classifier:
    """CNN6 classifier: trunk (pretrained if asked) + fresh linear head."""
    backbone, _ = build_cnn6_backbone(cfg)
    return CNN6Classifier(cfg, backbone)
