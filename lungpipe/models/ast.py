"""Audio Spectrogram Transformer (AST) on transformers' ``ASTModel``.

The spectrogram ``(B, 1, frames, mel_bins)`` is cut into 16×16 patches with a frequency/time
stride (10 in the paper setting, so patches overlap), each patch is embedded, a CLS and a
distillation token are prepended, learned position embeddings are added and a ViT encoder runs.
The pooled feature is the mean of the two tokens' outputs; the head is LayerNorm + Linear
(as in AST's fine-tuning head).

Presets: ``paper`` is AST-base (hidden 768, 12 layers, 12 heads, MLP 3072, patch 16, stride 10)
for 798 × 128 inputs (8 s at 10 ms hop): 12 × 79 patches, ≈ 86.0 M parameters with a 4-class head.
``small`` is a 2-layer, 4-head, width-64 encoder with non-overlapping patches (stride 16) for CPU
tests and smoke runs, read out by a max over patch tokens (``pooling="max"``): trained from scratch
on the default profile's ~800 cycles, AST's own CLS/distillation readout stayed at test Score ≈ 0.35–0.5,
the max readout reaches ≈ 0.72 (it picks up short crackles and wheezes wherever they sit).

Pretrained weights (``pretrained``): a hub id (``transformers.ASTModel.from_pretrained``; the
ICBHI recipe's is :data:`AUDIOSET_HUB_ID`), a ``save_pretrained`` folder, or a state-dict file in
transformers' current or older key layout or in the original AST repository's (timm) layout.
Documented adaptations, logged when applied:

* classifier heads in the checkpoint (``classifier.*``, ``mlp_head.*``, ``head.*``) are dropped;
  this model's head starts fresh;
* the position embedding is resized to this model's patch grid when the checkpoint was trained on
  another input size (AudioSet's 1024 frames give 12 × 101 patches, 798 frames 12 × 79): the CLS
  and distillation positions are kept; a shorter time grid takes the centre columns of the
  checkpoint's grid (as the AST authors do; the kept part is copied unchanged), a longer one is
  bilinearly interpolated; a different number of frequency rows is bilinearly interpolated.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from lungpipe.models.base import LungModel
from lungpipe.models.pretrained import (
    LoadReport,
    PretrainedError,
    WeightSource,
    load_checked,
    read_state_dict,
    rename_keys,
    resolve_source,
    strip_prefix_before,
    wants_pretrained,
)
from lungpipe.models.registry import register_model
from lungpipe.util.typed_config import ConfigError

if TYPE_CHECKING:
    from transformers import ASTConfig  # lazy: heavy, and only AST models need it

log = logging.getLogger("lungpipe.models.pretrained")

#: The AudioSet-trained AST the ICBHI fine-tuning recipe starts from (10 s input, stride 10).
AUDIOSET_HUB_ID = "MIT/ast-finetuned-audioset-10-10-0.4593"
#: Patch grid (frequency rows, time columns) of AudioSet AST checkpoints: 128 bins × 1024 frames.
AUDIOSET_GRID = (12, 101)

_POS_KEY = "embeddings.position_embeddings"
_N_SPECIAL_TOKENS = 2  # CLS + distillation
POOLINGS = ("tokens", "mean", "max")
POS_EMBEDS = ("interpolated", "random")
ATTENTIONS = ("sdpa", "eager")
_HEAD_KEYS = (r"^(module\.)?(classifier|mlp_head|head)\.",)


@dataclass
class ASTModelConfig:
    """AST settings. ``n_frames`` × ``n_mels`` is the (fixed) input size the position grid is built for.

    ``pretrained_grid``: the checkpoint's patch grid ``[freq_rows, time_cols]`` for state-dict files
    whose grid cannot be inferred (folders and hub ids carry it in their config).
    """

    num_classes: int = 4
    n_frames: int = 798
    n_mels: int = 128
    pretrained: str | None = None
    dropout: float = 0.0
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    patch_size: int = 16
    frequency_stride: int = 10
    time_stride: int = 10
    encoder_dropout: float = 0.0
    attention_dropout: float = 0.0
    pretrained_grid: list[int] | None = None
    pooling: str = "tokens"  # "tokens": mean of CLS and distillation tokens (AST); "mean"/"max" over patch tokens
    pos_embed: str = "interpolated"  # "interpolated": checkpoint's position embedding adapted; "random": not loaded
    attention: str = "sdpa"  # transformers' attn_implementation: "sdpa" (fused kernels) or "eager"


def patch_grid(
    n_mels: int, n_frames: int, patch_size: int, frequency_stride: int, time_stride: int
) -> tuple[int, int]:
    """(frequency rows, time columns) of the patch grid for an input of ``n_frames`` × ``n_mels``."""
    return (n_mels - patch_size) // frequency_stride + 1, (n_frames - patch_size) // time_stride + 1


def _hf_config(cfg: ASTModelConfig) -> ASTConfig:
    """transformers' ``ASTConfig`` for these settings (input size fixed to n_frames × n_mels)."""
    from transformers import ASTConfig  # lazy: heavy, and only AST models need it

    if cfg.n_mels < cfg.patch_size or cfg.n_frames < cfg.patch_size:
        raise ConfigError(
            f"model ast: input {cfg.n_frames} frames × {cfg.n_mels} mel bins is smaller than one "
            f"{cfg.patch_size}×{cfg.patch_size} patch"
        )
    if cfg.pooling not in POOLINGS:
        raise ConfigError(f"model ast: pooling must be one of {POOLINGS}, got {cfg.pooling!r}")
    if cfg.pos_embed not in POS_EMBEDS:
        raise ConfigError(f"model ast: pos_embed must be one of {POS_EMBEDS}, got {cfg.pos_embed!r}")
    if cfg.attention not in ATTENTIONS:
        raise ConfigError(f"model ast: attention must be one of {ATTENTIONS}, got {cfg.attention!r}")
    if cfg.hidden_size % cfg.num_heads:
        raise ConfigError(
            f"model ast: hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_heads}"
        )
    return ASTConfig(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.mlp_dim,
        hidden_dropout_prob=cfg.encoder_dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        patch_size=cfg.patch_size,
        frequency_stride=cfg.frequency_stride,
        time_stride=cfg.time_stride,
        max_length=cfg.n_frames,
        num_mel_bins=cfg.n_mels,
        attn_implementation=cfg.attention,
    )


class ASTBackbone(nn.Module):
    """AST encoder: ``(B, 1, n_frames, n_mels)`` → pooled feature ``(B, hidden_size)``.

    ``self.ast`` is a plain ``transformers.ASTModel``; its ``save_pretrained`` folder can be
    loaded back through ``pretrained``.
    """

    def __init__(self, cfg: ASTModelConfig) -> None:
        super().__init__()
        from transformers import ASTModel  # lazy: heavy, and only AST models need it

        self.input_shape = (cfg.n_frames, cfg.n_mels)
        self.ast = ASTModel(_hf_config(cfg))
        self.feature_dim = cfg.hidden_size
        self.pooling = cfg.pooling
        emb = self.ast.embeddings
        # transformers starts tokens and positions at zero; a ViT trained from scratch does better
        # with small random values (std 0.02, as DeiT), which also makes the two tokens differ.
        for p in (emb.cls_token, emb.distillation_token, emb.position_embeddings):
            nn.init.trunc_normal_(p, std=0.02)

    @property
    def grid(self) -> tuple[int, int]:
        c = self.ast.config
        return patch_grid(c.num_mel_bins, c.max_length, c.patch_size, c.frequency_stride, c.time_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != self.input_shape:
            raise ValueError(
                f"AST expects spectrograms of shape (B, 1, {self.input_shape[0]}, {self.input_shape[1]}) "
                f"(frames, mel bins fixed at build time), got {tuple(x.shape)}"
            )
        out = self.ast(input_values=x[:, 0])
        if self.pooling == "mean":
            return out.last_hidden_state[:, _N_SPECIAL_TOKENS:].mean(dim=1)
        if self.pooling == "max":
            return out.last_hidden_state[:, _N_SPECIAL_TOKENS:].amax(dim=1)
        return out.pooler_output


class ASTClassifier(LungModel):
    """AST backbone + LayerNorm/Dropout/Linear head. ``forward_features`` gives ``(B, hidden_size)``."""

    def __init__(self, cfg: ASTModelConfig, backbone: ASTBackbone | None = None) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else ASTBackbone(cfg)
        dim = self.backbone.feature_dim
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Dropout(cfg.dropout), nn.Linear(dim, cfg.num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


# --- position-embedding adaptation ------------------------------------------------------------


def adapt_position_embedding(
    pos: torch.Tensor, source_grid: tuple[int, int], target_grid: tuple[int, int]
) -> torch.Tensor:
    """Resize AST position embeddings ``(1, 2 + F·T, D)`` from one patch grid to another.

    The two special-token positions are kept. Patch positions are laid out frequency-major (row
    ``f``, column ``t`` at index ``f·T + t``). Time: a shorter target takes columns
    ``T_src//2 - T_tgt//2`` onwards (the centre), a longer one is interpolated bilinearly.
    Frequency: interpolated bilinearly when the row counts differ.
    """
    (fs, ts), (ft, tt) = source_grid, target_grid
    n_src = pos.shape[1] - _N_SPECIAL_TOKENS
    if n_src != fs * ts:
        raise PretrainedError(
            f"position embedding has {n_src} patch positions, not {fs}×{ts}={fs * ts} for the stated grid"
        )
    special, patches = pos[:, :_N_SPECIAL_TOKENS], pos[:, _N_SPECIAL_TOKENS:]
    dim = pos.shape[-1]
    grid = patches.reshape(1, fs, ts, dim).permute(0, 3, 1, 2)  # (1, D, F, T)
    if tt < ts:
        start = ts // 2 - tt // 2
        grid = grid[..., start : start + tt]
    elif tt > ts:
        grid = nn.functional.interpolate(grid, size=(fs, tt), mode="bilinear", align_corners=False)
    if ft != fs:
        grid = nn.functional.interpolate(grid, size=(ft, tt), mode="bilinear", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, ft * tt, dim)
    return torch.cat([special, patches], dim=1).contiguous()


def _infer_grid(n_patches: int, target_grid: tuple[int, int], where: str) -> tuple[int, int]:
    """The checkpoint's patch grid from its number of patch positions (files carry no config)."""
    for rows in dict.fromkeys((target_grid[0], AUDIOSET_GRID[0])):
        if n_patches % rows == 0:
            return rows, n_patches // rows
    raise PretrainedError(
        f"{where}: cannot tell the patch grid of a position embedding with {n_patches} patches "
        f"(neither {target_grid[0]} nor {AUDIOSET_GRID[0]} frequency rows divide it); set "
        "pretrained_grid: [freq_rows, time_cols] or load a save_pretrained folder (its config says)"
    )


# --- checkpoint layouts -----------------------------------------------------------------------

# transformers < 5 named the encoder layers `encoder.layer.N` with BERT-style sub-modules.
_LEGACY_HF_RULES = (
    (r"(^|\.)encoder\.layer\.", r"\1layers."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
)

# The original AST repository keeps the timm ViT names under `v.` (fused qkv handled separately).
_TIMM_RULES = (
    (r"^v\.cls_token$", "embeddings.cls_token"),
    (r"^v\.dist_token$", "embeddings.distillation_token"),
    (r"^v\.pos_embed$", _POS_KEY),
    (r"^v\.patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^v\.blocks\.(\d+)\.norm1\.", r"layers.\1.layernorm_before."),
    (r"^v\.blocks\.(\d+)\.norm2\.", r"layers.\1.layernorm_after."),
    (r"^v\.blocks\.(\d+)\.attn\.proj\.", r"layers.\1.attention.o_proj."),
    (r"^v\.blocks\.(\d+)\.mlp\.fc([12])\.", r"layers.\1.mlp.fc\2."),
    (r"^v\.norm\.", "layernorm."),
)


def _split_fused_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".attn.qkv." in key:
            layer = key.split(".")[2]
            kind = key.rsplit(".", 1)[1]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"layers.{layer}.attention.{name}.{kind}"] = part.clone()
        else:
            out[key] = value
    return out


def to_transformers_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bring an AST state dict from any known layout to ``transformers.ASTModel``'s current keys.

    Handles wrapper prefixes (``module.``, ``audio_spectrogram_transformer.``, this zoo's
    ``backbone.ast.``), transformers < 5 names, and the original repository's timm names.
    """
    state = dict(state)
    if any(k.endswith(("v.blocks.0.attn.qkv.weight", "v.pos_embed")) for k in state):
        state = strip_prefix_before(state, ("v.pos_embed",))
        state = rename_keys(state, (*_TIMM_RULES, (r"^module\.", "")))
        return _split_fused_qkv(state)
    state = strip_prefix_before(state, ("embeddings.cls_token",))
    if any(".encoder.layer." in f".{k}" for k in state):
        state = rename_keys(state, _LEGACY_HF_RULES)
    return state


def _read_transformers_model(source: WeightSource) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
    """State dict and patch grid of a ``save_pretrained`` folder or hub id, via ``from_pretrained``."""
    from transformers import ASTModel  # lazy: heavy, and only AST models need it

    where = source.location
    if source.kind == "dir" and not (source.path / "config.json").is_file():
        raise PretrainedError(
            f"{where}: a folder of AST weights must be a save_pretrained folder with config.json "
            "(or point pretrained at a state-dict file)"
        )
    if source.kind == "dir":
        model_type = json.loads((source.path / "config.json").read_text()).get("model_type", "")
        if model_type and model_type != "audio-spectrogram-transformer":
            raise PretrainedError(f"{where}/config.json: model_type {model_type!r} is not an AST")
    try:
        model, info = ASTModel.from_pretrained(where, output_loading_info=True)
    except Exception as exc:  # hub/network/format errors come in many types
        hint = (
            ""
            if source.kind == "dir"
            else (
                f" (no local folder {Path(where).resolve()} exists either; without network access "
                "download the model elsewhere and set pretrained to its folder)"
            )
        )
        raise PretrainedError(f"could not load AST weights {where!r}: {exc}{hint}") from exc
    problems = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    if problems:
        raise PretrainedError(f"{where}: weights do not fill the AST it describes: {problems}")
    if info.get("unexpected_keys"):
        log.info("%s: not used (documented adaptation): %s", where, sorted(info["unexpected_keys"]))
    c = model.config
    grid = patch_grid(c.num_mel_bins, c.max_length, c.patch_size, c.frequency_stride, c.time_stride)
    return {k: v.detach().float() for k, v in model.state_dict().items()}, grid


def load_ast_pretrained(
    backbone: ASTBackbone, spec: str, pretrained_grid: list[int] | None = None, pos_embed: str = "interpolated"
) -> LoadReport:
    """Load ``spec`` (hub id, ``save_pretrained`` folder or state-dict file) into ``backbone.ast``.

    ``pos_embed="random"`` leaves the position embedding at its trunc-normal (std 0.02) init and
    loads everything else (ADD4RSC's release: its size check skips the AudioSet embedding).
    """
    source = resolve_source(spec, allow_hub_ids=True)
    if source.kind == "file":
        state = to_transformers_layout(read_state_dict(source.path))
        grid = tuple(pretrained_grid) if pretrained_grid else None
    else:
        state, grid = _read_transformers_model(source)
    adapted: list[str] = []
    keep_fresh: list[str] = []
    if pos_embed == "random":
        state.pop(_POS_KEY, None)
        keep_fresh.append(f"^{_POS_KEY}$")
        log.info("%s: position embedding not loaded (pos_embed: random, as ADD4RSC's release)", source.location)
    pos = state.get(_POS_KEY)
    target_pos = backbone.ast.embeddings.position_embeddings
    if pos is not None and (tuple(pos.shape) != tuple(target_pos.shape) or grid not in (None, backbone.grid)):
        if pos.shape[-1] != target_pos.shape[-1]:
            raise PretrainedError(
                f"{source.location}: hidden size {pos.shape[-1]} of the checkpoint differs from the "
                f"model's {target_pos.shape[-1]}; pick the preset the checkpoint was trained with"
            )
        n_patches = pos.shape[1] - _N_SPECIAL_TOKENS
        grid = grid or _infer_grid(n_patches, backbone.grid, source.location)
        state[_POS_KEY] = adapt_position_embedding(pos, grid, backbone.grid)
        (fs, ts), (ft, tt) = grid, backbone.grid
        adapted.append(f"{_POS_KEY} (patch grid {fs}×{ts} → {ft}×{tt})")
    return load_checked(
        backbone.ast, state, source=source.location, drop_source=_HEAD_KEYS, keep_target=keep_fresh, adapted=adapted
    )


# --- builders ---------------------------------------------------------------------------------


def build_ast_backbone(cfg: ASTModelConfig) -> tuple[ASTBackbone, int]:
    """The AST encoder without a head, with ``cfg.pretrained`` loaded: ``(module, feature_dim)``.

    The module maps ``(B, 1, cfg.n_frames, cfg.n_mels)`` to ``(B, cfg.hidden_size)``.
    """
    backbone = ASTBackbone(cfg)
    if wants_pretrained(cfg.pretrained):
        load_ast_pretrained(backbone, str(cfg.pretrained), cfg.pretrained_grid, cfg.pos_embed)
    return backbone, backbone.feature_dim


@register_model(
    "ast",
    ASTModelConfig,
    presets={
        "paper": {"n_frames": 798, "n_mels": 128},
        "small": {
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 4,
            "mlp_dim": 256,
            "frequency_stride": 16,
            "time_stride": 16,
            # trained from scratch on a few hundred cycles, the CLS/distillation readout stays near a
            # linear probe of the average spectrogram; a max over patch tokens finds the short events
            "pooling": "max",
        },
    },
    description="Audio Spectrogram Transformer (transformers ASTModel; AST-base, patch 16, stride 10)",
    summaries={
        "paper": "AST-base, 12 layers, 12 heads, width 768, 16×16 patches at stride 10 (as released)",
        "small": "2 layers, 4 heads, width 64, stride-16 patches, max over patch tokens (lungpipe's CPU size)",
    },
)
def build_ast(cfg: ASTModelConfig) -> ASTClassifier:
    """AST classifier: backbone (pretrained if asked) + fresh LayerNorm/Linear head."""
    backbone, _ = build_ast_backbone(cfg)
    return ASTClassifier(cfg, backbone)
