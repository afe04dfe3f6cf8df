"""Every shape inside MRINet, derived from the config, with a clear error for impossible ones.

Frequency branch: the 7×7 stride-2 stem with padding (5, 3) (time, freq) takes ``T`` frames to
``⌊(T + 3)/2⌋ + 1`` and ``F`` bins to ``⌈F/2⌉``; the 3/2 max-pool (padding 1) halves both axes
rounding up; each of the ``len(blocks) - 1`` transitions halves them rounding down
(1024 × 64 → 514 × 32 → 257 × 16 → 128 × 8 → 64 × 4 → 32 × 2).

Time branch (HTS-AT's folding): the ``(target_frames, n_mels)`` spectrogram is cut into ``chunks``
equal runs of frames, and the chunks are stacked along the frequency axis into an image of
``chunks·n_mels`` rows × ``target_frames/chunks`` columns (1024×64 in 4 chunks → 256×256). The Swin
encoder patches it (stride ``swin_patch``) and halves it between stages; at the end the token rows
are ungrouped back into chunks, giving a ``(n_mels/D, target_frames/D)`` map with
``D = swin_patch·2^(stages-1)``. That needs ``D`` to divide ``n_mels`` (chunk borders fall between
token rows) and ``target_frames/chunks``, and every stage's token grid to be divisible by its window.

The branch attention adds the two maps, so their (freq, time) sizes must agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lungpipe.models.mrinet.config import LOSSES, TIME_POOLS, TIME_RESIZES, MRINetConfig
from lungpipe.util.typed_config import ConfigError

#: The released stem's padding, (time, freq): asymmetric, so the time axis grows by 3 frames.
STEM_PADDING = (5, 3)
_STEM_KERNEL = 7


@dataclass(frozen=True)
class SwinStagePlan:
    """One Swin stage: token grid (rows, cols), width, heads, depth, window and shift."""

    grid: tuple[int, int]
    dim: int
    heads: int
    depth: int
    window: int
    shift: int


@dataclass(frozen=True)
class MRINetGeometry:
    """Shapes MRINet's modules are built for."""

    chunks: int
    image: tuple[int, int]
    swin_stages: tuple[SwinStagePlan, ...]
    freq_map: tuple[int, int]
    time_map: tuple[int, int]
    class_frames: int


def _fail(msg: str) -> None:
    raise ConfigError(f"model mrinet: {msg}")


def _check_sizes(cfg: MRINetConfig) -> None:
    positive = {
        "num_classes": cfg.num_classes,
        "n_frames": cfg.n_frames,
        "n_mels": cfg.n_mels,
        "target_frames": cfg.target_frames,
        "swin_dim": cfg.swin_dim,
        "swin_window": cfg.swin_window,
        "swin_patch": cfg.swin_patch,
        "fused_channels": cfg.fused_channels,
        "head_channels": cfg.head_channels,
    }
    for name, value in positive.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            _fail(f"{name} must be a positive integer, got {value!r}")
    if not cfg.blocks or len(cfg.blocks) != len(cfg.widths):
        _fail(f"blocks {cfg.blocks} and widths {cfg.widths} must be non-empty lists of the same length")
    if any(b < 1 for b in cfg.blocks) or any(w < 1 for w in cfg.widths):
        _fail(f"blocks {cfg.blocks} and widths {cfg.widths} must hold positive integers")
    if not cfg.swin_depths or len(cfg.swin_depths) != len(cfg.swin_heads):
        _fail(
            f"swin_depths {cfg.swin_depths} and swin_heads {cfg.swin_heads} "
            "must be non-empty lists of the same length"
        )
    if any(d < 1 for d in cfg.swin_depths) or any(h < 1 for h in cfg.swin_heads):
        _fail(f"swin_depths {cfg.swin_depths} and swin_heads {cfg.swin_heads} must hold positive integers")
    for i, heads in enumerate(cfg.swin_heads):
        dim = cfg.swin_dim * 2**i
        if dim % heads:
            _fail(f"Swin stage {i} has width {dim}, not divisible by its {heads} heads (swin_heads)")
    if not 0.0 <= cfg.swin_drop_path < 1.0:
        _fail(f"swin_drop_path {cfg.swin_drop_path} must lie in [0, 1)")
    if cfg.time_resize not in TIME_RESIZES:
        _fail(f"time_resize {cfg.time_resize!r} is not one of {list(TIME_RESIZES)}")
    if cfg.time_resize == "bicubic_up" and cfg.n_frames > cfg.target_frames:
        _fail(
            f"inputs of {cfg.n_frames} frames are longer than target_frames {cfg.target_frames}, and "
            f"time_resize 'bicubic_up' (the release) only upsamples: raise target_frames, shorten the "
            f"features (frontend cycle max_len_s), or set time_resize: bilinear"
        )
    if cfg.loss not in LOSSES:
        _fail(f"loss {cfg.loss!r} is not one of {list(LOSSES)}")
    if cfg.time_pool not in TIME_POOLS:
        _fail(f"time_pool {cfg.time_pool!r} is not one of {list(TIME_POOLS)}")
    if cfg.focal_gamma < 0 or cfg.focal_alpha <= 0:
        _fail(f"focal_gamma {cfg.focal_gamma} must be >= 0 and focal_alpha {cfg.focal_alpha} > 0")
    stripes = {
        "specaug_time_stripes": cfg.specaug_time_stripes,
        "specaug_time_width": cfg.specaug_time_width,
        "specaug_freq_stripes": cfg.specaug_freq_stripes,
        "specaug_freq_width": cfg.specaug_freq_width,
    }
    for name, value in stripes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            _fail(f"{name} must be an integer >= 0, got {value!r}")
    if cfg.specaug_freq_stripes and cfg.specaug_freq_width > cfg.n_mels:
        _fail(f"specaug_freq_width {cfg.specaug_freq_width} exceeds n_mels {cfg.n_mels}")
    if cfg.swin_mlp_ratio <= 0:
        _fail(f"swin_mlp_ratio must be positive, got {cfg.swin_mlp_ratio}")


def frequency_map_size(cfg: MRINetConfig) -> tuple[int, int]:
    """(freq, time) of the frequency branch's output."""
    pad_t, pad_f = STEM_PADDING
    time = (cfg.target_frames + 2 * pad_t - _STEM_KERNEL) // 2 + 1
    freq = (cfg.n_mels + 2 * pad_f - _STEM_KERNEL) // 2 + 1
    if time < 1 or freq < 1:
        _fail(f"a {cfg.target_frames}×{cfg.n_mels} input is smaller than the 7×7 stem")
    freq, time = math.ceil(freq / 2), math.ceil(time / 2)
    for stage in range(1, len(cfg.blocks)):
        if freq < 2 or time < 2:
            _fail(
                f"the frequency branch's map is {freq}×{time} (freq×time) before transition {stage}, too "
                f"small for its 2×2 pooling: use fewer stages (blocks/widths), or more n_mels/target_frames"
            )
        freq, time = freq // 2, time // 2
    return freq, time


def _swin_plan(cfg: MRINetConfig, chunks: int) -> tuple[tuple[SwinStagePlan, ...], tuple[int, int]] | str:
    """The Swin stages for a fold into ``chunks``, or a string saying why that fold cannot work."""
    n_stages = len(cfg.swin_depths)
    down = cfg.swin_patch * 2 ** (n_stages - 1)
    rows, cols = chunks * cfg.n_mels, cfg.target_frames // chunks
    if cfg.n_mels % down or cols % down:
        return (
            f"folding {cfg.target_frames} frames into {chunks} chunks gives a {rows}×{cols} image; the time "
            f"branch shrinks it by swin_patch·2^(stages-1) = {down}, which must divide both n_mels "
            f"({cfg.n_mels}) and the chunk length ({cols})"
        )
    grid = (rows // cfg.swin_patch, cols // cfg.swin_patch)
    stages = []
    for i, (depth, heads) in enumerate(zip(cfg.swin_depths, cfg.swin_heads)):
        window = min(cfg.swin_window, *grid)
        shift = window // 2 if min(grid) > cfg.swin_window else 0
        if grid[0] % window or grid[1] % window:
            return (
                f"Swin stage {i} has a {grid[0]}×{grid[1]} token grid, "
                f"not divisible into {window}×{window} "
                f"windows (swin_window {cfg.swin_window})"
            )
        stages.append(SwinStagePlan(grid, cfg.swin_dim * 2**i, heads, depth, window, shift))
        grid = (grid[0] // 2, grid[1] // 2)
    return tuple(stages), (cfg.n_mels // down, cfg.target_frames // down)


def _fold_candidates(cfg: MRINetConfig) -> list[int]:
    if cfg.fold_chunks is not None:
        if cfg.fold_chunks < 1 or cfg.target_frames % cfg.fold_chunks:
            _fail(
                f"fold_chunks {cfg.fold_chunks} must be a positive divisor of "
                f"target_frames {cfg.target_frames}"
            )
        return [cfg.fold_chunks]
    divisors = [c for c in range(1, cfg.target_frames + 1) if cfg.target_frames % c == 0]

    def squareness(c: int) -> tuple[float, int]:  # |log(rows/cols)|, then fewer chunks
        return abs(math.log(c * cfg.n_mels) - math.log(cfg.target_frames // c)), c

    return sorted(divisors, key=squareness)


def plan_geometry(cfg: MRINetConfig) -> MRINetGeometry:
    """Check ``cfg`` and derive every shape; :class:`ConfigError` says what cannot work and why."""
    _check_sizes(cfg)
    freq_map = frequency_map_size(cfg)
    reasons: list[str] = []
    for chunks in _fold_candidates(cfg):
        plan = _swin_plan(cfg, chunks)
        if isinstance(plan, str):
            reasons.append(plan)
            continue
        stages, time_map = plan
        if time_map != freq_map:
            reasons.append(
                f"folding into {chunks} chunks, the time branch gives a {time_map[0]}×{time_map[1]} map "
                f"(freq×time) but the frequency branch {freq_map[0]}×{freq_map[1]}; they must match "
                f"(the frequency branch shrinks by 4·2^(len(blocks)-1), the time branch by "
                f"swin_patch·2^(len(swin_depths)-1))"
            )
            continue
        rows = chunks * cfg.n_mels
        cols = cfg.target_frames // chunks
        class_frames = (freq_map[1] - 1) // 2 + 1
        return MRINetGeometry(chunks, (rows, cols), stages, freq_map, time_map, class_frames)
    _fail(
        f"no way to fold a {cfg.target_frames}-frame × {cfg.n_mels}-mel spectrogram for the time branch: "
        f"{reasons[0]}. Fix target_frames, n_mels, swin_patch, swin_window or the stage counts "
        f"(the paper geometry: 1024 frames, 64 mels, patch 4, window 8, 4 + 4 stages)"
    )
    raise AssertionError("unreachable")
