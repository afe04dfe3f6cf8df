"""DVC stage train@<arch>: train one architecture on every fold of ``data.folds`` (or one, with
``--fold``), for every seed in ``train.seeds``.

Outputs: models/<arch>/<fold>/seed<k>/{model.pt, predictions.csv, history.json, config.json,
run_summary.json, ...} and resumable checkpoints under checkpoints/<arch>/<fold>/seed<k>/
(persisted by DVC). Every seed is an MLflow run.
"""

from __future__ import annotations

import argparse

from _common import ROOT, dataset_info, experiment_name, load_params, path, setup_logging


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("arch")
    ap.add_argument("--fold", default=None, help="train only this fold (default: every fold of data.folds)")
    args = ap.parse_args()
    setup_logging()
    params = load_params()

    import yaml

    from lungpipe.settings import arch_settings
    from lungpipe.tracking import check_tracking_server, resolve_tracking_uri
    from lungpipe.training.job import TrainJob, run_training

    listed = params["train"].get("architectures")
    if listed is not None and sorted(listed) != sorted(params.get("arch") or {}):
        from lungpipe.config import ConfigError

        raise ConfigError(f"train.architectures {listed} must list exactly the architectures of the arch section "
                          f"{sorted(params.get('arch') or {})}: dvc.yaml trains every arch.<name> (remove an "
                          "arch section to stop training it)")
    tuned = {}
    tuned_file = path(f"tuned/{args.arch}.yaml")
    if params["train"].get("use_tuned") and tuned_file.exists():
        tuned = (yaml.safe_load(tuned_file.read_text()) or {}).get("best_params") or {}
    settings = arch_settings(params, args.arch, tuned)
    info = dataset_info(params)
    uri = resolve_tracking_uri(ROOT)
    check_tracking_server(uri)  # fail before training, not after hours
    folds = [str(args.fold)] if args.fold is not None else [str(f) for f in params["data"].get("folds", ["official"])]
    for fold in folds:
        features = path(f"data/features/{settings.frontend}")
        if fold != "official":
            features = features / f"fold{fold}"
        for seed in params["train"].get("seeds", [0]):
            run_training(TrainJob(
                settings=settings,
                features_dir=features,
                out_dir=path(f"models/{args.arch}/{fold}/seed{seed}"),
                checkpoint_dir=path(f"checkpoints/{args.arch}/{fold}/seed{seed}"),
                seed=int(seed),
                dataset=info["name"],
                fold=fold,
                metric_task=info["metric_task"],
                class_names=info["class_names"],
                tracking_uri=uri,
                experiment=experiment_name(params),
                tags={"dvc_stage": f"train@{args.arch}"},
                n_boot=int(params.get("evaluate", {}).get("n_boot", 200)),
            ))


if __name__ == "__main__":
    main()
