"""ResNet50 (bottleneck ResNet) on single-channel spectrograms.

The network is torchvision's ResNet design (ResNet v1.5: the 3×3 conv of a bottleneck strides) with
the stage depths and the stem width as settings: a 7×7/2 stem conv (``in_channels`` → width), BN,
ReLU, 3×3/2 max-pool, stages ``layer1``… with ``width·2^i`` bottleneck planes (output ×4), the
first block of stages 2+ striding by 2, global average pooling, dropout, a linear head. The
bottleneck block is lungpipe's own (:class:`BottleneckBlock`); its module names and creation order
equal torchvision's, so ImageNet ResNet50 state dicts load by name and a seeded build draws the
same initial weights. torchvision is imported only when its ImageNet weights are asked for.

Presets: ``paper`` = ResNet50 (depths 3-4-6-3, width 64, 2048-d feature) with a 1-channel stem
and a ``num_classes`` head (23,509,956 parameters for 4 classes); ``small`` = the same design
with one bottleneck per stage and width 16 (depths 1-1-1-1, widths 16-32-64-128, 512-d feature).

Pretrained weights (``pretrained``): a state-dict file (torchvision's ResNet50 files, or a
checkpoint of this model), or ``imagenet`` / ``IMAGENET1K_V1`` / ``IMAGENET1K_V2`` (torchvision's
weights, downloaded into torch's cache). Documented adaptations, logged: a 3-channel first conv is
averaged over its input channels into one (``in_channels=1``); the 1000-class ``fc`` (or a
checkpoint's ``head``) is dropped and the head starts fresh.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lungpipe.models.base import LungModel, init_conv_bn
from lungpipe.models.pretrained import (
    LoadReport,
    PretrainedError,
    download_state_dict,
    load_checked,
    read_state_dict,
    resolve_source,
    strip_prefix_before,
    wants_pretrained,
)
from lungpipe.models.registry import register_model
from lungpipe.util.typed_config import ConfigError

#: Names accepted for torchvision's ImageNet ResNet50 weights (downloaded; not reachable offline).
#: ``imagenet`` is V1, what ``resnet50(pretrained=True)`` gave in the patch-mix/ADD4RSC code.
IMAGENET_ALIASES = {
    "imagenet": "IMAGENET1K_V1",
    "IMAGENET1K_V1": "IMAGENET1K_V1",
    "IMAGENET1K_V2": "IMAGENET1K_V2",
}
_HEAD_KEYS = (r"^(fc|head)\.",)


@dataclass
class ResNetConfig:
    """ResNet settings. ``layers``: bottleneck blocks per stage; ``base_width``: stem/first-stage width.

    ``n_frames``/``n_mels`` are accepted for the zoo contract; the network takes any input size
    of at least 32 × 32.
    """

    num_classes: int = 4
    n_frames: int = 798
    n_mels: int = 128
    pretrained: str | None = None
    dropout: float = 0.0
    layers: tuple[int, ...] = (3, 4, 6, 3)
    base_width: int = 64


class BottleneckBlock(nn.Module):
    """Residual bottleneck: 1×1 conv reducing to ``planes`` channels, 3×3 conv (carrying the
    block's ``stride``), 1×1 conv expanding to ``planes · expansion``, each followed by BN (and
    ReLU but the last); the input, passed through ``downsample`` when given, is added before the
    final ReLU. Convolutions have no bias (BN follows them)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        # submodules in this order: their names are the state-dict keys, their creation order the RNG draws
        self.conv1 = nn.Conv2d(in_ch, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        y += x if self.downsample is None else self.downsample(x)
        return self.relu(y)


class BottleneckResNet(nn.Module):
    """Bottleneck ResNet trunk: ``(B, in_channels, H, W)`` → pooled feature ``(B, feature_dim)``."""

    #: the training engine may put the convolutions in channels_last memory format
    prefers_channels_last = True

    def __init__(
        self, layers: tuple[int, ...] | list[int], base_width: int = 64, in_channels: int = 1
    ) -> None:
        super().__init__()
        if not layers or any(n < 1 for n in layers) or base_width < 1:
            raise ConfigError(
                f"resnet: need positive block counts and base_width ≥ 1, got {layers}, {base_width}"
            )
        self.conv1 = nn.Conv2d(in_channels, base_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = base_width
        for i, blocks in enumerate(layers):
            planes = base_width * 2**i
            stage, channels = self._stage(channels, planes, blocks, stride=1 if i == 0 else 2)
            self.add_module(f"layer{i + 1}", stage)
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels
        self._init_weights()
        # channels-last convolutions are markedly faster on CPU (oneDNN), above all the 1-channel stem
        self.to(memory_format=torch.channels_last)

    @staticmethod
    def _stage(in_ch: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
        out_ch = planes * BottleneckBlock.expansion
        shortcut = None
        if stride != 1 or in_ch != out_ch:
            shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        units = [BottleneckBlock(in_ch, planes, stride=stride, downsample=shortcut)]
        units += [BottleneckBlock(out_ch, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*units), out_ch

    def _init_weights(self) -> None:
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return torch.flatten(self.avgpool(x), 1)


class ResNetClassifier(LungModel):
    """Bottleneck ResNet + dropout + linear head. ``forward_features`` gives ``(B, feature_dim)``."""

    def __init__(self, cfg: ResNetConfig, backbone: BottleneckResNet | None = None) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else BottleneckResNet(cfg.layers, cfg.base_width)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.backbone.feature_dim, cfg.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.forward_features(x)))


def _adapt_first_conv(state: dict[str, torch.Tensor], in_channels: int, where: str) -> list[str]:
    weight = state.get("conv1.weight")
    if weight is None or weight.shape[1] == in_channels:
        return []
    if in_channels != 1:
        raise PretrainedError(
            f"{where}: conv1 has {weight.shape[1]} input channels, the model {in_channels}; only "
            "averaging into one channel is supported"
        )
    state["conv1.weight"] = weight.mean(dim=1, keepdim=True)
    return [f"conv1.weight ({weight.shape[1]} input channels averaged into 1)"]


def load_resnet_pretrained(backbone: BottleneckResNet, spec: str) -> LoadReport:
    """Load ``spec`` (state-dict file or an ImageNet alias) into ``backbone``."""
    source = resolve_source(spec, aliases=IMAGENET_ALIASES)
    if source.kind == "remote":
        if source.location in IMAGENET_ALIASES.values():
            # lazy: torchvision (its import pulls in torch._dynamo, ~2 s) only names the weights' URL
            from torchvision.models import ResNet50_Weights

            url = ResNet50_Weights[source.location].url
        else:
            url = source.location
        state = download_state_dict(url)
    elif source.kind == "dir":
        raise PretrainedError(f"{source.location} is a folder; ResNet weights must be a state-dict file")
    else:
        state = read_state_dict(source.path)
    state = strip_prefix_before(state, ("layer1.0.conv1.weight",))
    in_channels = backbone.conv1.in_channels
    adapted = _adapt_first_conv(state, in_channels, source.location)
    return load_checked(backbone, state, source=source.location, drop_source=_HEAD_KEYS, adapted=adapted)


def build_resnet50_backbone(cfg: ResNetConfig, in_channels: int = 1) -> tuple[BottleneckResNet, int]:
    """The ResNet trunk without a head, with ``cfg.pretrained`` loaded: ``(module, feature_dim)``.

    The module maps ``(B, in_channels, H, W)`` to ``(B, feature_dim)`` (2048 at the paper preset).
    """
    backbone = BottleneckResNet(cfg.layers, cfg.base_width, in_channels=in_channels)
    if wants_pretrained(cfg.pretrained):
        load_resnet_pretrained(backbone, str(cfg.pretrained))
    return backbone, backbone.feature_dim


@register_model(
    "resnet50",
    ResNetConfig,
    presets={
        "paper": {"layers": [3, 4, 6, 3], "base_width": 64},
        "small": {"layers": [1, 1, 1, 1], "base_width": 16},
    },
    description="ResNet50 (torchvision bottleneck design), 1-channel stem",
    summaries={
        "paper": "ResNet50, 3-4-6-3 bottleneck blocks, width 64, 1-channel stem",
        "small": "1-1-1-1 bottleneck blocks, width 16 (lungpipe's CPU size)",
    },
)
def build_resnet50(cfg: ResNetConfig) -> ResNetClassifier:
    """ResNet classifier on ``(B, 1, frames, mel_bins)``: trunk (pretrained if asked) + fresh head."""
    backbone, _ = build_resnet50_backbone(cfg, in_channels=1)
    return ResNetClassifier(cfg, backbone)
