"""HTS-AT's log-mel frontend, the input of MRINet's release (frontend kind ``htsat_logmel``).

HTS-AT computes its features inside the network (torchlibrosa): a centred STFT (Hann window,
reflect padding), the power spectrum, a librosa mel filterbank (Slaney mel scale with Slaney area
normalisation) and ``10·log10(max(x, 1e-10))`` (ref 1, no top_db). Its defaults, which MRINet's
release runs with (its config was never published): 32 kHz audio, window and FFT 1024 samples,
hop 320 (10 ms), 64 mel bins from 50 Hz to 14 kHz. A 10 s clip gives 1 + 320000 // 320 = 1001
frames (an ESC-50 clip of 5 s is played twice to 10 s by the cycle settings: repeat padding to
``max_len_s: 10``). :data:`HTSAT_FRONTEND` holds those values; the settings themselves come from
the :class:`FrontendConfig` (``frame_length_ms`` 32 and ``frame_shift_ms`` 10 at 32 kHz,
``n_fft`` 1024, ``low_freq`` 50, ``high_freq`` 14000).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from lungpipe.features.config import FrontendConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch  # lazy: torch loads after pin_portable_numerics()

KIND = "htsat_logmel"
#: HTS-AT's defaults (at ``sample_rate`` 32000 in the cycle settings).
HTSAT_FRONTEND = FrontendConfig(
    kind=KIND, n_mels=64, frame_length_ms=32.0, frame_shift_ms=10.0, n_fft=1024, low_freq=50.0, high_freq=14000.0
)
HTSAT_SAMPLE_RATE = 32000
_AMIN = 1e-10  # torchlibrosa's amin: 10·log10(max(power, 1e-10))

_CACHE: dict[tuple[FrontendConfig, int], object] = {}
_LOCK = threading.Lock()


def _transform(fe: FrontendConfig, sample_rate: int):
    key = (fe, sample_rate)
    with _LOCK:
        transform = _CACHE.get(key)
        if transform is None:
            import torchaudio  # lazy: torch loads after pin_portable_numerics()

            win = int(sample_rate * fe.frame_length_ms * 0.001)
            hop = int(sample_rate * fe.frame_shift_ms * 0.001)
            if win <= 0 or hop <= 0:
                raise ValueError(f"frame length/shift give 0 samples at {sample_rate} Hz")
            n_fft = fe.n_fft if fe.n_fft is not None else 1 << (win - 1).bit_length()
            if n_fft < win:
                raise ValueError(f"n_fft {n_fft} is shorter than the window ({win} samples)")
            high = fe.high_freq if fe.high_freq > 0 else sample_rate / 2
            if not 0 <= fe.low_freq < high <= sample_rate / 2:
                raise ValueError(
                    f"mel range {fe.low_freq}–{high} Hz does not fit under the Nyquist frequency "
                    f"{sample_rate / 2} Hz (frontend low_freq/high_freq, cycle sample_rate)"
                )
            transform = torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate, n_fft=n_fft, win_length=win, hop_length=hop, f_min=fe.low_freq,
                f_max=high, n_mels=fe.n_mels, power=2.0, center=True, pad_mode="reflect",
                norm="slaney", mel_scale="slaney",
            )
            _CACHE[key] = transform
    return transform


def htsat_logmel_batch(x: torch.Tensor, fe: FrontendConfig, sample_rate: int) -> torch.Tensor:
    """HTS-AT log-mel (dB) of a ``(B, samples)`` batch → ``(B, 1 + samples // hop, n_mels)``."""
    import torch  # lazy: torch loads after pin_portable_numerics()

    power = _transform(fe, sample_rate)(x.to(torch.float32))  # (B, mels, frames)
    return power.clamp_min_(_AMIN).log10_().mul_(10.0).transpose(1, 2).contiguous()
