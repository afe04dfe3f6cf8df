"""DVC stage report: every architecture's latest MLflow runs compared in report/ (index.html,
summary.md for CI, summary.json, PNG figures)."""

from __future__ import annotations

import argparse

from _common import ROOT, load_run_config, path, report_errors


@report_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="report")
    args = ap.parse_args()
    _, run = load_run_config()

    from lungpipe.report import build_report
    from lungpipe.tracking import resolve_tracking_uri

    data = build_report(path(args.out), tracking_uri=resolve_tracking_uri(ROOT), experiment=run.experiment)
    best = ", ".join(s.architecture for s in data.summaries if s.best) or "none"
    print(f"report: {len(data.summaries)} architecture(s) in {path(args.out) / 'index.html'}; best: {best}")


if __name__ == "__main__":
    main()
