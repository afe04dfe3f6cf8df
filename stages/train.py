"""DVC stage train@<arch>: train one architecture on every fold of data.folds, for every seed in params.

Outputs: models/<arch>/<fold>/seed<k>/{model.pt, predictions.csv, history.json, config.json,
run_summary.json, ...} and resumable checkpoints under checkpoints/<arch>/<fold>/seed<k>/
(persisted by DVC). Every seed is an MLflow run; at the end the run folder with the best validation
headline metric (ICBHI Score; macro-F1 for multiclass sources) among the configured folds and seeds
is registered as lungpipe-<dataset>-<arch>@champion (lungpipe.serving.champion). The stage holds checkpoints/<arch>/train.lock
while it trains: a second trainer of the same architecture (say, a new `dvc repro` while the
trainer of a killed one still runs) refuses to start and names the PID that holds it.

With ``train.distributed`` asking for more than one process, the stage re-launches itself under
``torchrun`` (lungpipe.training.launch); started by torchrun, it is one rank of a data-parallel run
(lungpipe.training.distributed), and rank 0 alone holds the lock and writes. On a second machine:
``python stages/train.py <arch> --node-rank 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from _common import ROOT, path, report_errors
from _run import load_run_config


@report_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("arch")
    ap.add_argument("--fold", default=None, help="train only this fold (default: every fold of data.folds)")
    ap.add_argument("--node-rank", type=int, default=None,
                    help="this machine's rank in a multi-node run (overrides train.distributed.node_rank)")
    args = ap.parse_args()
    params, run = load_run_config(announce_tuned=True)

    from lungpipe.tracking import check_tracking_server, resolve_tracking_uri
    from lungpipe.training.distributed import torchrun_placement
    from lungpipe.training.job import TrainJob, run_training
    from lungpipe.training.launch import DistributedConfig, per_rank_batch, torchrun_command, under_torchrun
    from lungpipe.util.locks import FolderLock, ensure_writable
    from lungpipe.util.typed_config import ConfigError, from_dict

    if args.arch not in run.architectures:
        raise ConfigError(f"train.architectures: {args.arch!r} is not listed ({', '.join(run.architectures)}); "
                          "add it there to train it")
    if args.fold is not None and str(args.fold) not in run.folds:
        raise ConfigError(f"data.folds: fold {args.fold!r} is not listed ({', '.join(run.folds)})")
    distributed = dict((params.get("train") or {}).get("distributed") or {})
    if args.node_rank is not None:
        distributed["node_rank"] = args.node_rank
    distributed = from_dict(DistributedConfig, distributed, where="train.distributed")
    settings = run.archs[args.arch]
    per_rank_batch(settings.train.batch_size, distributed.world_size, f"arch.{args.arch}.train.batch_size")
    if distributed.launches and not under_torchrun():
        cmd = torchrun_command(distributed, __file__, sys.argv[1:])
        logging.getLogger("train").info("launching %d processes: %s", distributed.world_size, " ".join(cmd))
        os.execv(cmd[0], cmd)  # torchrun takes this process's place (and its signals)

    folds = [str(args.fold)] if args.fold is not None else list(run.folds)
    info = run.dataset
    out_root = ensure_writable(path(f"models/{args.arch}"))
    checkpoints = ensure_writable(path(f"checkpoints/{args.arch}"))
    uri = resolve_tracking_uri(ROOT)
    check_tracking_server(uri)  # fail before training, not after hours
    with torchrun_placement(settings.train.device, distributed.backend) as placement:
        writer = placement is None or placement.writer  # None: one process (no torchrun)
        lock = FolderLock(checkpoints) if writer else contextlib.nullcontext()
        with lock:
            for fold in folds:
                features = path(f"data/features/{settings.frontend}")
                if fold != "official":
                    features = features / f"fold{fold}"
                for seed in run.seeds:
                    run_training(TrainJob(
                        settings=settings,
                        features_dir=features,
                        out_dir=out_root / fold / f"seed{seed}",
                        checkpoint_dir=checkpoints / fold / f"seed{seed}",
                        seed=seed,
                        dataset=info.name,
                        fold=fold,
                        metric_task=info.metric_task,
                        class_names=list(info.class_names),
                        tracking_uri=uri,
                        experiment=run.experiment,
                        tags={"dvc_stage": f"train@{args.arch}"},
                        n_boot=run.evaluation.n_boot,
                        placement=placement,
                    ))
            if writer:
                _register_champion(args.arch, info, [out_root / f / f"seed{seed}" for f in run.folds for seed in run.seeds])


def _register_champion(arch: str, info, run_dirs) -> None:
    """The model registry's champion of ``arch``: registered here, where the MLflow store is open
    and the runs and their models were just logged (the evaluate stage then reads files only)."""
    from lungpipe.evaluation.scoring import headline_metric
    from lungpipe.serving.champion import register_champion
    from lungpipe.util.progress import format_number

    key = headline_metric(info.metric_task)
    champion = register_champion(info.name, arch, run_dirs, key)
    if champion is not None:
        print(f"{arch}: registered {champion.uri} (version {champion.version}, validation {key} "
              f"{format_number(champion.val_value)}, {champion.run_dir.parent.name}/{champion.run_dir.name})")


if __name__ == "__main__":
    main()
