"""MRINet's input as released: HTS-AT's log-mel frontend (kind ``htsat_logmel``).

Checked against an independent computation of the Slaney mel scale: a pure tone lands in the mel
bin whose centre frequency is nearest, the Slaney area normalisation makes a flat spectrum's mel
energies proportional to each filter's area (constant), silence is floored at −100 dB, and a 10 s
clip at hop 320 with centre padding has 1001 frames.
"""

from __future__ import annotations

import math

import pytest
import torch

from lungpipe.features.config import FrontendConfig
from lungpipe.features.frontend import compute_frontend, n_frames
from lungpipe.features.htsat_frontend import HTSAT_FRONTEND, HTSAT_SAMPLE_RATE

SR = HTSAT_SAMPLE_RATE


def _slaney_mel(f: float) -> float:
    """Slaney's mel scale (Auditory Toolbox): linear below 1 kHz (200/3 Hz per mel), log above."""
    if f < 1000.0:
        return 3.0 * f / 200.0
    return 15.0 + 27.0 * math.log(f / 1000.0) / math.log(6.4)


def _slaney_hz(m: float) -> float:
    if m < 15.0:
        return 200.0 * m / 3.0
    return 1000.0 * math.exp((m - 15.0) * math.log(6.4) / 27.0)


def _centres(n_mels: int = 64, fmin: float = 50.0, fmax: float = 14000.0) -> list[float]:
    lo, hi = _slaney_mel(fmin), _slaney_mel(fmax)
    return [_slaney_hz(lo + (hi - lo) * (i + 1) / (n_mels + 1)) for i in range(n_mels)]


def test_htsat_defaults():
    fe = HTSAT_FRONTEND
    assert (fe.kind, fe.n_mels, fe.n_fft, fe.low_freq, fe.high_freq) == ("htsat_logmel", 64, 1024, 50.0, 14000.0)
    assert int(SR * fe.frame_length_ms / 1000) == 1024 and int(SR * fe.frame_shift_ms / 1000) == 320


def test_ten_seconds_give_1001_frames():
    wave = torch.randn(2, 10 * SR) * 0.1
    spec = compute_frontend(wave, HTSAT_FRONTEND, SR)
    assert spec.shape == (2, 1001, 64)
    assert n_frames(HTSAT_FRONTEND, 10 * SR, SR) == 1001
    assert compute_frontend(wave[:, : 5 * SR], HTSAT_FRONTEND, SR).shape == (2, 501, 64)


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0, 8000.0])
def test_a_tone_lands_in_the_nearest_slaney_mel_bin(freq):
    t = torch.arange(10 * SR, dtype=torch.float64) / SR
    wave = (0.5 * torch.sin(2 * math.pi * freq * t)).float()[None]
    spec = compute_frontend(wave, HTSAT_FRONTEND, SR)[0]
    peak = int(spec[100:900].mean(dim=0).argmax())
    centres = _centres()
    assert peak == min(range(64), key=lambda m: abs(centres[m] - freq))


def test_slaney_area_normalisation_and_decibels():
    # white noise has a flat expected power spectrum; with Slaney's area normalisation each
    # triangular filter's weights sum to (its width in bins) · 2 / (width in Hz) = 2 / (Hz per bin),
    # the same for every mel bin above the lowest (where the FFT grid is coarse); without it the
    # upper filters, hundreds of bins wide, would collect tens of dB more
    fe = FrontendConfig(kind="htsat_logmel", n_mels=64, frame_length_ms=32.0, frame_shift_ms=10.0, n_fft=1024,
                        low_freq=50.0, high_freq=14000.0)
    torch.manual_seed(0)
    spec = compute_frontend(torch.randn(1, 20 * SR) * 0.1, fe, SR)[0, 10:-10]
    level = 10 * torch.log10((10 ** (spec[:, 16:] / 10)).mean(dim=0))  # mean power per bin, in dB
    assert float(level.max() - level.min()) < 0.5  # dB: flat across the upper 48 bins
    silence = compute_frontend(torch.zeros(1, SR), fe, SR)
    assert torch.all(silence == -100.0)  # 10·log10(1e-10)


def test_mel_range_above_nyquist_is_an_error():
    fe = FrontendConfig(kind="htsat_logmel", n_mels=64, frame_length_ms=32.0, frame_shift_ms=10.0, n_fft=1024,
                        low_freq=50.0, high_freq=14000.0)
    with pytest.raises(ValueError, match="Nyquist"):
        compute_frontend(torch.zeros(1, 16000), fe, 16000)
