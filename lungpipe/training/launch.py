"""How many training processes, on how many machines: ``train.distributed`` and the ``torchrun``
command that starts them.

One machine, two devices (``nproc_per_node: 2``): the train stage re-launches itself as
``torchrun --standalone --nproc_per_node 2 stages/train.py ...``. Several machines: every machine
runs the same stage with the same ``nnodes`` and ``rdzv_endpoint`` and its own ``node_rank``
(torchrun's rendezvous joins them). A stage started by ``torchrun`` itself (``LOCAL_RANK`` and
``WORLD_SIZE`` set) does not launch again: it is one of the workers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from lungpipe.util.typed_config import ConfigError

__all__ = ["BACKENDS", "RDZV_BACKENDS", "DistributedConfig", "per_rank_batch", "torchrun_command", "under_torchrun"]

#: process-group backends; auto: nccl on CUDA, gloo on the CPU
BACKENDS = ("auto", "nccl", "gloo")
#: torchrun rendezvous backends (c10d needs nothing but a reachable host:port on one of the machines)
RDZV_BACKENDS = ("c10d", "etcd", "etcd-v2")


def _whole(key: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"train.distributed.{key} must be a whole number >= {low}, got {value!r}")
    return value


@dataclass(frozen=True)
class DistributedConfig:
    """``train.distributed``: the processes of one training (torchrun's arguments)."""

    nproc_per_node: int = 1  # processes (devices) per machine; 1 with nnodes 1: no torchrun
    nnodes: int = 1  # machines
    node_rank: int = 0  # this machine's rank, 0 .. nnodes-1 (differs per machine: see the stage's --node-rank)
    rdzv_backend: str = "c10d"
    rdzv_endpoint: str = ""  # host:port of the rendezvous; "" on one machine (torchrun --standalone)
    backend: str = "auto"  # process group: auto (nccl on CUDA, gloo on the CPU) | nccl | gloo

    def __post_init__(self) -> None:
        _whole("nproc_per_node", self.nproc_per_node, 1)
        _whole("nnodes", self.nnodes, 1)
        _whole("node_rank", self.node_rank, 0)
        if self.node_rank >= self.nnodes:
            raise ConfigError(f"train.distributed.node_rank must be below nnodes ({self.nnodes}), got {self.node_rank}")
        if self.rdzv_backend not in RDZV_BACKENDS:
            raise ConfigError(f"train.distributed.rdzv_backend must be one of {list(RDZV_BACKENDS)}, "
                              f"got {self.rdzv_backend!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"train.distributed.backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if not isinstance(self.rdzv_endpoint, str):
            raise ConfigError(f"train.distributed.rdzv_endpoint must be 'host:port' or empty, got {self.rdzv_endpoint!r}")
        if self.rdzv_endpoint:
            host, _, port = self.rdzv_endpoint.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"train.distributed.rdzv_endpoint must be 'host:port', got {self.rdzv_endpoint!r}")
        elif self.nnodes > 1:
            raise ConfigError("train.distributed.rdzv_endpoint is needed with nnodes > 1: the 'host:port' of "
                              "node 0 (reachable from every machine), e.g. 10.0.0.1:29400")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def launches(self) -> bool:
        """True when the stage has to start torchrun (more than one process in all)."""
        return self.world_size > 1


def per_rank_batch(batch_size: int, world_size: int, key: str = "train.batch_size") -> int:
    """Each rank's share of the global ``batch_size``; a ConfigError naming ``key`` when it does not
    divide evenly."""
    if batch_size % world_size:
        raise ConfigError(f"{key} {batch_size} is the global batch and must divide evenly over the {world_size} "
                          f"processes (nnodes x nproc_per_node); choose a multiple of {world_size}")
    return batch_size // world_size


def under_torchrun() -> bool:
    """True in a process that torchrun started (it sets LOCAL_RANK and WORLD_SIZE)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def torchrun_command(cfg: DistributedConfig, script: str, args: Sequence[str]) -> list[str]:
    """The ``torchrun`` command line (as ``python -m torch.distributed.run``, so it uses this
    interpreter) that runs ``script args`` in ``cfg.world_size`` processes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(cfg.nproc_per_node)]
    if cfg.nnodes == 1 and not cfg.rdzv_endpoint:
        cmd.append("--standalone")  # a free local port, chosen by torchrun
    else:
        cmd += ["--nnodes", str(cfg.nnodes), "--node_rank", str(cfg.node_rank), "--rdzv_backend", cfg.rdzv_backend,
                "--rdzv_endpoint", cfg.rdzv_endpoint]
    return [*cmd, script, *args]
