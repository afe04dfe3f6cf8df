"""DVC stage tune@<arch>: an Optuna study on the validation metric; best params → tuned/<arch>.yaml.

The study lives in optuna/<arch>/ (a journal file by default, persisted by DVC), so re-running the
stage continues it. More workers can join: `lungpipe tune worker --storage … --study …`.
"""

from __future__ import annotations

import argparse

from _common import ROOT, dataset_info, experiment_name, load_params, path, setup_logging


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("arch")
    args = ap.parse_args()
    setup_logging()
    params = load_params()
    if args.arch not in ((params.get("tuning") or {}).get("architectures") or []):
        # dvc.yaml runs tune@<arch> for every architecture so train@<arch> can depend on its own file
        from lungpipe import atomic

        atomic.write_yaml(path(f"tuned/{args.arch}.yaml"), {
            "study": None, "best_value": None, "best_params": {},
            "note": f"not tuned: {args.arch} is not in tuning.architectures (train uses its params as they are)"})
        atomic.write_text(path(f"optuna/{args.arch}/README.txt"), "No study: this architecture is not tuned.\n")
        print(f"{args.arch}: not in tuning.architectures; wrote an empty tuned/{args.arch}.yaml")
        return

    from lungpipe import atomic
    from lungpipe.config import from_dict
    from lungpipe.metrics import resolve_metric
    from lungpipe.settings import arch_settings
    from lungpipe.tracking import resolve_tracking_uri
    from lungpipe.tuning import TuneJob, TuningConfig, make_storage, run_study

    tuning = dict(params.get("tuning") or {})
    cfg = from_dict(TuningConfig, {k: v for k, v in tuning.items() if k not in ("architectures", "space")},
                    where="tuning")
    settings = arch_settings(params, args.arch)
    info = dataset_info(params)
    out_dir = path(f"optuna/{args.arch}")
    storage = make_storage(cfg.storage, default_path=out_dir / "study.log", heartbeat_interval=cfg.heartbeat_interval)
    study_name = f"{experiment_name(params)}-{args.arch}"
    features = path(f"data/features/{settings.frontend}")
    if info["folds"]:  # cross-validation: tune on the first fold's training folds (its test fold stays unseen)
        features = features / f"fold{info['folds'][0]}"
    job = TuneJob(
        arch=args.arch, params=params, features_dir=str(features),
        dataset=info["name"], metric_task=info["metric_task"], class_names=info["class_names"],
        tracking_uri=resolve_tracking_uri(ROOT), experiment=experiment_name(params),
    )
    result = run_study(job, cfg, storage, study_name, plots_dir=out_dir)
    atomic.write_yaml(path(f"tuned/{args.arch}.yaml"), {
        "study": study_name,
        "metric": f"val_{resolve_metric(cfg.metric, info['metric_task'], 'tuning.metric')}",
        "best_value": result.best_value,
        "best_params": result.best_params,
        "trials": {"complete": result.n_complete, "pruned": result.n_pruned, "failed": result.n_failed},
    })


if __name__ == "__main__":
    main()
