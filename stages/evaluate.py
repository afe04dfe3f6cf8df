"""DVC stage evaluate@<arch>: metrics/<arch>.json (DVC metrics) and plots/<arch>/ (DVC plots)."""

from __future__ import annotations

import argparse

from _common import _int_list, _section, load_data_config, path, report_errors


@report_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("arch")
    args = ap.parse_args()
    params, run = load_data_config()

    from lungpipe.evaluation.scoring import EvaluationConfig, evaluate_architecture, summary_line
    from lungpipe.util.progress import format_number
    from lungpipe.util.typed_config import from_dict

    evaluation = from_dict(EvaluationConfig, _section(params, "evaluate"), where="evaluate")
    seeds = _int_list(params, "train.seeds", [0])

    info = run.dataset
    details = evaluate_architecture(
        args.arch, path(f"models/{args.arch}"), path(f"metrics/{args.arch}.json"), path(f"plots/{args.arch}"),
        task=info.metric_task, class_names=list(info.class_names), cfg=evaluation,
        selection=_section(params, "split").get("selection", "validation"), folds=list(run.folds),
        seeds=list(seeds),
        details_path=path(f"metrics/details/{args.arch}.json"),
    )
    print(summary_line(details))

    from lungpipe.serving.champion import register_champion

    run_dirs = [path(f"models/{args.arch}/{fold}/seed{seed}") for fold in run.folds for seed in seeds]
    key = details["headline"]
    champion = register_champion(info.name, args.arch, run_dirs, key)
    if champion is not None:
        print(f"{args.arch}: registered {champion.uri} (version {champion.version}, validation {key} "
              f"{format_number(champion.val_value)}, {champion.run_dir.parent.name}/{champion.run_dir.name})")


if __name__ == "__main__":
    main()
