"""Deterministic seeding of every random source a run uses, and deterministic kernels.

On the CPU, two runs from the same inputs, seed and thread count give bit-identical weights: torch
runs with ``use_deterministic_algorithms(True, warn_only=True)``, the thread count is fixed
(``TrainConfig.threads``; float reductions are split by thread, so another count gives other
bits), and every DataLoader worker seeds python, numpy and torch from the loader's generator.

``warn_only``: an op without a deterministic variant warns instead of failing the run. On the CPU
every op the zoo uses has one; on CUDA the known ones are the backward passes of adaptive
average pooling and of bilinear / bicubic interpolation, and ``index_add_`` / scatter-add style
accumulations (PyTorch's ``use_deterministic_algorithms`` documentation lists them).
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator for data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


@contextlib.contextmanager
def determinism(deterministic: bool, threads: int = 0):
    """Within the block: ``threads`` CPU threads (when > 0) and deterministic kernels on or off.
    The process's previous settings come back afterwards."""
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    try:
        yield
    finally:
        n_threads, enabled, warn_only, cudnn_det, cudnn_bench = before
        if torch.get_num_threads() != n_threads:
            torch.set_num_threads(n_threads)
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, cudnn_bench


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed python and numpy from the worker's torch seed, which the
    loader derives from its generator, so workers draw the same numbers in every run."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
