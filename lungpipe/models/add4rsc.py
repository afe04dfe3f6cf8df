"""ADD4RSC: adaptive differential denoising in front of an AST or ResNet50 backbone.

Dong et al., "Adaptive Differential Denoising for Respiratory Sounds Classification", Interspeech
2025 (arXiv 2506.02505); layout and sizes from the released code (DESIGN.md §4a).

Data path (``forward``)::

    x (B, 1, frames, mels)
      └─ bilinear resize to (time_tokens, d_model)       paper: 798×128 → 1024×256
         └─ tokens (B, T, d): T time tokens of d features
            └─ Adaptive Frequency Filter (AFF)           x + iFFT(S_α(M(FFT(x))))
               └─ Differential Denoise Layer(s) (DDL)    pre-norm MHDA + SwiGLU blocks
                  └─ (B, 1, T, d) spectrogram → backbone (registry "ast" / "resnet50") → logits

Training (``training_loss``, the one hook the engine calls) adds the bias denoising loss:
``bias_loss="label_smoothing"`` (released code) puts an auxiliary head Linear(d → K) on the mean of
the first two time tokens of the AFF output and pulls its softmax towards a label-smoothed target;
``bias_loss="view_consistency"`` (the paper's text) compares predictions on the batch and on a
SpecAugment-ed copy drawn inside the hook. Either way ``loss = β·bias + (1 − β)·CE``.

Registered as ``add4rsc_ast`` and ``add4rsc_resnet50`` with presets ``paper`` and ``small``. As
released, the AST inside ``add4rsc_ast``'s ``paper`` preset patches with stride 16 in both axes (1024
patches on 1024×256), its AudioSet weights come through the top-level ``pretrained`` option, and its
position embedding is left at random init (``pos_embed: random``; ``interpolated`` adapts AudioSet's).
The main loss is the criterion the engine passes (plain CE in the release: ``train.class_weighted: false``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lungpipe.models.base import Criterion, LossOutput, LungModel
from lungpipe.models.denoise.bias_loss import (
    BIAS_LOSSES,
    jensen_shannon_divergence,
    label_smoothing_kl,
    mix_losses,
)
from lungpipe.models.denoise.differential_attention import DifferentialDenoiseLayer, lambda_init_for_depth
from lungpipe.models.denoise.frequency_filter import AdaptiveFrequencyFilter
from lungpipe.models.registry import create_model, register_model
from lungpipe.training.augment import (
    RELEASE_FREQ_MASK_FRAC,
    RELEASE_TIME_MASK_FRAC,
    AugmentConfig,
    spec_augment,
)
from lungpipe.util.typed_config import ConfigError, merge

# Keys of the backbone's config that ADD4RSC derives itself.
_DERIVED_BACKBONE_KEYS = ("num_classes", "n_frames", "n_mels", "pretrained", "pos_embed")
POS_EMBEDS = ("random", "interpolated")


@dataclass
class ADD4RSCConfig:
    """ADD4RSC hyper-parameters (the released code's CLI names in brackets)."""

    num_classes: int = 4
    n_frames: int = 798  # input spectrogram frames
    n_mels: int = 128  # input mel bins
    # backbone weights (a path, hub id or alias; the AudioSet AST for add4rsc_ast's paper recipe);
    # None = the backbone's default. Set it here, at the top level, never under ``backbone``.
    pretrained: str | None = None
    # AST backbone only: "random" (release: the AudioSet position embedding is not loaded, it stays
    # at its trunc-normal std 0.02 init) or "interpolated" (the AudioSet embedding adapted to the grid)
    pos_embed: str = "random"
    time_tokens: int = 1024  # frames after the resize; 0 = keep n_frames
    denoise_d_model: int = 256  # [--denoise_d_model] = mel bins after the resize
    denoise_num_heads: int = 8  # [--denoise_num_heads]
    denoise_layers: int = 1  # stacked DDL blocks (the released code builds one)
    denoise_depth: int = 6  # [--denoise_depth] zero-based depth for λ_init (6 → 0.7008)
    aff_blocks: int = 8  # AFF block-diagonal blocks (256 channels → 8 × 32)
    aff_shrink: float = 0.01  # AFF soft-shrinkage threshold α
    loss_beta: float = 0.5  # [loss_beta] weight β of the bias term
    bias_loss: str = "label_smoothing"  # "label_smoothing" (released code) | "view_consistency"
    label_smoothing: float = 0.2  # ε of the label_smoothing variant (0.8 on the true class)
    specaug_freq_masks: int = 2  # view_consistency: frequency masks of the augmented view
    specaug_time_masks: int = 2  # view_consistency: time masks of the augmented view
    # view_consistency: max mask width / mel bins and / frames (the release's 48/128 and 160/798)
    specaug_freq_fraction: float = RELEASE_FREQ_MASK_FRAC
    specaug_time_fraction: float = RELEASE_TIME_MASK_FRAC
    dropout: float = 0.0  # on the DDL's residual branches
    backbone: dict[str, Any] = field(default_factory=lambda: {"preset": "paper"})  # backbone config

    @property
    def token_shape(self) -> tuple[int, int]:
        """(time tokens, features) the denoiser and the backbone see."""
        return (self.time_tokens or self.n_frames, self.denoise_d_model)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first inconsistent field."""
        where = "model add4rsc"
        if self.bias_loss not in BIAS_LOSSES:
            raise ConfigError(f"{where}.bias_loss: {self.bias_loss!r} is not one of {list(BIAS_LOSSES)}")
        if not 0.0 <= self.loss_beta <= 1.0:
            raise ConfigError(f"{where}.loss_beta: must be in [0, 1], got {self.loss_beta}")
        if self.denoise_d_model % self.denoise_num_heads:
            raise ConfigError(
                f"{where}.denoise_d_model ({self.denoise_d_model}) must be divisible by "
                f"denoise_num_heads ({self.denoise_num_heads})"
            )
        if self.denoise_d_model % self.aff_blocks:
            raise ConfigError(
                f"{where}.denoise_d_model ({self.denoise_d_model}) must be divisible by aff_blocks ({self.aff_blocks})"
            )
        if self.denoise_layers < 1:
            raise ConfigError(f"{where}.denoise_layers: need at least 1, got {self.denoise_layers}")
        if self.time_tokens < 0 or self.num_classes < 2 or self.n_frames < 2 or self.n_mels < 1:
            raise ConfigError(
                f"{where}: need time_tokens >= 0, num_classes >= 2, n_frames >= 2, n_mels >= 1; got "
                f"{self.time_tokens}, {self.num_classes}, {self.n_frames}, {self.n_mels}"
            )
        if self.pos_embed not in POS_EMBEDS:
            raise ConfigError(f"{where}.pos_embed: {self.pos_embed!r} is not one of {list(POS_EMBEDS)}")
        if not isinstance(self.backbone, dict):
            raise ConfigError(
                f"{where}.backbone: expected a mapping of backbone settings, got {self.backbone!r}"
            )
        derived = sorted(set(self.backbone) & set(_DERIVED_BACKBONE_KEYS))
        if derived:
            raise ConfigError(
                f"{where}.backbone: {derived} are set by ADD4RSC itself (num_classes, the resized shape "
                f"time_tokens × denoise_d_model, and its own top-level 'pretrained' and 'pos_embed'); "
                f"remove them from backbone and set e.g. model.pretrained instead of model.backbone.pretrained"
            )


# paper: the released code's sizes (798×128 → 1024 time tokens × 256 features, 8 heads, one DDL).
PAPER_PRESET: dict[str, Any] = {
    "time_tokens": 1024,
    "denoise_d_model": 256,
    "denoise_num_heads": 8,
    "denoise_layers": 1,
    "denoise_depth": 6,
    "aff_blocks": 8,
    "pos_embed": "random",
    "backbone": {"preset": "paper"},
}
# The AST inside the release patches with stride 16 in both axes: 16 × 64 = 1024 patches on 1024×256.
AST_PAPER_PRESET: dict[str, Any] = {
    **PAPER_PRESET,
    "backbone": {"preset": "paper", "frequency_stride": 16, "time_stride": 16},
}

# small: fast CPU runs. 64 features = the default profile's 64 mel bins, so the mel axis is not resized
# (halving it to 32 blurred wheezes away and the model stopped learning); every input frame is a time
# token (the default profile's 4 s cycles at a 20 ms hop give 199; halving them cost ADD4RSC-AST ~0.1 Score).
SMALL_PRESET: dict[str, Any] = {
    "time_tokens": 0,
    "denoise_d_model": 64,
    "denoise_num_heads": 4,
    "denoise_layers": 1,
    "denoise_depth": 6,
    "aff_blocks": 4,
    "backbone": {"preset": "small"},
}

PRESETS = {"paper": PAPER_PRESET, "small": SMALL_PRESET}  # add4rsc_resnet50
AST_PRESETS = {"paper": AST_PAPER_PRESET, "small": SMALL_PRESET}  # add4rsc_ast


class AdaptiveDifferentialDenoiser(nn.Module):
    """AFF followed by ``layers`` DDL blocks on ``(B, T, d)`` time tokens.

    Returns ``(denoised, filtered)``: the DDL output and the AFF output (the auxiliary head of the
    label-smoothing bias loss reads the latter). Layer ``i`` uses λ_init(depth + i).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        layers: int = 1,
        depth: int = 6,
        aff_blocks: int = 8,
        aff_shrink: float = 0.01,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.frequency_filter = AdaptiveFrequencyFilter(d_model, num_blocks=aff_blocks, shrink=aff_shrink)
        self.layers = nn.ModuleList(
            DifferentialDenoiseLayer(d_model, num_heads, lambda_init_for_depth(depth + i), dropout=dropout)
            for i in range(layers)
        )

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        filtered = self.frequency_filter(tokens)
        out = filtered
        for layer in self.layers:
            out = layer(out)
        return out, filtered


class ADD4RSC(LungModel):
    """Denoiser + backbone. ``forward`` gives the backbone's logits; ``training_loss`` adds the bias term.

    ``backbone`` is any module mapping ``(B, 1, T, d)`` spectrograms (``T, d = cfg.token_shape``)
    to ``(B, num_classes)`` logits; the registry builders pass AST or ResNet50.
    """

    def __init__(self, cfg: ADD4RSCConfig, backbone: nn.Module):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.denoise_d_model
        self.denoiser = AdaptiveDifferentialDenoiser(
            d,
            cfg.denoise_num_heads,
            layers=cfg.denoise_layers,
            depth=cfg.denoise_depth,
            aff_blocks=cfg.aff_blocks,
            aff_shrink=cfg.aff_shrink,
            dropout=cfg.dropout,
        )
        # The auxiliary head exists only where its loss is used, so every parameter gets a gradient.
        self.aux_head = nn.Linear(d, cfg.num_classes) if cfg.bias_loss == "label_smoothing" else None
        self.backbone = backbone

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, frames, mels)`` → ``(B, T, d)``: bilinear resize to the token grid."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"ADD4RSC expects spectrograms (batch, 1, frames, mels), got {tuple(x.shape)}")
        size = self.cfg.token_shape
        if tuple(x.shape[-2:]) != size:
            shrinking = x.shape[-2] > size[0] or x.shape[-1] > size[1]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
        return x[:, 0]

    def denoise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(denoised spectrogram (B, 1, T, d), AFF output tokens (B, T, d))``."""
        denoised, filtered = self.denoiser(self.to_tokens(x))
        return denoised.unsqueeze(1), filtered

    def aux_logits(self, filtered: torch.Tensor) -> torch.Tensor:
        """Auxiliary head on the mean of the first two time tokens of the AFF output."""
        if self.aux_head is None:
            raise RuntimeError("aux_logits: this model was built with bias_loss='view_consistency'")
        return self.aux_head(filtered[:, :2].mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        denoised, _ = self.denoise(x)
        return self.backbone(denoised)

    def augmented_view(self, x: torch.Tensor) -> torch.Tensor:
        """A SpecAugment-ed copy of ``x`` (masks filled with each spectrogram's mean)."""
        cfg = self.cfg
        aug = AugmentConfig(
            freq_masks=cfg.specaug_freq_masks,
            freq_mask_frac=cfg.specaug_freq_fraction,
            time_masks=cfg.specaug_time_masks,
            time_mask_frac=cfg.specaug_time_fraction,
            fill="mean",
        )
        return spec_augment(x, aug)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, criterion: Criterion) -> LossOutput:
        """``β·bias + (1 − β)·criterion(logits, y)``; parts ``ce`` and ``bias`` for logging."""
        if self.cfg.bias_loss == "label_smoothing":
            denoised, filtered = self.denoise(x)
            logits = self.backbone(denoised)
            bias = label_smoothing_kl(self.aux_logits(filtered), y, self.cfg.label_smoothing)
        else:
            logits = self(x)
            bias = jensen_shannon_divergence(logits, self(self.augmented_view(x)))
        ce = criterion(logits, y)
        loss = mix_losses(ce, bias, self.cfg.loss_beta)
        return LossOutput(loss=loss, logits=logits, parts={"ce": ce.detach(), "bias": bias.detach()})


def build_backbone(name: str, cfg: ADD4RSCConfig) -> nn.Module:
    """The registry backbone ``name`` built for the resized input ``cfg.token_shape``."""
    n_frames, n_mels = cfg.token_shape
    mapping: dict[str, Any] = {"num_classes": cfg.num_classes, "n_frames": n_frames, "n_mels": n_mels}
    if cfg.pretrained is not None:
        mapping["pretrained"] = cfg.pretrained
    if name == "ast":
        mapping["pos_embed"] = "random" if cfg.pos_embed == "random" else "interpolated"
    return create_model(name, merge(cfg.backbone, mapping))


def _build(backbone_name: str, cfg: ADD4RSCConfig) -> ADD4RSC:
    cfg.validate()
    return ADD4RSC(cfg, build_backbone(backbone_name, cfg))


@register_model(
    "add4rsc_ast",
    ADD4RSCConfig,
    AST_PRESETS,
    "ADD4RSC denoiser (adaptive frequency filter + differential denoise layer) before AST",
    summaries={
        "paper": "AFF + 1 DDL (d 256, 8 heads) on 1024×256 tokens, then AST-base with stride-16 patches "
        "(1024), position embedding left random (as released)",
        "small": "AFF + 1 DDL (d 64, 4 heads) on every input frame, then the small AST (lungpipe's CPU size)",
    },
)
def build_add4rsc_ast(cfg: ADD4RSCConfig) -> ADD4RSC:
    return _build("ast", cfg)


@register_model(
    "add4rsc_resnet50",
    ADD4RSCConfig,
    PRESETS,
    "ADD4RSC denoiser (adaptive frequency filter + differential denoise layer) before ResNet50",
    summaries={
        "paper": "AFF + 1 DDL (d 256, 8 heads) on 1024×256 tokens, then ResNet50 3-4-6-3 (as released)",
        "small": "AFF + 1 DDL (d 64, 4 heads) on every input frame, then ResNet 1-1-1-1 width 16 (lungpipe's CPU size)",
    },
)
def build_add4rsc_resnet50(cfg: ADD4RSCConfig) -> ADD4RSC:
    return _build("resnet50", cfg)
