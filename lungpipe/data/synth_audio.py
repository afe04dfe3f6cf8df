"""Synthetic lung-sound audio: breathing, crackles, wheezes, heart sounds and background noise.

What a respiratory-sound model has to learn, rendered with numpy (vectorised per recording):

- **breathing**: band-limited noise (roughly 100–1000 Hz, more energy low) under an
  inhale/exhale envelope per annotated cycle (inhale louder than exhale, silent turning points);
- **crackles**: short explosive transients (< 20 ms): a sharp onset then a damped oscillation;
  several per cycle, *fine* (3–8 ms, 500–1200 Hz) or *coarse* (8–18 ms, 150–500 Hz);
- **wheezes**: continuous tonal sounds of 100–1000 Hz lasting well over 80 ms, with harmonics,
  a slow frequency drift and a little vibrato, sometimes two tones at once (polyphonic);
- distractors in every cycle: **heart sounds** (S1/S2 low-frequency thumps about once a second)
  and **background** noise with a little mains hum.

All levels are relative to the breath noise's RMS at the loudest point of an inhalation (= 1), and
each is drawn from a range, so the classes are learnable but not trivially separable.

Bit-reproducible: with a :class:`~lungpipe.data.portable.PortableRng` every number is computed from
exactly rounded float64 operations in a fixed order (:mod:`lungpipe.data.portable`'s ``sin``,
``cos``, ``exp``; sequential sums; one-pole recursive filters run by ``lfilter`` sample by sample;
no FFT, BLAS or SIMD-dispatched libm), so a recording is the same bits on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungpipe.data import portable as pm


@dataclass
class SynthAudioConfig:
    """Ranges (low, high) that each recording or event draws its parameters from."""

    breath_low_hz: tuple[float, float] = (80.0, 150.0)
    breath_high_hz: tuple[float, float] = (400.0, 1000.0)
    inhale_fraction: tuple[float, float] = (0.35, 0.45)
    exhale_level: tuple[float, float] = (0.4, 0.8)
    crackles_per_cycle: tuple[int, int] = (3, 10)
    crackle_peak_ratio: tuple[float, float] = (1.5, 8.0)
    fine_crackle_ms: tuple[float, float] = (3.0, 8.0)
    fine_crackle_hz: tuple[float, float] = (500.0, 1200.0)
    coarse_crackle_ms: tuple[float, float] = (8.0, 18.0)
    coarse_crackle_hz: tuple[float, float] = (150.0, 500.0)
    wheeze_amp_ratio: tuple[float, float] = (0.15, 1.2)
    wheeze_hz: tuple[float, float] = (200.0, 800.0)
    wheeze_s: tuple[float, float] = (0.25, 1.2)
    polyphonic_prob: float = 0.25
    heart_rate_bpm: tuple[float, float] = (55.0, 110.0)
    heart_amp_ratio: tuple[float, float] = (0.5, 3.0)
    noise_snr_db: tuple[float, float] = (20.0, 40.0)
    hum_amp_ratio: tuple[float, float] = (0.0, 0.05)
    peak_level: tuple[float, float] = (0.3, 0.9)


_LN10 = 2.302585092994046


def _u(rng, bounds, size=None):
    """Uniform draw(s) from ``bounds``; a Python float when ``size`` is None."""
    low, high = bounds
    if size is None:
        return float(rng.uniform(low, high))
    return rng.uniform(low, high, size)


def _one_pole_pair(x: np.ndarray, sample_rate: int, cutoff_hz: float, highpass: bool) -> np.ndarray:
    """Two passes of a one-pole filter (|H| ≈ 1 / (1 + (f/fc)²) low-pass, 1 / (1 + (fc/f)²)
    high-pass). ``lfilter`` runs the recursion sample by sample, one multiply-add order fixed by
    its direct form, so the result does not depend on the CPU's vector units."""
    from scipy.signal import lfilter  # lazy: ~1.5 s, and every stage imports this module (data.sources)

    pole = float(pm.exp(-2.0 * np.pi * float(cutoff_hz) / float(sample_rate)))
    if highpass:
        b, a = [pole, -pole], [1.0, -pole]
    else:
        b, a = [1.0 - pole], [1.0, -pole]
    for _ in range(2):
        x = lfilter(b, a, x)
    return x


def breath_noise(n: int, sample_rate: int, rng, low_hz: float, high_hz: float) -> np.ndarray:
    """Unit-RMS band-pass noise (about 6 dB down at ``low_hz`` and ``high_hz``, 2nd-order
    slopes): uniform white noise through two one-pole low-passes and two one-pole high-passes."""
    band = _one_pole_pair(rng.uniform(-1.0, 1.0, n), sample_rate, high_hz, highpass=False)
    band = _one_pole_pair(band, sample_rate, low_hz, highpass=True)
    rms = float(np.sqrt(pm.sequential_sum(band * band) / max(n, 1))) or 1.0
    return band / rms


def breath_envelope(n: int, sample_rate: int, starts: np.ndarray, ends: np.ndarray,
                    inhale: float, exhale_level: float, cycle_gain: np.ndarray) -> np.ndarray:
    """Per-sample amplitude: in each cycle a sin² inhale hump (peak 1 × gain) over the first
    ``inhale`` fraction, then a lower exhale hump (``exhale_level``); 0 outside cycles."""
    env = np.zeros(n, dtype=np.float64)
    for s, e, g in zip(starts, ends, cycle_gain):
        a, b = round(s * sample_rate), min(round(e * sample_rate), n)
        if b <= a:
            continue
        length = b - a
        k = round(inhale * length)
        g = float(g)
        env[a:a + k] = g * pm.sin(np.arange(k) * (np.pi / max(k, 1))) ** 2
        env[a + k:b] = (g * exhale_level) * pm.sin(np.arange(length - k) * (np.pi / max(length - k, 1))) ** 2
    return env


def _scatter_kernels(out: np.ndarray, onsets: np.ndarray, kernels: np.ndarray) -> None:
    """Add each row of ``kernels`` (m, L) into ``out`` starting at its onset sample (in row order)."""
    if len(onsets) == 0:
        return
    idx = onsets[:, None] + np.arange(kernels.shape[1])[None, :]
    keep = (idx >= 0) & (idx < len(out))
    np.add.at(out, idx[keep], kernels[keep])


def crackle_kernels(sample_rate: int, durations_s: np.ndarray, freqs_hz: np.ndarray,
                    amps: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Crackle waveforms (m, L): a sudden onset and a damped oscillation that has died out
    (< 1 %) by the end of its duration; the largest deflection is the first one and its size is
    ``amps`` (sign ``signs``)."""
    length = int(np.ceil(durations_s.max() * sample_rate)) + 1
    t = np.arange(length, dtype=np.float64)[None, :] / sample_rate
    d = np.asarray(durations_s, dtype=np.float64)[:, None]
    tau = d / 5.0
    wave = pm.exp(-t / tau) * pm.sin(2 * np.pi * np.asarray(freqs_hz, dtype=np.float64)[:, None] * t)
    wave *= (t < d)
    wave /= np.abs(wave).max(axis=1, keepdims=True)
    return (np.asarray(amps) * np.asarray(signs))[:, None] * wave


def tone_with_harmonics(n: int, sample_rate: int, f_start: float, f_end: float,
                        vibrato_hz: float, vibrato_depth: float, harmonic_amps: list[float],
                        phase0: float) -> np.ndarray:
    """A tone whose fundamental glides from ``f_start`` to ``f_end`` with vibrato; harmonics
    above 0.45 × sample rate are left out; raised-cosine ramps (≤ 20 ms) at both ends."""
    t = np.arange(n, dtype=np.float64) / sample_rate
    glide = f_start + (f_end - f_start) * (np.arange(n, dtype=np.float64) / max(n - 1, 1))
    f_inst = glide * (1.0 + vibrato_depth * pm.sin(2 * np.pi * vibrato_hz * t))
    phase = phase0 + (2 * np.pi / sample_rate) * np.cumsum(f_inst)
    out = pm.sin(phase)
    f_max = max(f_start, f_end) * (1 + vibrato_depth)
    for k, amp in enumerate(harmonic_amps, start=2):
        if k * f_max < 0.45 * sample_rate:
            out += amp * pm.sin(k * phase)
    ramp = min(int(0.02 * sample_rate), n // 4)
    if ramp > 0:
        w = 0.5 - 0.5 * pm.cos(np.pi * np.arange(ramp) / ramp)
        out[:ramp] *= w
        out[n - ramp:] *= w[::-1]
    return out


def heart_sounds(n: int, sample_rate: int, rng, rate_bpm: float, amp: float) -> np.ndarray:
    """S1/S2 pairs: Hann-windowed low-frequency bursts (S1 ≈ 100 ms at 30–50 Hz, S2 ≈ 80 ms at
    50–70 Hz, 0.3 s after S1), one pair per beat with a little beat-to-beat jitter."""
    out = np.zeros(n, dtype=np.float64)
    period = 60.0 / rate_bpm
    duration = n / sample_rate
    first = float(rng.uniform(0, period))
    beats = first + period * np.arange(max(int(np.ceil((duration - first) / period)), 0))
    beats = beats + rng.normal(0, 0.02 * period, len(beats))
    for offset, length_s, f_range, level in ((0.0, 0.10, (30.0, 50.0), 1.0),
                                              (0.30, 0.08, (50.0, 70.0), 0.7)):
        length = int(length_s * sample_rate)
        t = np.arange(length, dtype=np.float64) / sample_rate
        f = float(rng.uniform(*f_range))
        kernel = amp * level * pm.hann(length) * pm.sin(2 * np.pi * f * t)
        onsets = np.round((beats + offset) * sample_rate).astype(np.int64)
        gains = rng.uniform(0.8, 1.2, len(onsets))
        _scatter_kernels(out, onsets, gains[:, None] * kernel[None, :])
    return out


def render_recording(cycles: np.ndarray, duration_s: float, sample_rate: int,
                     rng, cfg: SynthAudioConfig | None = None) -> np.ndarray:
    """Render one recording (float32 in [-1, 1]).

    ``cycles`` is an (n, 4) array of ``start_s, end_s, crackle, wheeze``; crackle cycles get
    several crackles, wheeze cycles a wheeze lying inside the cycle, normal cycles neither.
    ``rng`` is a :class:`~lungpipe.data.portable.PortableRng` (machine-independent bits) or
    anything with the same methods (a numpy ``Generator`` works too).
    """
    cfg = cfg or SynthAudioConfig()
    cycles = np.asarray(cycles, dtype=np.float64).reshape(-1, 4)
    n = round(duration_s * sample_rate)
    starts, ends = cycles[:, 0], cycles[:, 1]
    crackle, wheeze = cycles[:, 2] > 0, cycles[:, 3] > 0

    high = min(_u(rng, cfg.breath_high_hz), 0.45 * sample_rate)
    noise = breath_noise(n, sample_rate, rng, _u(rng, cfg.breath_low_hz), high)
    gain = rng.uniform(0.85, 1.0, len(cycles))
    env = breath_envelope(n, sample_rate, starts, ends, _u(rng, cfg.inhale_fraction),
                          _u(rng, cfg.exhale_level), gain)
    out = noise * env

    # crackles: per cycle a type (fine/coarse), a count and a level; per crackle some jitter
    c_idx = np.flatnonzero(crackle)
    if len(c_idx):
        counts = rng.integers(cfg.crackles_per_cycle[0], cfg.crackles_per_cycle[1] + 1, len(c_idx))
        owner = np.repeat(c_idx, counts)
        m = len(owner)
        fine = np.repeat(rng.random(len(c_idx)) < 0.5, counts)
        dur_ms = np.where(fine, _u(rng, cfg.fine_crackle_ms, m), _u(rng, cfg.coarse_crackle_ms, m))
        freq = np.where(fine, _u(rng, cfg.fine_crackle_hz, m), _u(rng, cfg.coarse_crackle_hz, m))
        freq = np.minimum(freq, 0.4 * sample_rate)
        level = np.repeat(_u(rng, cfg.crackle_peak_ratio, len(c_idx)), counts)
        amps = level * rng.uniform(0.7, 1.3, m)
        signs = np.where(rng.random(m) < 0.5, -1.0, 1.0)
        dur_s = dur_ms / 1000.0
        span = ends[owner] - starts[owner]
        room = np.maximum(span - dur_s - 0.1 * span, 0.0)
        onsets_s = starts[owner] + 0.05 * span + rng.random(m) * room
        kernels = crackle_kernels(sample_rate, dur_s, freq, amps, signs)
        _scatter_kernels(out, np.round(onsets_s * sample_rate).astype(np.int64), kernels)

    # wheezes: one (sometimes two, polyphonic) tone inside each wheeze cycle
    for i in np.flatnonzero(wheeze):
        span = ends[i] - starts[i]
        w_len = min(_u(rng, cfg.wheeze_s), 0.85 * span)
        w_start = starts[i] + 0.05 * span + rng.random() * (0.9 * span - w_len)
        a = round(w_start * sample_rate)
        length = min(round(w_len * sample_rate), n - a)
        if length <= 0:
            continue
        amp = _u(rng, cfg.wheeze_amp_ratio)
        n_tones = 2 if rng.random() < cfg.polyphonic_prob else 1
        for tone in range(n_tones):
            f0 = min(_u(rng, cfg.wheeze_hz), 0.3 * sample_rate)
            f1 = f0 * (1.0 + rng.uniform(-0.15, 0.15))
            harmonics = [rng.uniform(0.2, 0.5), rng.uniform(0.05, 0.25)]
            out[a:a + length] += (amp if tone == 0 else amp * 0.6) * tone_with_harmonics(
                length, sample_rate, f0, f1, rng.uniform(3, 8), rng.uniform(0.005, 0.02), harmonics,
                rng.uniform(0, 2 * np.pi))

    # distractors
    out += heart_sounds(n, sample_rate, rng, _u(rng, cfg.heart_rate_bpm), _u(rng, cfg.heart_amp_ratio))
    noise_rms = float(pm.exp(-_u(rng, cfg.noise_snr_db) / 20.0 * _LN10))  # 10 ** (-snr / 20)
    # uniform white noise (unit variance): as good a floor as Gaussian and several times cheaper
    out += (noise_rms * np.sqrt(12.0)) * (rng.random(n) - 0.5)
    hum_f = 50.0 if rng.random() < 0.5 else 60.0
    t = np.arange(n, dtype=np.float64) / sample_rate
    out += _u(rng, cfg.hum_amp_ratio) * pm.sin((2 * np.pi * hum_f) * t + _u(rng, (0.0, 2 * np.pi)))

    peak = float(np.max(np.abs(out))) or 1.0
    return (out * (_u(rng, cfg.peak_level) / peak)).astype(np.float32)
