"""Sanity of decoded audio at the door: no NaN/inf samples, float audio within ±1.

Integer PCM decodes to [-1, 1) by construction, so only float encodings (``FLOAT``, ``DOUBLE``)
are decoded and scanned here (in blocks, so memory stays small). Findings name the file, the
sample offset (frame index) and the value, with the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

#: Float audio may overshoot full scale a little (encoders, resamplers); beyond this it is scaled
#: wrongly (a file written ×1000 peaks near 1000).
FLOAT_AUDIO_LIMIT = 1.01
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
_BLOCK_FRAMES = 1 << 18


def first_bad_sample(samples: np.ndarray, limit: float | None = FLOAT_AUDIO_LIMIT) -> str | None:
    """A description of the first non-finite (or, with ``limit``, out-of-range) sample of a
    (frames,) or (frames, channels) array, with its frame offset; None when all are fine."""
    x = np.asarray(samples)
    x2 = x.reshape(len(x), -1)
    finite = np.isfinite(x2)
    if not finite.all():
        frame, channel = np.argwhere(~finite)[0]
        return f"non-finite sample {x2[frame, channel]} at sample offset {frame}" + (
            f" (channel {channel})" if x2.shape[1] > 1 else "")
    if limit is not None:
        over = np.abs(x2) > limit
        if over.any():
            frame, channel = np.argwhere(over)[0]
            peak = float(np.abs(x2).max())
            return (f"float sample {x2[frame, channel]:.6g} at sample offset {frame} is beyond ±1 "
                    f"(limit ±{limit}; the file peaks at {peak:.6g}, so it is scaled wrongly)")
    return None


def scan_float_audio(path: str | Path, subtype: str) -> str | None:
    """:func:`first_bad_sample` over a whole file (offsets counted from its first frame); None
    without decoding for integer encodings."""
    if subtype not in FLOAT_SUBTYPES:
        return None

    offset = 0
    for block in sf.blocks(str(path), blocksize=_BLOCK_FRAMES, dtype="float64", always_2d=True):
        found = first_bad_sample(block)
        if found is not None:
            head, _, tail = found.partition(" at sample offset ")
            frame, _, rest = tail.partition(" ")
            return f"{head} at sample offset {offset + int(frame)}{(' ' + rest) if rest else ''}"
        offset += len(block)
    return None
