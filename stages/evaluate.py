"""DVC stage evaluate@<arch>: metrics/<arch>.json (DVC metrics) and plots/<arch>/ (DVC plots).

It reads the run folders' files only (no torch, no MLflow): the train stage registers the
architecture's champion in the model registry.
"""

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


if __name__ == "__main__":
    main()
