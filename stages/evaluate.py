"""DVC stage evaluate@<arch>: metrics/<arch>.json (DVC metrics) and plots/<arch>/ (DVC plots)."""

from __future__ import annotations

import argparse

from _common import load_run_config, path, report_errors


@report_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("arch")
    args = ap.parse_args()
    _, run = load_run_config()

    from lungpipe.evaluation import evaluate_architecture

    info = run.dataset
    result = evaluate_architecture(
        args.arch, path(f"models/{args.arch}"), path(f"metrics/{args.arch}.json"), path(f"plots/{args.arch}"),
        task=info.metric_task, class_names=list(info.class_names), cfg=run.evaluation,
        selection=run.selection, folds=list(run.folds), seeds=list(run.seeds),
    )
    key = "score" if info.metric_task == "icbhi" else "accuracy"
    line = f"{args.arch}: {key} {result.get(key)} [{result.get(key + '_ci_low')}, {result.get(key + '_ci_high')}]"
    if result.get(f"{key}_fold_mean") is not None:
        std = result.get(f"{key}_fold_std")
        line += (f"; over {result['n_folds']} folds {result[f'{key}_fold_mean']:.4f} ± "
                 f"{'n/a' if std is None else f'{std:.4f}'}")
    print(line)


if __name__ == "__main__":
    main()
