"""Training throughput per architecture: the engine's loop against a plain loop on the same model,
batch and data, on CUDA when present, else CPU.

The engine loop is :class:`lungpipe.training.step.TrainStep` fed by the engine's loader (pinned,
persistent workers): no host sync per step, fused AdamW on CUDA, channels-last for models that
ask for it, the weight moving average in foreach ops. The plain loop is what a straightforward
script does: ``loss.item()`` and a finiteness check every step, the weight moving average with
deep copies of the state dict (as the patch-mix / ADD4RSC release does), a per-tensor AdamW, no
pinning. Both train with the same augmentation (the release's SpecAugment) and the same weights
at the start. Figures per loop: samples/s, the share of step time spent waiting for the next
batch, and peak memory (CUDA: allocated; CPU: resident high-water mark).
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from lungpipe.features import load_split
from lungpipe.models import count_parameters, create_model
from lungpipe.training.augment import (
    RELEASE_FREQ_MASK_FRAC,
    RELEASE_TIME_MASK_FRAC,
    AugmentConfig,
    spec_augment,
)
from lungpipe.training.config import TrainConfig
from lungpipe.training.data import SpectrogramDataset, make_loader
from lungpipe.training.device import autocast, grad_scaler, pick_device
from lungpipe.training.placement import SingleProcess
from lungpipe.training.step import LossMeter, TrainStep

#: Input (frames, mel bins) of each architecture's paper recipe; others use 8 s of 128-bin fbank.
PAPER_INPUTS: dict[str, tuple[int, int]] = {"mrinet": (1024, 64)}
DEFAULT_INPUT = (798, 128)
#: The release's moving-average weight, used by both loops.
BENCH_MA_BETA = 0.5


@dataclass
class LoopFigures:
    samples_per_s: float
    data_wait_share: float  # of the timed wall time, spent waiting for the next batch
    peak_memory_mb: float


@dataclass
class TrainBench:
    arch: str
    preset: str
    device: str
    batch_size: int
    input_shape: tuple[int, int]
    parameters: int
    engine: LoopFigures
    plain: LoopFigures | None = None
    loader_samples_per_s: float | None = None

    @property
    def samples_per_s(self) -> float:
        return self.engine.samples_per_s

    @property
    def peak_memory_mb(self) -> float:
        return self.engine.peak_memory_mb

    @property
    def ratio(self) -> float | None:
        """Engine samples/s over plain-loop samples/s."""
        return self.engine.samples_per_s / self.plain.samples_per_s if self.plain else None


def reset_cpu_peak() -> bool:
    """Reset this process's resident-size high-water mark (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def cpu_peak_mb() -> float:
    """Peak resident size of this address space (``VmHWM``), falling back to ``ru_maxrss``, which on
    Linux also counts the forking parent's memory and never goes down."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def paper_input(arch: str) -> tuple[int, int]:
    return PAPER_INPUTS.get(arch, DEFAULT_INPUT)


def bench_model_isolated(arch: str, preset: str, batch_size: int, n_frames: int, n_mels: int, steps: int = 5,
                         warmup: int = 2, device: str = "auto", workers: int = 0, plain: bool = True) -> TrainBench:
    """:func:`bench_model` in a fresh process, so that the CPU peak belongs to this architecture alone
    (no memory or allocator caches left over from the models benchmarked before it)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(bench_model, arch, preset, batch_size, n_frames, n_mels, steps, warmup, device, workers,
                           plain).result()


class _Clock:
    """Wall time of the timed steps and the part of it spent waiting for batches."""

    def __init__(self, device):
        self.device = device
        self.wait = 0.0

    def next_batch(self, it):
        t = time.perf_counter()
        batch = next(it)
        self.wait += time.perf_counter() - t
        return batch

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_cpu_peak()

    def peak_mb(self) -> float:
        return torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else cpu_peak_mb()


def bench_model(arch: str, preset: str, batch_size: int, n_frames: int, n_mels: int, steps: int = 5,
                warmup: int = 2, device: str = "auto", workers: int = 0, plain: bool = True) -> TrainBench:
    dev = pick_device(device)
    torch.manual_seed(0)
    model = create_model(arch, {"preset": preset, "num_classes": 4, "n_frames": n_frames, "n_mels": n_mels})
    initial = copy.deepcopy(model.state_dict())
    n = batch_size * (warmup + steps)
    rng = np.random.default_rng(0)
    ds = SpectrogramDataset(rng.normal(size=(n, n_frames, n_mels)).astype(np.float32), np.arange(n) % 4)
    engine = _time_engine(model, ds, dev, batch_size, steps, warmup, workers)
    plain_figures = None
    if plain:
        model.load_state_dict(initial)
        plain_figures = _time_plain(model, ds, dev, batch_size, steps, warmup, workers)
    return TrainBench(arch, preset, str(dev), batch_size, (n_frames, n_mels), count_parameters(model), engine,
                      plain_figures)


def _bench_config(batch_size: int, workers: int, device):
    return TrainConfig(epochs=1, batch_size=batch_size, lr=1e-4, grad_clip=0.0, class_weighted=False,
                       ma_update=True, ma_beta=BENCH_MA_BETA, num_workers=workers, device=str(device),
                       deterministic=False, log_every=50,
                       augment=AugmentConfig(mode="release", freq_mask_frac=RELEASE_FREQ_MASK_FRAC,
                                             time_mask_frac=RELEASE_TIME_MASK_FRAC))


def _time_engine(model, ds, dev, batch_size, steps, warmup, workers) -> LoopFigures:
    cfg = _bench_config(batch_size, workers, dev)
    placement = SingleProcess(dev)
    model = placement.prepare(model, cfg)
    generator = torch.Generator().manual_seed(0)
    loader = placement.train_loader(ds, cfg, generator)
    step = TrainStep(model, cfg, dev, nn.CrossEntropyLoss(), generator, steps_per_epoch=len(loader))
    meter, clock = LossMeter(dev, 0), _Clock(dev)
    model.train()
    it = iter(loader)
    for _ in range(warmup):
        step(*next(it), meter)
    clock.reset_peak()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*clock.next_batch(it), meter)
    meter.check("bench")
    clock.sync()
    elapsed = time.perf_counter() - t0
    return LoopFigures(steps * batch_size / elapsed, clock.wait / elapsed, clock.peak_mb())


def _time_plain(model, ds, dev, batch_size, steps, warmup, workers) -> LoopFigures:
    """The plain loop (see the module docstring)."""
    cfg = _bench_config(batch_size, workers, dev)
    model.to(dev, memory_format=torch.contiguous_format).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)
    scaler = grad_scaler(dev, cfg.amp)
    ce = torch.nn.CrossEntropyLoss()
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers)
    it, clock = iter(loader), _Clock(dev)
    total = 0.0

    def step(x, y):
        nonlocal total
        before = copy.deepcopy(model.state_dict())
        x, y = x.to(dev), y.to(dev)
        x = spec_augment(x, cfg.augment)
        with autocast(dev, cfg.amp):
            out = model.training_loss(x, y, ce)
        loss = out.loss.float()
        if not torch.isfinite(loss):
            raise FloatingPointError("plain loop: non-finite loss")
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        total += loss.item() + sum(float(v) for v in out.parts.values())
        with torch.no_grad():
            after = copy.deepcopy(model.state_dict())
            model.load_state_dict({k: BENCH_MA_BETA * before[k] + (1 - BENCH_MA_BETA) * v
                                   if v.is_floating_point() else v for k, v in after.items()})

    for _ in range(warmup):
        step(*next(it))
    clock.reset_peak()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*clock.next_batch(it))
    clock.sync()
    elapsed = time.perf_counter() - t0
    return LoopFigures(steps * batch_size / elapsed, clock.wait / elapsed, clock.peak_mb())


def bench_loader(features_dir: Path, batch_size: int, num_workers: int, max_batches: int = 50) -> float:
    split = load_split(features_dir, "train")
    ds = SpectrogramDataset(split.x, split.index["label"].to_numpy())
    loader = make_loader(ds, batch_size, shuffle=True, num_workers=num_workers)
    n, t0 = 0, time.perf_counter()
    for i, (xb, _) in enumerate(loader):
        n += len(xb)
        if i + 1 >= max_batches:
            break
    return n / (time.perf_counter() - t0)
