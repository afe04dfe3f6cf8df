"""DVC stage train@<arch>: train one architecture on every fold of ``data.folds`` (or one, with
``--fold``), for every seed in ``train.seeds``.

Outputs: models/<arch>/<fold>/seed<k>/{model.pt, predictions.csv, history.json, config.json,
run_summary.json, ...} and resumable checkpoints under checkpoints/<arch>/<fold>/seed<k>/
(persisted by DVC). Every seed is an MLflow run. The stage holds checkpoints/<arch>/train.lock
while it trains: a second trainer of the same architecture (say, a new `dvc repro` while the
trainer of a killed one still runs) refuses to start and names the PID that holds it.
"""

from __future__ import annotations

import argparse

from _common import ROOT, path, report_errors
from _run import load_run_config


@report_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("arch")
    ap.add_argument("--fold", default=None, help="train only this fold (default: every fold of data.folds)")
    args = ap.parse_args()
    _, run = load_run_config(announce_tuned=True)

    from lungpipe.config import ConfigError
    from lungpipe.locks import FolderLock, ensure_writable
    from lungpipe.tracking import check_tracking_server, resolve_tracking_uri
    from lungpipe.training.job import TrainJob, run_training

    if args.arch not in run.architectures:
        raise ConfigError(f"train.architectures: {args.arch!r} is not listed ({', '.join(run.architectures)}); "
                          "add it there to train it")
    if args.fold is not None and str(args.fold) not in run.folds:
        raise ConfigError(f"data.folds: fold {args.fold!r} is not listed ({', '.join(run.folds)})")
    folds = [str(args.fold)] if args.fold is not None else list(run.folds)
    settings = run.archs[args.arch]
    info = run.dataset
    out_root = ensure_writable(path(f"models/{args.arch}"))
    checkpoints = ensure_writable(path(f"checkpoints/{args.arch}"))
    uri = resolve_tracking_uri(ROOT)
    with FolderLock(checkpoints):
        check_tracking_server(uri)  # fail before training, not after hours
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
                ))


if __name__ == "__main__":
    main()
