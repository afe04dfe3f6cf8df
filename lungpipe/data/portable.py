"""Machine-independent building blocks for the synthetic datasets: random draws, elementary
functions and WAV encoding whose results are the same bytes on every IEEE-754 machine.

Why this exists: the synthetic default used numpy's ``Generator`` distributions, numpy's ``sin`` /
``exp`` / ``hanning``, ``np.dot`` (OpenBLAS), an FFT and libsndfile's float-to-PCM conversion. The
elementary functions are dispatched at run time to SIMD code chosen by the CPU (numpy's AVX2/FMA3
vs AVX-512 loops give different last bits), ``np.dot`` goes to an OpenBLAS kernel chosen by the CPU
(different summation order), and the encoders and distribution algorithms may change between
library versions. A last-bit difference before quantisation flips some PCM samples, so the same
code and params gave a different ``data/raw`` on another machine.

Everything here is built from operations IEEE 754 rounds exactly (``+ - * /``, ``rint``, ``floor``,
``ldexp``, integer arithmetic) applied element by element, and sums taken in a fixed sequential
order, so the results depend on nothing but the inputs:

- :class:`PortableRng`: a counter-based generator (SplitMix64's output function over a counter,
  keyed by SHA-256 of the seed and a name), with the subset of numpy's ``Generator`` API the
  synthesisers use, each draw defined here (uniform doubles from the top 53 bits, integers by
  ``floor``, ``choice`` by inverse CDF, normals as a sum of 12 uniforms - 6);
- :func:`sin`, :func:`cos`, :func:`exp`: Cody-Waite range reduction and Taylor polynomials
  (error below 1e-13, far under the 24-bit PCM step);
- :func:`sequential_sum`, :func:`moving_average`: sums by ``cumsum`` (a strictly left-to-right
  accumulation);
- :func:`encode_wav`: PCM_16 / PCM_24 WAV bytes by round-half-even of ``x * (2**(bits-1) - 1)``.
"""

from __future__ import annotations

import hashlib
import io
import wave
from collections.abc import Sequence

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_MINUS_53 = float(2.0 ** -53)


def _splitmix64(counters: np.ndarray, key: np.uint64) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = key + (counters + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def stream_key(*parts: object) -> int:
    """A 64-bit key from any printable parts (seed, recording name, stream tag)."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little")


class PortableRng:
    """A random stream whose every draw is specified here (see the module doc).

    Same method names and meanings as numpy's ``Generator`` for what the synthesisers use:
    ``random``, ``uniform``, ``integers`` (high exclusive), ``choice``, ``permutation``,
    ``normal``, ``standard_normal``. A scalar call returns a Python number, an array call an
    ``ndarray`` (float64 or int64).
    """

    def __init__(self, *key_parts: object) -> None:
        self._key = np.uint64(stream_key(*key_parts))
        self._counter = 0

    def _words(self, n: int) -> np.ndarray:
        counters = np.arange(self._counter, self._counter + n, dtype=np.uint64)
        self._counter += n
        return _splitmix64(counters, self._key)

    def _unit(self, n: int) -> np.ndarray:
        return (self._words(n) >> np.uint64(11)).astype(np.float64) * _TWO_POW_MINUS_53

    @staticmethod
    def _count(size) -> int:
        return int(np.prod(size)) if size is not None else 1

    def random(self, size=None):
        x = self._unit(self._count(size))
        return float(x[0]) if size is None else x.reshape(size)

    def uniform(self, low=0.0, high=1.0, size=None):
        u = self.random(size)
        if size is None:
            return float(low + (high - low) * u)
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        return low + (high - low) * u

    def integers(self, low, high=None, size=None):
        if high is None:
            low, high = 0, low
        if size is None:
            return int(low) + int(np.floor(self.random() * (int(high) - int(low))))
        span = np.asarray(high, dtype=np.int64) - np.asarray(low, dtype=np.int64)
        return np.asarray(low, dtype=np.int64) + np.floor(self.random(size) * span).astype(np.int64)

    def choice(self, a, size=None, p=None):
        """``a`` an int (choose from ``range(a)``) or a sequence; ``p`` optional probabilities."""
        options = np.arange(a) if isinstance(a, (int, np.integer)) else np.asarray(a)
        if p is None:
            index = self.integers(0, len(options), size)
        else:
            cdf = np.cumsum(np.asarray(p, dtype=np.float64))
            cdf /= cdf[-1]
            index = np.minimum(np.searchsorted(cdf, self.random(size), side="right"), len(options) - 1)
        picked = options[index]
        return picked.item() if size is None else picked

    def permutation(self, n: int) -> np.ndarray:
        return np.argsort(self.random(int(n)), kind="stable")

    def standard_normal(self, size=None):
        """Approximately N(0, 1): the sum of 12 uniforms minus 6 (Irwin-Hall; |x| <= 6)."""
        n = self._count(size)
        x = sequential_sum(self._unit(12 * n).reshape(n, 12), axis=1) - 6.0
        return float(x[0]) if size is None else x.reshape(size)

    def normal(self, loc=0.0, scale=1.0, size=None):
        return loc + scale * self.standard_normal(size)


def sequential_sum(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sum in strict left-to-right order along ``axis`` (``np.sum`` and ``np.dot`` may reorder)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[axis] == 0:
        return np.sum(x, axis=axis)
    return np.take(np.cumsum(x, axis=axis), -1, axis=axis)


def moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred box filter of ``width`` samples (zero outside ``x``), same length as ``x``."""
    width = max(int(width), 1)
    if width == 1:
        return np.asarray(x, dtype=np.float64).copy()
    n = len(x)
    left = width // 2
    padded = np.concatenate([np.zeros(left + 1), np.asarray(x, dtype=np.float64), np.zeros(width - left)])
    c = np.cumsum(padded)
    return (c[width:width + n] - c[:n]) / width


# ----------------------------------------------------------------------------- elementary functions

# pi/2 in three 33-bit parts (fdlibm's): their products with a reduction multiple below 2**20 are exact
_PIO2_1 = 1.57079632673412561417e+00
_PIO2_2 = 6.07710050630396597660e-11
_PIO2_3 = 2.02226624871116645580e-21
_TWO_OVER_PI = 0.63661977236758134308
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10


def _poly(r2: np.ndarray, coeffs: Sequence[float]) -> np.ndarray:
    out = np.full_like(r2, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * r2 + c
    return out


_SIN_COEFFS = [1.0] + [
    ((-1.0) ** k) / float(np.prod(np.arange(1, 2 * k + 2, dtype=np.float64))) for k in range(1, 8)]
_COS_COEFFS = [1.0] + [
    ((-1.0) ** k) / float(np.prod(np.arange(1, 2 * k + 1, dtype=np.float64))) for k in range(1, 8)]


def _sin_quadrant(x, shift: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    k = np.rint(x * _TWO_OVER_PI)
    r = ((x - k * _PIO2_1) - k * _PIO2_2) - k * _PIO2_3
    r2 = r * r
    s = r * _poly(r2, _SIN_COEFFS)
    c = _poly(r2, _COS_COEFFS)
    q = (k.astype(np.int64) + shift) & 3
    return np.where(q == 0, s, np.where(q == 1, c, np.where(q == 2, -s, -c)))


def sin(x) -> np.ndarray:
    """sin(x) for |x| < 2**20·pi/2, float64, the same bits on every machine."""
    return _sin_quadrant(x, 0)


def cos(x) -> np.ndarray:
    """cos(x) for |x| < 2**20·pi/2, float64, the same bits on every machine."""
    return _sin_quadrant(x, 1)


_EXP_COEFFS = [1.0 / float(np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(15)]


def exp(x) -> np.ndarray:
    """exp(x), float64 (x clamped at -700, about 1e-304), the same bits on every machine."""
    x = np.maximum(np.asarray(x, dtype=np.float64), -700.0)
    k = np.rint(x * (1.0 / _LN2_HI))
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = np.full_like(r, _EXP_COEFFS[-1])
    for c in reversed(_EXP_COEFFS[:-1]):
        p = p * r + c
    return np.ldexp(p, k.astype(np.int32))


def hann(length: int) -> np.ndarray:
    """The symmetric Hann window (``np.hanning``'s definition), portable."""
    if length <= 1:
        return np.ones(max(length, 0))
    return 0.5 - 0.5 * cos(2.0 * np.pi * np.arange(length) / (length - 1))


# ----------------------------------------------------------------------------- WAV encoding

PCM_BITS = {"PCM_16": 16, "PCM_24": 24}


def to_pcm(samples: np.ndarray, subtype: str) -> np.ndarray:
    """Integers of a mono float signal in [-1, 1]: round-half-even of x·(2**(bits-1) − 1), clipped."""
    bits = PCM_BITS[subtype]
    full = float(2 ** (bits - 1) - 1)
    x = np.asarray(samples, dtype=np.float64)
    return np.clip(np.rint(x * full), -full - 1, full).astype(np.int32)


def encode_wav(samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """A canonical mono RIFF/WAVE file (44-byte header, little-endian PCM) as bytes."""
    pcm = to_pcm(samples, subtype)
    if subtype == "PCM_16":
        frames = pcm.astype("<i2").tobytes()
        width = 2
    else:
        frames = pcm.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
        width = 3
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(width)
        out.setframerate(int(sample_rate))
        out.writeframes(frames)
    return buffer.getvalue()
