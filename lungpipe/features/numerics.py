"""Pin the CPU numerics of the feature computation so its bytes do not depend on the machine.

torch picks its vectorised kernels by the CPU it runs on (``CPU capability usage: AVX2`` here,
AVX-512 elsewhere) and MKL picks its FFT/GEMM code path the same way; each choice sums and rounds
in its own order, so the same audio gave other float32 features on another machine (measured here:
``ATEN_CPU_CAPABILITY=default`` alone changes data/features/small). The preprocess stage therefore
runs with torch's portable scalar kernels (``ATEN_CPU_CAPABILITY=default``), MKL's Conditional
Numerical Reproducibility mode (``MKL_CBWR=COMPATIBLE``, documented by Intel to give the same
results on every Intel-compatible CPU) and one thread per process (workers are processes).

Both variables are read when torch loads, so :func:`pin_portable_numerics` must run before
``import torch``; when torch is already loaded (a stage run inside another Python program) it
says so in a warning: the features are then computed with whatever kernels that process has.
Training is not pinned: it needs the fast kernels.
"""

from __future__ import annotations

import logging
import os
import sys

PORTABLE_NUMERICS_ENV = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def pin_portable_numerics() -> None:
    """Set :data:`PORTABLE_NUMERICS_ENV` for this process (and the workers it forks)."""
    if "torch" in sys.modules:
        wrong = {k: os.environ.get(k) for k, v in PORTABLE_NUMERICS_ENV.items() if os.environ.get(k) != v}
        if wrong:
            logging.getLogger(__name__).warning(
                "torch was imported before pin_portable_numerics(): features use this process's CPU "
                "kernels and may differ in the last bits from another machine's (settings now %s)", wrong)
        return
    os.environ.update(PORTABLE_NUMERICS_ENV)
