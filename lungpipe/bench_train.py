"""Training throughput: model samples/s (forward + backward + optimizer step) at a preset, on CUDA
when present, else CPU; and data-loader samples/s alone, to see which one bounds the other."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TrainBench:
    arch: str
    preset: str
    device: str
    batch_size: int
    input_shape: tuple[int, int]
    parameters: int
    samples_per_s: float
    peak_memory_mb: float
    loader_samples_per_s: float | None = None


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


#: Input (frames, mel bins) of each architecture's paper recipe; others use 8 s of 128-bin fbank.
PAPER_INPUTS: dict[str, tuple[int, int]] = {"mrinet": (1024, 64)}
DEFAULT_INPUT = (798, 128)


def paper_input(arch: str) -> tuple[int, int]:
    return PAPER_INPUTS.get(arch, DEFAULT_INPUT)


def bench_model_isolated(arch: str, preset: str, batch_size: int, n_frames: int, n_mels: int, steps: int = 5,
                         warmup: int = 2, device: str = "auto") -> TrainBench:
    """:func:`bench_model` in a fresh process, so that the CPU peak belongs to this architecture alone
    (no memory or allocator caches left over from the models benchmarked before it)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(bench_model, arch, preset, batch_size, n_frames, n_mels, steps, warmup, device).result()


def bench_model(arch: str, preset: str, batch_size: int, n_frames: int, n_mels: int, steps: int = 5,
                warmup: int = 2, device: str = "auto") -> TrainBench:
    import torch

    from lungpipe.models import count_parameters, create_model
    from lungpipe.training.device import autocast, pick_device

    dev = pick_device(device)
    model = create_model(arch, {"preset": preset, "num_classes": 4, "n_frames": n_frames, "n_mels": n_mels}).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 1, n_frames, n_mels, device=dev)
    y = torch.arange(batch_size, device=dev) % 4
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        reset_cpu_peak()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(dev, "auto"):
            loss = model.training_loss(x, y, torch.nn.functional.cross_entropy).loss
        loss.float().backward()
        opt.step()

    model.train()
    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = cpu_peak_mb()
    elapsed = time.perf_counter() - t0
    return TrainBench(arch, preset, str(dev), batch_size, (n_frames, n_mels), count_parameters(model),
                      steps * batch_size / elapsed, peak)


def bench_loader(features_dir: Path, batch_size: int, num_workers: int, max_batches: int = 50) -> float:
    from lungpipe.features import load_split
    from lungpipe.training.data import SpectrogramDataset, make_loader

    split = load_split(features_dir, "train")
    ds = SpectrogramDataset(split.x, split.index["label"].to_numpy())
    loader = make_loader(ds, batch_size, shuffle=True, num_workers=num_workers)
    n, t0 = 0, time.perf_counter()
    for i, (xb, _) in enumerate(loader):
        n += len(xb)
        if i + 1 >= max_batches:
            break
    return n / (time.perf_counter() - t0)
