"""Turning the collected outputs into text: a static HTML page, a Markdown summary (for CI) and
``summary.json``. Every number comes from ``metrics/`` (what ``dvc metrics show`` prints) and
the run folders; images are referenced by file name relative to the page."""

from __future__ import annotations

import datetime as _dt
import html
import json
from dataclasses import dataclass, field
from typing import Any

from lungpipe.report.figures import metric_label
from lungpipe.report.outputs import ArchOutputs, RunOutputs
from lungpipe.report.runinfo import differing_hyperparameters, mlflow_link


@dataclass
class ReportData:
    """What the page shows. Image fields hold file names inside the report folder (or None)."""

    root: str
    archs: list[ArchOutputs]
    score_bars: str | None = None
    overlay: str | None = None
    confusion: dict[str, str] = field(default_factory=dict)
    curves: dict[str, str] = field(default_factory=dict)
    generated: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))

    @property
    def columns(self) -> list[str]:
        """The metrics shown per architecture (the task of the first one decides)."""
        return ["sp", "se", "score"] if self.archs[0].task == "icbhi" else ["accuracy", "macro_f1"]


def pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}"


def pooled_text(a: ArchOutputs, key: str) -> str:
    """``71.2 [65.0, 77.0]``: the pooled value with its 95% interval, in percent."""
    m = a.metrics
    if m.get(key) is None:
        return "—"
    low, high = m.get(f"{key}_lo"), m.get(f"{key}_hi")
    return pct(m[key]) + ("" if low is None or high is None else f" [{pct(low)}, {pct(high)}]")


def spread_text(a: ArchOutputs, key: str) -> str:
    """``71.2 ± 2.1``: mean ± sd over seeds (or folds); the pooled value stands in for the mean
    where the metric file leaves it out (Sp, Se: equal on one test split)."""
    m = a.metrics
    mean = m.get(f"{key}_mean", m.get(key))
    sd = m.get(f"{key}_sd")
    if mean is None:
        return "—"
    return pct(mean) if sd is None else f"{pct(mean)} ± {pct(sd)}"


def _over(a: ArchOutputs) -> str:
    return "folds" if "folds" in a.details else "seeds"


def run_facts(run: RunOutputs) -> dict[str, Any]:
    s = run.summary
    best = s.get("best_epoch")
    return {
        "fold": run.fold, "seed": run.seed,
        "epochs_run": s.get("epochs_run", len(run.history) or None),
        "epochs_configured": s.get("epochs_configured"),
        "selected_epoch": None if best is None or best < 0 else best + 1,
        "n_params": s.get("n_params"), "train_seconds": s.get("train_seconds"), "device": s.get("device"),
        "test_headline": run.test_headline, "mlflow": mlflow_link(run.mlflow),
    }


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222;
       font-size: 16px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.best { background: #e8f5e9; font-weight: 600; }
.note { color: #a15c00; }
.meta { color: #555; }
.grid { display: flex; flex-wrap: wrap; gap: 1.5em; }
figure { margin: 0; }
figure img { width: 100%; max-width: 900px; border: 1px solid #ddd; }
figcaption { color: #555; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _figure(src: str | None, caption: str, alt: str) -> str:
    if src is None:
        return f'<p class="note">{_e(caption)}: no image</p>'
    return (f'<figure><img src="{_e(src)}" alt="{_e(alt)}" loading="eager">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _seconds(value: float | None) -> str:
    return "—" if value is None else (f"{value:.0f} s" if value < 600 else f"{value / 60:.1f} min")


def _scores_table(data: ReportData) -> str:
    head = "".join(f"<th>{_e(metric_label(k))} (%) pooled [95% CI]</th><th>{_e(metric_label(k))} mean ± sd</th>"
                   for k in data.columns)
    rows = []
    for a in data.archs:
        cells = "".join(f'<td data-metric="{_e(k)}">{_e(pooled_text(a, k))}</td>'
                        f'<td data-spread="{_e(k)}">{_e(spread_text(a, k))}</td>' for k in data.columns)
        mark = ' <span title="best">★ best</span>' if a.best else ""
        cls = ' class="best"' if a.best else ""
        rows.append(f'<tr data-arch="{_e(a.architecture)}"{cls}><td>{_e(a.display_name)}{mark}</td>{cells}'
                    f"<td>{a.details['n_runs']} ({_e(_over(a))})</td><td>{_e(a.details.get('selection'))}</td></tr>")
    return (f'<table id="scores"><thead><tr><th>architecture</th>{head}<th>runs</th><th>selection</th></tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table>")


def _runs_table(a: ArchOutputs) -> str:
    rows = []
    for run in a.runs:
        f = run_facts(run)
        link = f["mlflow"]
        link_html = f'<a href="{_e(link[0])}">{_e(link[1])}</a>' if link else "—"
        epochs = "—" if f["epochs_run"] is None else f"{f['epochs_run']}" + (
            f" of {f['epochs_configured']}" if f["epochs_configured"] else "")
        params = f"{f['n_params']:,}" if f["n_params"] else "—"
        rows.append(
            f'<tr data-run="{_e(run.fold)}/seed{_e(run.seed)}"><td>{_e(run.fold)}</td><td>{_e(run.seed)}</td>'
            f"<td>{_e(pct(f['test_headline']))}</td><td>{_e(epochs)}</td><td>{_e(f['selected_epoch'] or '—')}</td>"
            f"<td>{_e(params)}</td><td>{_e(_seconds(f['train_seconds']))}</td>"
            f"<td>{_e(f['device'] or '—')}</td><td class=\"mlflow\">{link_html}</td></tr>")
    return ('<table class="runs"><thead><tr><th>fold</th><th>seed</th>'
            f"<th>test {_e(metric_label(a.headline))} (%)</th><th>epochs run</th><th>selected epoch</th>"
            "<th>parameters</th><th>training time</th><th>device</th><th>MLflow run</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _hyperparameters(a: ArchOutputs) -> str:
    config = a.runs[0].config if a.runs else {}
    diffs = differing_hyperparameters(config)
    if not diffs:
        return "<p>Hyperparameters: the library defaults.</p>"
    items = ", ".join(f"<code>{_e(k)}={_e(v)}</code>" for k, v in diffs.items())
    return f'<p class="hyper">Hyperparameters that differ from the defaults: {items}</p>'


def _tuning(a: ArchOutputs) -> str:
    t = a.tuned
    if not t or not t.get("study"):
        return ""
    trials = t.get("trials") or {}
    counts = ", ".join(f"{n} {state}" for state, n in trials.items())
    best = "—" if t.get("best_value") is None else f"{t['best_value']:.3f}"
    return (f"<p>Tuned by Optuna study <code>{_e(t['study'])}</code> ({_e(counts)}): best validation value "
            f"{_e(best)}.</p>")


def render_html(data: ReportData) -> str:
    first = data.archs[0]
    label = metric_label(first.headline)
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>lungpipe report</title><style>{_CSS}</style></head><body>",
        "<h1>Architecture comparison</h1>",
        (f'<p class="meta">From the pipeline outputs in <code>{_e(data.root)}</code> (metrics/, models/, tuned/; '
         f"the numbers of <code>dvc metrics show</code>); {len(data.archs)} architecture(s); generated "
         f"{_e(data.generated)}.</p>"),
        "<h2>Test metrics</h2>",
        ("<p>Percentages on the test split. <em>Pooled</em>: the metric of all runs' predictions together, with a "
         "95% bootstrap interval that resamples patients and seeds. <em>Mean ± sd</em>: over seeds (over folds for "
         f"cross-validation). ★ marks the best pooled {_e(label)}.</p>"),
        _scores_table(data),
    ]
    notes = [(a.architecture, n) for a in data.archs for n in a.notes]
    if notes:
        parts.append("<ul>" + "".join(f'<li class="note">{_e(a)}: {_e(n)}</li>' for a, n in notes) + "</ul>")
    parts.append('<div class="grid">'
                 + _figure(data.score_bars, f"Test {label} per architecture (pooled, 95% CI)", "score bars")
                 + _figure(data.overlay, f"Validation {label} per epoch, every architecture", "validation curves")
                 + "</div>")
    parts.append("<h2>Per architecture</h2>")
    for a in data.archs:
        parts.append(
            f'<section class="arch" data-arch="{_e(a.architecture)}"><h3>{_e(a.display_name)}</h3>'
            + _hyperparameters(a) + _tuning(a) + _runs_table(a) + '<div class="grid">'
            + _figure(data.confusion.get(a.architecture), "test confusion matrix (runs pooled)",
                      f"{a.architecture} confusion")
            + _figure(data.curves.get(a.architecture), f"train_loss and val_{a.headline} per epoch",
                      f"{a.architecture} curves")
            + "</div></section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def render_markdown(data: ReportData) -> str:
    cols = data.columns
    header = ["architecture", *(f"{metric_label(k)} % pooled [95% CI]" for k in cols),
              *(f"{metric_label(k)} mean ± sd" for k in cols), "runs"]
    lines = ["## Architecture comparison (test split)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for a in data.archs:
        name = f"**{a.display_name}** ★" if a.best else a.display_name
        cells = [name, *(pooled_text(a, k) for k in cols), *(spread_text(a, k) for k in cols),
                 f"{a.details['n_runs']} ({_over(a)})"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    best = [a.architecture for a in data.archs if a.best]
    if best:
        lines.append(f"Best pooled test {metric_label(data.archs[0].headline)}: {', '.join(best)}. Intervals: 95% "
                     "bootstrap over patients and seeds of the pooled predictions.")
    for a in data.archs:
        for note in a.notes:
            lines.append(f"- ⚠ {a.architecture}: {note}")
    lines.append("")
    return "\n".join(lines)


def summary_json(data: ReportData) -> str:
    """Machine-readable numbers of the page (fractions, exactly the metric files' values)."""
    out = {
        "architectures": {
            a.architecture: {
                "display_name": a.display_name, "best": a.best, "headline": a.headline, "metrics": a.metrics,
                "n_runs": a.details["n_runs"],
                "hyperparameters": differing_hyperparameters(a.runs[0].config if a.runs else {}),
                "runs": [{**run_facts(r), "mlflow": (run_facts(r)["mlflow"] or [None])[0]} for r in a.runs],
                "tuned": a.tuned,
            } for a in data.archs
        },
    }
    return json.dumps(out, indent=2, sort_keys=True) + "\n"
