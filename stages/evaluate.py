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

    from lungpipe.evaluation import evaluate_architecture, summary_line

    info = run.dataset
    details = evaluate_architecture(
        args.arch, path(f"models/{args.arch}"), path(f"metrics/{args.arch}.json"), path(f"plots/{args.arch}"),
        task=info.metric_task, class_names=list(info.class_names), cfg=run.evaluation,
        selection=run.selection, folds=list(run.folds), seeds=list(run.seeds),
        details_path=path(f"metrics/details/{args.arch}.json"),
    )
    print(summary_line(details))


if __name__ == "__main__":
    main()
