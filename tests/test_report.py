"""`lungpipe report`: built from the pipeline's own outputs (metrics/, models/, tuned/), its
numbers those of the metric files, with MLflow links per run, and the page checked in headless
Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lungpipe.evaluation.predictions import write_predictions
from lungpipe.evaluation.scoring import EvaluationConfig, evaluate_architecture
from lungpipe.report import NoResultsError, build_report
from lungpipe.report.render import pooled_text, spread_text
from lungpipe.report.runinfo import mlflow_link, redact_uri
from lungpipe.training.config import TrainConfig
from lungpipe.util.typed_config import to_dict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["normal", "crackle", "wheeze", "both"]
LABELS = np.array([0] * 10 + [1, 2, 3, 1, 2, 3])


def make_run(root: Path, arch: str, seed: int, preds, *, lr: float = 0.001, mlflow: bool = True,
             val=(0.5, 0.6, 0.7)) -> Path:
    """One run folder as the train stage writes it, from real predictions."""
    run = root / "models" / arch / "official" / f"seed{seed}"
    probs = np.full((16, 4), 0.1)
    probs[np.arange(16), preds] = 0.7
    write_predictions(run / "predictions.csv", [f"r{i // 4}" for i in range(16)], np.arange(16),
                      np.arange(16) // 4, LABELS, probs)
    train = to_dict(TrainConfig(epochs=3, lr=lr, seed=seed))
    (run / "config.json").write_text(json.dumps({"arch": arch, "display_name": f"{arch} (small preset: test)",
                                                 "train": train, "tuned": {}, "model": {}}))
    (run / "history.json").write_text(json.dumps(
        [{"epoch": i, "train_loss": 1.0 - 0.2 * i, "val_score": v, "seconds": 2.0} for i, v in enumerate(val)]))
    (run / "run_summary.json").write_text(json.dumps({
        "display_name": f"{arch} (small preset: test)", "n_params": 12345, "device": "cpu", "train_seconds": 6.0,
        "epochs_run": 3, "epochs_configured": 3, "best_epoch": 2, "stopped_early": False}))
    if mlflow:
        (run / "mlflow_run.json").write_text(json.dumps({
            "run_id": f"abc{seed}", "experiment_id": "7", "tracking_uri": "http://mlflow.example:5000",
            "run_name": f"{arch}-official-seed{seed}"}))
    return run


def make_outputs(root: Path) -> Path:
    """Two architectures, two seeds each, scored by the real evaluate step."""
    right = LABELS.copy()
    normal = np.zeros(16, dtype=int)
    make_run(root, "cnn6", 0, right, lr=0.002)
    make_run(root, "cnn6", 1, normal, lr=0.002, mlflow=False)
    make_run(root, "ast", 0, normal, val=(0.4, 0.45, 0.5))
    make_run(root, "ast", 1, normal, val=(0.4, 0.5, 0.5))
    for arch in ("cnn6", "ast"):
        evaluate_architecture(arch, root / "models" / arch, root / "metrics" / f"{arch}.json", root / "plots" / arch,
                              task="icbhi", class_names=NAMES, cfg=EvaluationConfig(n_boot=100),
                              folds=["official"], seeds=[0, 1])
    (root / "tuned").mkdir()
    (root / "tuned" / "cnn6.yaml").write_text("study: lungpipe-synth-cnn6-abc\nbest_value: 0.8\n"
                                              "best_params: {lr: 0.002}\ntrials: {complete: 2, pruned: 0}\n")
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = make_outputs(tmp_path_factory.mktemp("repo"))
    out = root / "report"
    data = build_report(out, root=root, overlay_csv=root / "plots" / "validation_curves.csv")
    return out, data, json.loads((out / "summary.json").read_text()), root


class _Page(HTMLParser):
    """Rows of the #scores table, cells with data-metric/data-spread, links and every <img>."""

    def __init__(self):
        super().__init__()
        self.rows, self.images, self._in_scores, self.body = [], [], False, {}
        self.cells, self.links, self._cell, self._arch = {}, [], None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._in_scores = attrs.get("id") == "scores"
        elif tag == "tr" and self._in_scores and "data-arch" in attrs:
            self.rows.append(attrs)
            self._arch = attrs["data-arch"]
        elif tag == "td" and self._in_scores and ("data-metric" in attrs or "data-spread" in attrs):
            kind = "pooled" if "data-metric" in attrs else "spread"
            self._cell = (self._arch, kind, attrs.get("data-metric") or attrs.get("data-spread"))
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "a":
            self.links.append(attrs.get("href"))
        elif tag == "body":
            self.body = attrs

    def handle_data(self, data):
        if self._cell is not None:
            self.cells[self._cell] = data
            self._cell = None

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_scores = False


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def test_report_numbers_are_the_metric_files(report):
    out, data, summary, root = report
    for arch in ("cnn6", "ast"):
        metrics = json.loads((root / "metrics" / f"{arch}.json").read_text())
        assert summary["architectures"][arch]["metrics"] == metrics
    page = _parse((out / "index.html").read_text())
    assert [r["data-arch"] for r in page.rows] == ["cnn6", "ast"]  # best pooled Score first
    cnn6 = json.loads((root / "metrics" / "cnn6.json").read_text())
    # cnn6: seed 0 Score 1, seed 1 Score 0.5 → pooled 0.75 with an interval spanning both seeds
    assert page.cells[("cnn6", "pooled", "score")] == "75.0 [50.0, 100.0]" == pooled_text(data.archs[0], "score")
    assert page.cells[("cnn6", "spread", "score")] == f"75.0 ± {100 * cnn6['score_sd']:.1f}"
    assert spread_text(data.archs[1], "score") == "50.0 ± 0.0"
    assert data.archs[0].best and not data.archs[1].best
    md = (out / "summary.md").read_text()
    assert "**cnn6 (small preset: test)** ★ | 100.0 [100.0, 100.0] | 50.0 [" in md


def test_per_architecture_facts_and_mlflow_links(report):
    out, _data, summary, _root = report
    cnn6 = summary["architectures"]["cnn6"]
    assert cnn6["hyperparameters"] == {"epochs": 3, "lr": 0.002}  # seed and the rest are the defaults
    runs = {r["seed"]: r for r in cnn6["runs"]}
    assert runs["0"]["mlflow"] == "http://mlflow.example:5000/#/experiments/7/runs/abc0"
    assert runs["1"]["mlflow"] is None  # no mlflow_run.json: no link
    assert runs["0"]["epochs_run"] == 3 and runs["0"]["selected_epoch"] == 3 and runs["0"]["n_params"] == 12345
    assert runs["0"]["test_headline"] == 1.0 and runs["1"]["test_headline"] == 0.5
    html = (out / "index.html").read_text()
    page = _parse(html)
    assert "http://mlflow.example:5000/#/experiments/7/runs/abc0" in page.links
    assert "cnn6 (small preset: test)" in html and "12,345" in html and "lungpipe-synth-cnn6-abc" in html
    assert "<code>lr=0.002</code>" in html


def test_overlay_of_every_architectures_validation_curve(report):
    out, _data, _summary, root = report
    import pandas as pd

    table = pd.read_csv(root / "plots" / "validation_curves.csv")
    assert list(table.columns) == ["architecture", "epoch", "value", "n_runs"]
    ast = table[table.architecture == "ast (small preset: test)"]
    assert ast["epoch"].tolist() == [1, 2, 3] and ast["value"].tolist() == [0.4, 0.475, 0.5]
    assert set(table.architecture) == {"cnn6 (small preset: test)", "ast (small preset: test)"}
    for name in ("validation_curves.png", "curves-cnn6.png", "confusion-ast.png", "score_bars.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name


def test_overlay_figure_names_architectures_in_one_panel(tmp_path, monkeypatch):
    """Display names run to ~170 characters and may contain "loss" (loss_beta=…): the overlay
    labels its curves by architecture, all on the validation-metric panel, and lays out cleanly
    (no "constrained_layout not applied" warning)."""
    import warnings

    from lungpipe.report import figures
    from lungpipe.report.outputs import ArchOutputs, RunOutputs

    long = "(small preset: AFF + 1 DDL (d 64, 4 heads) on every input frame, then ResNet 1-1-1-1 width 16 " \
           "(lungpipe's CPU size); loss_beta=0.1, bias_loss=label_smoothing)"
    history = [{"epoch": i, "train_loss": 1.0, "val_score": 0.5 + 0.1 * i} for i in range(3)]
    archs = [ArchOutputs(name, {}, {"display_name": f"{name} {long}", "headline": "score", "task": "icbhi"},
                         [RunOutputs("official", "0", tmp_path, {}, history, {}, None)])
             for name in ("cnn6", "resnet50", "ast", "add4rsc_ast", "add4rsc_resnet50", "mrinet")]
    drawn = {}
    real = figures.plot_curves

    def spy(series, path, title=None, **kw):
        drawn.update(series=list(series), **kw)
        return real(series, path, title, **kw)

    monkeypatch.setattr(figures, "plot_curves", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert figures.overlay_figure(archs, tmp_path / "overlay.png").read_bytes()[:8] == PNG_MAGIC
    assert drawn == {"series": [a.architecture for a in archs], "split_losses": False, "ylabel": "validation Score"}
    assert set(figures.overlay_table(archs).architecture) == {a.display_name for a in archs}  # the DVC plot's names


def test_the_report_code_imports_neither_torch_nor_mlflow():
    """The report reads files; TrainConfig's defaults come from torch-free modules (~2.5 s of torch
    and ~2 s of MLflow the report stage does not pay)."""
    import sys

    code = ("import sys; import lungpipe.report, lungpipe.training.config; "
            "print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_links_never_publish_credentials():
    url, label = mlflow_link({"run_id": "r1", "experiment_id": "3", "run_name": "x",
                              "tracking_uri": "https://me:secret@mlflow.example"})
    assert "secret" not in url and url == "https://me@mlflow.example/#/experiments/3/runs/r1" and label == "x"
    local = mlflow_link({"run_id": "r1", "experiment_id": "3", "tracking_uri": "sqlite:////repo/mlflow.db"})
    assert local[0] == "http://127.0.0.1:5000/#/experiments/3/runs/r1"
    assert mlflow_link(None) is None
    assert redact_uri("postgresql://me:secret@db:5432/mlflow") == "postgresql://me:***@db:5432/mlflow"


def test_nothing_to_report_is_a_clear_error_and_keeps_the_old_report(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "index.html").write_text("old")
    with pytest.raises(NoResultsError, match="run the pipeline first"):
        build_report(out, root=tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "cnn6.json").write_text("{}")
    with pytest.raises(NoResultsError, match=r"details/cnn6.json is missing.*dvc repro evaluate@cnn6"):
        build_report(out, root=tmp_path)
    assert (out / "index.html").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics", "report"]


def test_rebuild_replaces_the_folder_and_a_failed_build_changes_nothing(tmp_path, monkeypatch):
    root = make_outputs(tmp_path / "repo")
    out = root / "report"
    out.mkdir()
    (out / "stale.png").write_bytes(b"x")
    build_report(out, root=root)
    assert not (out / "stale.png").exists() and (out / "index.html").is_file()
    before = sorted(p.name for p in out.iterdir())

    from lungpipe.report import figures

    def broken(*args):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(figures, "curves_figure", broken)  # fails after the first pictures are written
    with pytest.raises(RuntimeError, match="drawing failed"):
        build_report(out, root=root)
    assert sorted(p.name for p in out.iterdir()) == before
    assert not [p for p in root.iterdir() if p.name.startswith(".report")]


def test_cli(report, tmp_path):
    from lungpipe.cli import app

    _out, _data, _summary, root = report
    out = tmp_path / "r"
    ok = CliRunner().invoke(app, ["report", "--out", str(out), "--root", str(root)], env={"COLUMNS": "200"})
    assert ok.exit_code == 0, ok.output
    assert "cnn6 (small preset: test) ★" in ok.output and "75.0 [50.0, 100.0]" in ok.output
    none = CliRunner().invoke(app, ["report", "--out", str(out), "--root", str(tmp_path / "empty")])
    assert none.exit_code == 1 and "nothing to report" in none.output


# ------------------------------------------------------------------------------- browser check
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
# Written into a copy of the page: after load, every <img> reports what the browser decoded.
IMAGE_PROBE = ("<script>window.addEventListener('load', function () { for (const img of document.images) {"
               "img.setAttribute('data-natural-width', String(img.naturalWidth)); } "
               "document.body.setAttribute('data-probed', String(document.images.length)); });</script>")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")


def _browse(page: Path, tmp: Path, *extra: str) -> str:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _probed_copy(report_dir: Path, dst: Path) -> Path:
    shutil.copytree(report_dir, dst)
    page = dst / "index.html"
    page.write_text(page.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    return page


@pytest.mark.browser
def test_page_renders_in_headless_chromium(report, tmp_path):
    out, data, _, _ = report
    page = _probed_copy(out, tmp_path / "site")
    dom = _parse(_browse(page, tmp_path, "--virtual-time-budget=10000", "--dump-dom"))
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert dom.body.get("data-probed") == str(len(dom.images)) and len(pngs) >= 4
    assert sorted(img["src"] for img in dom.images) == pngs  # every figure of the report is on the page
    assert [r["data-arch"] for r in dom.rows] == [a.architecture for a in data.archs]
    broken = [img["src"] for img in dom.images if int(img.get("data-natural-width", 0)) == 0]
    assert broken == []
    shot = tmp_path / "report.png"
    _browse(out / "index.html", tmp_path, "--window-size=1280,2400", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == PNG_MAGIC

    # the probe does see a picture that does not decode
    (tmp_path / "site" / "score_bars.png").write_bytes(b"not a png")
    dom = _parse(_browse(page, tmp_path, "--virtual-time-budget=10000", "--dump-dom"))
    assert [img["src"] for img in dom.images if int(img.get("data-natural-width", 0)) == 0] == ["score_bars.png"]
