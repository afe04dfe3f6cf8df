"""A tiny data-parallel training, run by ``torchrun`` in tests/test_training_distributed.py.

Every rank trains :class:`PlainNet` on the separable task through the
engine's ``fit`` with the placement torchrun gives; rank 0 writes ``result.json`` (the history and
the gathered validation probabilities next to the same model's probabilities computed in one
process) and ``weights.pt`` to ``--out``. ``--pause-after-epoch k``: rank 0 writes ``paused`` after
epoch k's checkpoint and sleeps, so the test can SIGKILL the run there; every rank writes its
process id to ``pid.rank<r>`` (torchrun starts its workers in sessions of their own).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402
from tiny_training import F, K, accuracy_eval, quiet_cfg, separable_task  # noqa: E402
from torch import nn  # noqa: E402

from lungpipe.models.base import LungModel  # noqa: E402
from lungpipe.training.data import SpectrogramDataset  # noqa: E402
from lungpipe.training.distributed import torchrun_placement  # noqa: E402
from lungpipe.training.engine import fit  # noqa: E402
from lungpipe.training.probabilities import predict_loader, predict_proba  # noqa: E402

N_TRAIN, N_VAL = 64, 13  # 13 rows: uneven shards over 2 ranks


class PlainNet(LungModel):
    """Conv, ReLU, pooled over time, linear head. No BatchNorm: torch's SyncBatchNorm runs on CUDA
    only, and per-rank batch statistics would differ from the global batch's."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * F, K)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=2).flatten(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkpoints", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--pause-after-epoch", type=int, default=-1)
    args = ap.parse_args()
    x, y = separable_task(N_TRAIN + N_VAL, seed=1)
    train_ds = SpectrogramDataset(x, y, torch.arange(N_TRAIN).numpy())
    val_ds = SpectrogramDataset(x, y, torch.arange(N_TRAIN, N_TRAIN + N_VAL).numpy())
    # the global batch of 16 covers the 64 rows in 4 steps on any number of ranks; unweighted loss
    cfg = quiet_cfg(epochs=args.epochs, batch_size=16, eval_batch_size=4, class_weighted=False,
                    threads=1, log_every=1)

    def pause(epoch, record):
        if epoch == args.pause_after_epoch:
            (args.out / "paused").write_text(str(epoch))
            time.sleep(600)

    with torchrun_placement("cpu", "gloo") as placement:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"pid.rank{placement.rank}").write_text(str(os.getpid()))  # torchrun's workers have their own session
        torch.manual_seed(0)
        model = PlainNet()
        result = fit(model, train_ds, val_ds, cfg, num_classes=K, evaluate=accuracy_eval,
                     checkpoint_dir=args.checkpoints, signature="ddp-test", callbacks=[pause], progress=False,
                     placement=placement)
        gathered = placement.gather(predict_loader(model, placement.eval_loader(val_ds, cfg), placement.device))
        if placement.writer:
            args.out.mkdir(parents=True, exist_ok=True)
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, args.out / "weights.pt")
            (args.out / "result.json").write_text(json.dumps({
                "world_size": placement.world_size,
                "train_loss": [r["train_loss"] for r in result.history],
                "resumed_from_epoch": result.resumed_from_epoch,
                "gathered_val": gathered.tolist(),
                "local_val": predict_proba(model, val_ds, batch_size=5).tolist(),
            }))


if __name__ == "__main__":
    main()
