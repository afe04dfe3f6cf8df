"""MRINet's configuration dataclass and its named presets.

The dataclass defaults are the ``paper`` preset: the released code (interlaced blocks
[6, 8, 12, 10], widths 64–512, HTS-AT's Swin-Tiny, 64 mel bins brought to 1024 frames by bicubic
upsampling, SpecAugment and focal loss inside the model), 119,733,980 trainable parameters at 4
classes. ``paper67m`` is lungpipe's own approximation of the paper's stated 67.15 M (which the
public code cannot give): the last frequency stage cut to 2 blocks, 69.32 M. ``small`` is a
CPU-sized model for tests, smoke runs and tuning on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MRINetConfig:
    """Every size and switch of MRINet; all geometry is derived from these fields.

    Input and resizing:
        num_classes, n_frames, n_mels: the spectrogram batches the model is fed,
            ``(B, 1, n_frames, n_mels)``.
        target_frames: the time axis is brought to this many frames before both branches.
        time_resize: how: ``"bicubic_up"`` (released: bicubic, ``align_corners=True``, upsampling
            only; a longer input is an error) or ``"bilinear"`` (lungpipe's, either direction; the
            ``small`` preset uses it to shrink 199 frames to 192 on a CPU).
        mel_batchnorm: a BatchNorm over mel bins on the input (HTS-AT's ``bn0``), the only input
            normalisation of the release (its features are not standardised beforehand).
    SpecAugment inside the model (released, HTS-AT's torchlibrosa stripes), in training mode only,
    after ``bn0`` and before the time resize; zero fill; a stripe's width is drawn uniformly from
    ``[0, width)``:
        specaug_time_stripes, specaug_time_width (release 2, 64: at most 63 frames),
        specaug_freq_stripes, specaug_freq_width (release 2, 8: at most 7 bins). 0 stripes: off.
    Loss (``training_loss``):
        loss: ``"focal"`` (released: ``alpha·(1 − p_y)^gamma·(−log p_y)`` on softmax
            probabilities, batch mean; the engine's criterion, class weights and mixup are then not
            used) or ``"criterion"`` (the engine's criterion).
        focal_gamma, focal_alpha: released 2.0 and 0.5.
    Frequency branch (interlaced two-stream CNN):
        blocks: interlaced blocks per stage; widths: channels of *each* of the two streams per stage
            (the first width is also the stem's output channels).
    Time branch (Swin transformer on the folded spectrogram):
        swin_dim, swin_depths, swin_heads, swin_window, swin_patch, swin_mlp_ratio,
        swin_drop_path (stochastic depth, rising linearly to this value over all blocks),
        fold_chunks: time chunks the spectrogram is folded into (``None``: the divisor of
            ``target_frames`` giving the most nearly square image that fits the geometry).
    Fusion and head:
        fused_channels: channels of both branch outputs at the branch attention.
        head_channels: channels after the frequency-collapsing convolution.
        time_pool: how the head's class × time map becomes logits: ``"mean"`` over time (released)
            or ``"max"`` (lungpipe's; the ``small`` preset uses it: trained from scratch on a few
            hundred cycles, the time mean dilutes short crackles and wheezes and stays near chance).
    Weights:
        pretrained: a state-dict file of this architecture (same config); loaded strictly.
        time_pretrained: an HTS-AT checkpoint (its Swin and ``bn0`` weights are loaded) or an
            ImageNet Swin checkpoint (its RGB patch embedding averaged to one channel), loaded
            non-strictly as released: keys that do not fit are listed in the log, but a file
            from which no Swin weight loads is an error. Loaded first, so ``pretrained``
            overrides it. ``None``/``"none"``: random init; a path that does not exist is an error.
    """

    num_classes: int = 4
    n_frames: int = 1024
    n_mels: int = 64
    target_frames: int = 1024
    time_resize: str = "bicubic_up"
    mel_batchnorm: bool = True
    specaug_time_stripes: int = 2
    specaug_time_width: int = 64
    specaug_freq_stripes: int = 2
    specaug_freq_width: int = 8
    loss: str = "focal"
    focal_gamma: float = 2.0
    focal_alpha: float = 0.5
    blocks: list[int] = field(default_factory=lambda: [6, 8, 12, 10])
    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    swin_dim: int = 96
    swin_depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    swin_heads: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    swin_window: int = 8
    swin_patch: int = 4
    swin_mlp_ratio: float = 4.0
    swin_drop_path: float = 0.1
    fold_chunks: int | None = None
    fused_channels: int = 512
    head_channels: int = 128
    time_pool: str = "mean"
    pretrained: str | None = None
    time_pretrained: str | None = None


_PAPER: dict = {}  # the dataclass defaults: the released network and its in-model recipe

# lungpipe's own approximation, not a released configuration. The released block counts
# [6, 8, 12, 10] give 119.73 M trainable parameters; the paper states 67.15 M, which no setting of
# the public code reproduces. A stage-4 interlaced block holds 24·512² + 21·512 ≈ 6.30 M weights:
# keeping everything else as released and cutting stage 4 from 10 blocks to 2 gives 69.32 M.
_PAPER67M: dict = {"blocks": [6, 8, 12, 2]}

# CPU-sized: 192 frames (the default profile's 199 shrunk a little) fold into one 64×192 image; a
# 3-stage Swin with 8×8 patches (192 tokens) keeps the time branch's shrink at 8·2² = 32, equal to
# the 4-stage frequency branch's 4·2³, so both maps are 2×6 at 64 mels. (A 4-stage Swin on 4×4
# patches has 4× the tokens and doubled the step time; 256 frames cost a third more per step than
# 192 for the same test Score on the default profile, 0.60 over 3 seeds.) The input is shrunk
# (bilinear) rather than upsampled, and the engine's SpecAugment and plain criterion are used, as
# for the other small presets of the default profile.
_SMALL: dict = {
    "n_frames": 400,
    "target_frames": 192,
    "time_resize": "bilinear",
    "specaug_time_stripes": 0,
    "specaug_freq_stripes": 0,
    "loss": "criterion",
    "blocks": [1, 1, 1, 1],
    "widths": [8, 16, 32, 64],
    "swin_dim": 32,
    "swin_depths": [1, 1, 1],
    "swin_heads": [1, 2, 4],
    "swin_patch": 8,
    "swin_drop_path": 0.0,
    "fused_channels": 64,
    "head_channels": 32,
    "time_pool": "max",
}

PRESETS: dict[str, dict] = {"paper": _PAPER, "paper67m": _PAPER67M, "small": _SMALL}

TIME_RESIZES = ("bicubic_up", "bilinear")
LOSSES = ("focal", "criterion")
TIME_POOLS = ("mean", "max")
