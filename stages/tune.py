"""DVC stage tune@<arch>: an Optuna study on the validation metric; best params → tuned/<arch>.yaml.

The study lives in optuna/<arch>/ (a journal file by default, persisted by DVC), so re-running the
stage continues it; its name ends in a hash of the search space, base settings, data version and
metric, so changing any of them starts a new study (the old one stays in the storage).
tuned/<arch>.yaml records which study produced it. More workers can join:
`lungpipe tune worker --storage … --study …`. Search-space and tuned keys are namespaced:
train.<field>, augment.<field>, model.<field>.
"""

from __future__ import annotations

import argparse

from _common import ROOT, _lookup, load_params, path, report_errors, setup_logging

from lungpipe.util import atomic


def _write_untuned(arch: str) -> None:
    # dvc.yaml runs tune@<arch> for every architecture so train@<arch> can depend on its own file
    atomic.write_yaml(path(f"tuned/{arch}.yaml"), {
        "study": None, "best_value": None, "best_params": {},
        "note": f"not tuned: {arch} is not in tuning.architectures (train uses its params as they are)"})
    atomic.write_text(path(f"optuna/{arch}/README.txt"), "No study: this architecture is not tuned.\n")
    print(f"{arch}: not in tuning.architectures; wrote an empty tuned/{arch}.yaml")


@report_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("arch")
    args = ap.parse_args()
    listed = _lookup(load_params(), "tuning.architectures")
    if isinstance(listed, list) and args.arch not in listed:
        # nothing to tune: skip loading torch and the model registry (seconds per stage); the train
        # stage of this architecture validates every setting
        setup_logging()
        _write_untuned(args.arch)
        return

    from _run import load_run_config
    from _tuning import build_tuning

    params, run = load_run_config()
    tuning = build_tuning(params, run)
    if args.arch not in tuning.spaces:
        _write_untuned(args.arch)
        return

    from lungpipe.evaluation.metrics import resolve_metric
    from lungpipe.tracking import resolve_tracking_uri
    from lungpipe.tuning import TuneJob, make_storage, redact_url, run_study, study_name_for, tuned_record

    cfg = tuning.config
    settings = run.base_archs[args.arch]  # tuning starts from params.yaml's values, not an earlier study's
    info = run.dataset
    out_dir = path(f"optuna/{args.arch}")
    storage = make_storage(cfg.storage, default_path=out_dir / "study.log", heartbeat_interval=cfg.heartbeat_interval)
    storage_label = redact_url(cfg.storage) if cfg.storage else f"optuna/{args.arch}/study.log"
    features = path(f"data/features/{settings.frontend}")
    if info.folds:  # cross-validation: tune on the first fold's training folds (its test fold stays unseen)
        features = features / f"fold{info.folds[0]}"
    job = TuneJob(
        settings=settings, space=tuning.spaces[args.arch], features_dir=str(features),
        dataset=info.name, metric_task=info.metric_task, class_names=list(info.class_names),
        tracking_uri=resolve_tracking_uri(ROOT), experiment=run.experiment,
    )
    study_name, identity = study_name_for(run.experiment, job, cfg)
    print(f"study {study_name} in {storage_label}")
    result = run_study(job, cfg, storage, study_name, plots_dir=out_dir)
    metric = resolve_metric(cfg.metric, info.metric_task, "tuning.metric")
    atomic.write_yaml(path(f"tuned/{args.arch}.yaml"), tuned_record(result, identity, storage_label, metric))


if __name__ == "__main__":
    main()
