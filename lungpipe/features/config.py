"""Typed settings of the preprocess step and the stable key that names a feature cache.

Stages build these from params.yaml with :func:`lungpipe.util.typed_config.from_dict`; the library only
ever sees the dataclasses. Everything that changes the numbers in the feature arrays (cycle
cutting, the frontend, the normalisation) goes into :func:`frontend_key`, so two architectures
that ask for the same features can share one cache folder, and a changed setting gets a new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from lungpipe.util.typed_config import ConfigError

PAD_MODES = ("repeat", "zero")
BOUNDARY_MODES = ("truncate", "round")
FRONTEND_KINDS = ("kaldi_fbank", "logmel", "htsat_logmel")  # htsat_logmel: features/htsat_frontend.py
KALDI_WINDOWS = ("hanning", "povey")
NORM_MODES = ("train_stats", "audioset", "none")

# AST's AudioSet fbank statistics (used by AST, patch-mix CL, ADD4RSC).
AUDIOSET_MEAN = -4.2677
AUDIOSET_STD = 4.5690


@dataclass(frozen=True)
class CycleConfig:
    """How a recording becomes fixed-length cycles.

    ``recording_fade_samples``: linear fade-in and fade-out of the whole (resampled) recording
    before cutting (patch-mix CL uses 1000 samples at 16 kHz); 0 disables it.
    ``pad_fade_samples``: linear fade-out over the last samples of a cycle that was padded up to
    ``max_len_s`` (not applied to cycles that were truncated); 0 disables it.
    ``fade_full_length``: a cycle exactly ``max_len_s`` long gets that fade-out too, as the
    patch-mix CL / ADD4RSC release does (its test is "not longer than", so nothing is added but the
    fade is); ``False`` fades only cycles that were actually padded.
    ``boundary``: how annotation times become sample offsets at ``sample_rate``: ``truncate``
    (``int(t · sr)``, the release's) or ``round`` (nearest sample, half up).
    ``end_tolerance_s``: a cycle whose end lies at most this far past the end of the recording
    is clamped to the recording's end; further past it is a :class:`~lungpipe.util.errors.DataError`.
    """

    sample_rate: int = 16000
    max_len_s: float = 8.0
    pad: str = "repeat"
    recording_fade_samples: int = 1000
    pad_fade_samples: int = 1000
    end_tolerance_s: float = 0.05
    fade_full_length: bool = True
    boundary: str = "truncate"

    def __post_init__(self) -> None:
        if self.pad not in PAD_MODES:
            raise ConfigError(f"CycleConfig.pad: {self.pad!r} is not one of {PAD_MODES}")
        if self.boundary not in BOUNDARY_MODES:
            raise ConfigError(f"CycleConfig.boundary: {self.boundary!r} is not one of {BOUNDARY_MODES}")
        if self.sample_rate <= 0 or self.max_len_s <= 0:
            raise ConfigError("CycleConfig: sample_rate and max_len_s must be positive")
        if self.recording_fade_samples < 0 or self.pad_fade_samples < 0 or self.end_tolerance_s < 0:
            raise ConfigError("CycleConfig: fade lengths and end_tolerance_s must be >= 0")

    @property
    def n_samples(self) -> int:
        """Fixed cycle length in samples at ``sample_rate``."""
        return round(self.max_len_s * self.sample_rate)


@dataclass(frozen=True)
class FrontendConfig:
    """Spectrogram frontend.

    ``kind="kaldi_fbank"``: Kaldi-compatible log mel filterbank (what torchaudio's
    ``compliance.kaldi.fbank`` computes with ``htk_compat=True``, ``dither=0``,
    ``use_energy=False``): per-frame DC removal, pre-emphasis 0.97, ``window`` (hanning or
    povey), FFT size = next power of two of the window, power spectrum, natural log floored at
    float32 eps. ``low_freq``/``high_freq`` follow Kaldi (``high_freq <= 0`` is an offset from
    Nyquist).
    ``kind="logmel"``: torchaudio ``MelSpectrogram`` (centred frames, Hann window, HTK mel
    scale, power 2, ``n_fft`` defaults to the next power of two of the window) in decibels,
    ``10·log10(max(power, 1e-10))``; ``low_freq``/``high_freq`` are f_min/f_max
    (``high_freq <= 0`` means Nyquist).
    ``target_frames``: when set, the time axis is resized (linear interpolation) to that many
    frames, as MRINet's recipe resizes to 1024.
    """

    kind: str = "kaldi_fbank"
    n_mels: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    n_fft: int | None = None
    low_freq: float = 20.0
    high_freq: float = 0.0
    window: str = "hanning"
    preemphasis: float = 0.97
    target_frames: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FRONTEND_KINDS:
            raise ConfigError(f"FrontendConfig.kind: {self.kind!r} is not one of {FRONTEND_KINDS}")
        if self.kind == "kaldi_fbank" and self.window not in KALDI_WINDOWS:
            raise ConfigError(
                f"FrontendConfig.window: {self.window!r} is not one of {KALDI_WINDOWS} "
                "(windows that are zero at their first sample)"
            )
        if self.n_mels <= 0 or self.frame_length_ms <= 0 or self.frame_shift_ms <= 0:
            raise ConfigError("FrontendConfig: n_mels and frame lengths must be positive")
        if self.target_frames is not None and self.target_frames <= 0:
            raise ConfigError("FrontendConfig.target_frames must be positive or null")


@dataclass(frozen=True)
class NormConfig:
    """Feature normalisation ``(x - mean) / (std_scale · std)``.

    ``mode="train_stats"``: scalar mean/std over every value of the training split's features;
    ``"audioset"``: AST's constants (mean −4.2677, std 4.5690); ``"none"``: leave values as they
    are. ``std_scale=2`` is AST's recipe (values end up with std ≈ 0.5).
    """

    mode: str = "train_stats"
    std_scale: float = 2.0

    def __post_init__(self) -> None:
        if self.mode not in NORM_MODES:
            raise ConfigError(f"NormConfig.mode: {self.mode!r} is not one of {NORM_MODES}")
        if self.std_scale <= 0:
            raise ConfigError("NormConfig.std_scale must be positive")


@dataclass(frozen=True)
class PreprocessConfig:
    """All settings of the preprocess step; ``workers`` only changes speed, never the output."""

    cycle: CycleConfig = field(default_factory=CycleConfig)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    workers: int = 2


def _short_number(value: float) -> str:
    return f"{value:g}".replace(".", "p")


def frontend_key(cfg: PreprocessConfig) -> str:
    """A stable, readable name for the features ``cfg`` produces, e.g.
    ``kaldi_fbank128-16k-8s-repeat-trainstats-1a2b3c4d``.

    The hash covers every setting that changes the arrays (cycle, frontend, norm) and nothing
    else (``workers`` is left out), so equal features share a folder.
    """
    payload = {
        "cycle": dataclasses.asdict(cfg.cycle),
        "frontend": dataclasses.asdict(cfg.frontend),
        "norm": dataclasses.asdict(cfg.norm),
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:8]
    fe, cy = cfg.frontend, cfg.cycle
    parts = [
        f"{fe.kind}{fe.n_mels}",
        f"{_short_number(cy.sample_rate / 1000)}k",
        f"{_short_number(cy.max_len_s)}s",
        cy.pad,
    ]
    if fe.target_frames is not None:
        parts.append(f"t{fe.target_frames}")
    parts.append(cfg.norm.mode.replace("_", ""))
    parts.append(digest)
    return "-".join(parts)
