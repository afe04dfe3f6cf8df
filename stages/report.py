"""DVC stage report: every architecture's pipeline outputs (metrics/, models/, tuned/) compared in
report/ (index.html, summary.md for CI, summary.json, PNG figures), and the DVC overlay plot
plots/validation_curves.csv (every architecture's validation curve)."""

from __future__ import annotations

import argparse

from _common import _section, load_data_config, path, report_errors


@report_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="report")
    args = ap.parse_args()
    params, _ = load_data_config()

    from lungpipe.report import build_report

    data = build_report(path(args.out), root=path("."), architectures=list(_section(params, "arch")),
                        overlay_csv=path("plots/validation_curves.csv"))
    best = ", ".join(a.display_name for a in data.archs if a.best) or "none"
    print(f"report: {len(data.archs)} architecture(s) in {path(args.out) / 'index.html'}; best: {best}")


if __name__ == "__main__":
    main()
