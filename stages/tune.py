"""DVC stage tune@<arch>: an Optuna study on the validation metric; best params → tuned/<arch>.yaml.

The study lives in optuna/<arch>/ (a journal file by default, persisted by DVC), so re-running the
stage continues it. More workers can join: `lungpipe tune worker --storage … --study …`.
Search-space and tuned keys are namespaced: train.<field>, augment.<field>, model.<field>.
"""

from __future__ import annotations

import argparse

from _common import ROOT, load_run_config, path, report_errors


@report_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("arch")
    args = ap.parse_args()
    _, run = load_run_config()

    from lungpipe import atomic
    from lungpipe.config import ConfigError, to_dict
    from lungpipe.metrics import resolve_metric
    from lungpipe.tracking import resolve_tracking_uri
    from lungpipe.tuning import TuneJob, make_storage, run_study

    if args.arch not in run.tuning_spaces:
        raise ConfigError(f"tuning.architectures: {args.arch!r} is not listed "
                          f"({', '.join(run.tuning_architectures) or 'empty'})")
    cfg = run.tuning
    settings = run.archs[args.arch]
    info = run.dataset
    out_dir = path(f"optuna/{args.arch}")
    storage = make_storage(cfg.storage, default_path=out_dir / "study.log", heartbeat_interval=cfg.heartbeat_interval)
    study_name = f"{run.experiment}-{args.arch}"
    features = path(f"data/features/{settings.frontend}")
    if info.folds:  # cross-validation: tune on the first fold's training folds (its test fold stays unseen)
        features = features / f"fold{info.folds[0]}"
    job = TuneJob(
        arch=args.arch, settings=to_dict(settings),
        space={key: to_dict(p) for key, p in run.tuning_spaces[args.arch].items()}, features_dir=str(features),
        dataset=info.name, metric_task=info.metric_task, class_names=list(info.class_names),
        tracking_uri=resolve_tracking_uri(ROOT), experiment=run.experiment,
    )
    result = run_study(job, cfg, storage, study_name, plots_dir=out_dir)
    atomic.write_yaml(path(f"tuned/{args.arch}.yaml"), {
        "study": study_name,
        "metric": f"val_{resolve_metric(cfg.metric, info.metric_task, 'tuning.metric')}",
        "best_value": result.best_value,
        "best_params": result.best_params,
        "trials": {"complete": result.n_complete, "pruned": result.n_pruned, "failed": result.n_failed},
    })


if __name__ == "__main__":
    main()
