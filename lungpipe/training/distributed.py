"""Data-parallel training under ``torchrun``: one process per device, DistributedDataParallel.

The train stage launches ``torchrun`` when ``train.distributed`` asks for more than one process
(:mod:`lungpipe.training.launch`), or runs as one of its workers when ``torchrun`` started it
(``LOCAL_RANK`` and ``WORLD_SIZE`` are set). Each worker trains through a
:class:`DistributedPlacement`, the engine's seam for where training runs:

- ``train.batch_size`` is the GLOBAL batch: each of the ``W`` ranks takes ``batch_size / W``
  samples per step, so the recipe (batch, learning rate, steps per epoch) does not change with the
  number of devices. A seeded ``DistributedSampler`` (``set_epoch`` every epoch) deals rank ``r``
  the positions ``r, r + W, r + 2W ...`` of the epoch's permutation; one global step therefore
  covers ``batch_size`` consecutive samples of that permutation.
- The model is wrapped in ``DistributedDataParallel``, whose forward runs the model's
  ``training_loss`` hook so gradients are averaged over the ranks. With
  ``train.sync_batchnorm`` the BatchNorm layers become ``SyncBatchNorm`` (statistics over the
  global batch, as MRINet's release trained on 2 GPUs; torch runs it on CUDA only, so on CPUs it
  is a ConfigError); without it each rank normalises its own share, and rank 0's running
  statistics are broadcast at every forward and at the end of every epoch (so the model that is
  evaluated and saved is the same on every rank).
- Every epoch each rank reseeds its random sources (augmentation, dropout) from (seed, epoch,
  rank): the ranks draw different masks, and a run resumed from ``last.pt`` draws what the
  uninterrupted run drew.
- Validation and test sets are split over the ranks without repeats (:class:`EvalShard`); their
  probabilities are gathered from all ranks and put back in dataset order.
- Rank 0 alone writes checkpoints, predictions, metrics and MLflow; every rank reads ``last.pt``
  to resume (on several machines the checkpoint folder must be on storage they share).

With a class-weighted loss each rank's loss is the weighted mean over its own share, so the
average over ranks is close to, but not exactly, the weighted mean over the global batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from lungpipe.training.config import TrainConfig
from lungpipe.training.data import SpectrogramDataset
from lungpipe.training.device import pick_device
from lungpipe.training.launch import BACKENDS, per_rank_batch, under_torchrun
from lungpipe.training.placement import SingleProcess
from lungpipe.training.seeding import seed_worker
from lungpipe.util.typed_config import ConfigError

__all__ = ["DistributedPlacement", "EvalShard", "torchrun_placement", "unshard"]

log = logging.getLogger(__name__)


class _TrainingLossForward(nn.Module):
    """A module whose forward is ``model.training_loss``: DDP arms its gradient all-reduce in its
    own forward, so the loss hook has to run through it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, y, criterion):
        # the class's hook: the instance attribute set in DistributedPlacement.wrap points back here
        return type(self.model).training_loss(self.model, x, y, criterion)


class EvalShard(Sampler[int]):
    """Rank ``rank``'s share of an evaluation set: positions ``rank, rank + W, ...`` of
    ``range(n)``, nothing repeated (shards differ by at most one row)."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def unshard(per_rank: list[torch.Tensor], n: int) -> torch.Tensor:
    """Dataset-order rows from the outputs of the :class:`EvalShard` of every rank, each padded at
    the end to the same number of rows: rank ``r``'s row ``i`` is position ``r + i * W``, so
    interleaving the ranks restores the order, and the padding falls beyond ``n``."""
    stacked = torch.stack(per_rank, dim=1)  # (rows per rank, W, ...)
    return stacked.reshape(-1, *stacked.shape[2:])[:n]


@dataclass
class DistributedPlacement(SingleProcess):
    """One rank of a ``torch.distributed`` process group (see the module docstring)."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        self.writer = self.rank == 0
        self._generator: torch.Generator | None = None
        self._seed = 0
        self._sync_batchnorm = False

    def prepare(self, model: nn.Module, cfg: TrainConfig) -> nn.Module:
        self._sync_batchnorm = cfg.sync_batchnorm
        return super().prepare(model, cfg)

    def wrap(self, model: nn.Module) -> nn.Module:
        """Sync BatchNorm if asked (in place), then DDP around the loss hook. The module returned
        is ``model`` itself, so parameter names, state dicts and evaluation stay those of one
        process; only its ``training_loss`` now goes through DDP."""
        if self._sync_batchnorm and self.world_size > 1:
            if self.device.type != "cuda":
                raise ConfigError("train.sync_batchnorm needs CUDA devices (torch's SyncBatchNorm runs on GPUs "
                                  "only); set it to false to train on CPUs, each rank then normalises its own share")
            converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            if converted is not model:
                raise ValueError("sync_batchnorm: a model that is itself one BatchNorm layer cannot be converted")
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        ddp = DistributedDataParallel(_TrainingLossForward(model), device_ids=device_ids)
        model.training_loss = ddp.__call__  # an instance attribute over the class hook (see _TrainingLossForward)
        return model

    def train_loader(self, dataset: SpectrogramDataset, cfg: TrainConfig, generator: torch.Generator) -> DataLoader:
        self._generator, self._seed = generator, int(cfg.seed)
        sampler = DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=True,
                                     seed=int(cfg.seed), drop_last=False)
        batch = per_rank_batch(cfg.batch_size, self.world_size)
        shard = len(sampler)
        # a lone last sample per rank breaks BatchNorm in training (as in make_loader)
        drop = (cfg.drop_last and shard >= batch) or (shard > batch and shard % batch == 1)
        return self._loader(dataset, batch, sampler, cfg.num_workers, generator, drop)

    def eval_loader(self, dataset: SpectrogramDataset, cfg: TrainConfig) -> DataLoader:
        sampler = EvalShard(len(dataset), self.rank, self.world_size)
        batch = max(1, -(-cfg.eval_batch_size // self.world_size))
        return self._loader(dataset, batch, sampler, cfg.num_workers, None, False)

    def _loader(self, dataset, batch, sampler, num_workers, generator, drop_last) -> DataLoader:
        return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=num_workers, generator=generator,
                          pin_memory=self.device.type == "cuda", drop_last=drop_last,
                          persistent_workers=num_workers > 0, worker_init_fn=seed_worker if num_workers > 0 else None)

    def start_epoch(self, loader: DataLoader, epoch: int) -> None:
        """The sampler's epoch, and this rank's random sources seeded from (seed, epoch, rank). All
        ranks must be at the same epoch: one that resumed from ``last.pt`` while another found none
        (a checkpoint folder not shared between machines) is an error, not a silent divergence."""
        span = torch.tensor([epoch, -epoch], dtype=torch.int64, device=self.device)
        dist.all_reduce(span, op=dist.ReduceOp.MAX)
        if int(span[0]) != -int(span[1]):
            raise RuntimeError(f"the ranks start different epochs ({-int(span[1])} to {int(span[0])}): some resumed "
                               f"from last.pt and some did not. Put the checkpoints folder on storage every "
                               f"machine shares (or copy it to each) before resuming")
        loader.sampler.set_epoch(epoch)
        seed = int(np.random.SeedSequence([self._seed, epoch, self.rank]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if self._generator is not None:
            self._generator.manual_seed(seed)

    @torch.no_grad()
    def end_epoch(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank: DDP broadcasts them at the
        start of each forward, so after the epoch's last step each rank holds its own; evaluation and
        the saved weights must be one model."""
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def reduce_sum(self, totals: torch.Tensor) -> torch.Tensor:
        """``totals`` summed over the ranks (the epoch's loss sums and sample count)."""
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        return totals

    def gather(self, probs: np.ndarray) -> np.ndarray:
        """The probabilities of every rank's :class:`EvalShard`, in dataset order (all ranks get the
        whole array)."""
        local = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32)).to(self.device)
        counts = [torch.zeros(2, dtype=torch.int64, device=self.device) for _ in range(self.world_size)]
        dist.all_gather(counts, torch.tensor(local.shape[:2], dtype=torch.int64, device=self.device))
        rows = [int(c[0]) for c in counts]
        width = max(int(c[1]) for c in counts)
        padded = torch.zeros(max(rows), width, dtype=torch.float32, device=self.device)
        padded[: local.shape[0], : local.shape[1]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return unshard([p.cpu() for p in parts], sum(rows)).numpy()


def _backend(name: str, device: torch.device) -> str:
    if name not in BACKENDS:
        raise ValueError(f"distributed backend must be one of {list(BACKENDS)}, got {name!r}")
    if name != "auto":
        return name
    return "nccl" if device.type == "cuda" else "gloo"


def _rank_device(device_name: str, local_rank: int) -> torch.device:
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def torchrun_placement(device_name: str = "auto", backend: str = "auto") -> Iterator[DistributedPlacement | None]:
    """Under ``torchrun``: join its process group (nccl on CUDA, gloo on the CPU) and yield this
    rank's placement; the group is left afterwards. Not under torchrun: yield None (one process)."""
    if not under_torchrun():
        yield None
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    device = _rank_device(device_name, local_rank)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(_backend(backend, device))
    placement = DistributedPlacement(device, rank=dist.get_rank(), world_size=dist.get_world_size())
    log.info("rank %d of %d on %s (%s)", placement.rank, placement.world_size, device, dist.get_backend())
    try:
        yield placement
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()
