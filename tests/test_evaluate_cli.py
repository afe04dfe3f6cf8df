"""`lungpipe evaluate` through typer's CliRunner on predictions with a known confusion matrix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from lungpipe.cli.evaluate import evaluate
from lungpipe.evaluation.predictions import write_predictions

# Same matrix as in test_metrics: Sp 0.8, Se 0.5, Score 0.65, 2-class Se 46/60.
PAPER_CM = [
    [80, 10, 5, 5],
    [5, 10, 0, 5],
    [4, 6, 10, 0],
    [5, 0, 5, 10],
]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command()(evaluate)
    return app


def write_from_confusion(path, confusion, n_patients=16, labelled=True):
    """A predictions CSV whose (label, pred) pairs reproduce ``confusion``; confident one-hot-ish
    probabilities whose argmax is the prediction; cycles spread over ``n_patients`` patients."""
    labels, preds = [], []
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            labels += [i] * count
            preds += [j] * count
    n, k = len(labels), len(confusion)
    probs = np.full((n, k), 0.1 / (k - 1))
    probs[np.arange(n), preds] = 0.9
    patients = [str(100 + i % n_patients) for i in range(n)]
    recordings = [f"rec{i % n_patients}_{i // 40}" for i in range(n)]
    cycles = list(range(n))
    return write_predictions(path, recordings, cycles, patients, labels if labelled else None, probs)


def test_evaluate_icbhi_writes_json_and_png(tmp_path, runner, app):
    csv = write_from_confusion(tmp_path / "preds.csv", PAPER_CM)
    out, png = tmp_path / "out" / "metrics.json", tmp_path / "cm.png"
    result = runner.invoke(app, [str(csv), "--out", str(out), "--n-boot", "200", "--seed", "3",
                                 "--confusion-png", str(png)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["sp"] == pytest.approx(0.8)
    assert metrics["se"] == pytest.approx(0.5)
    assert metrics["score"] == pytest.approx(0.65)
    assert metrics["se_2class"] == pytest.approx(46 / 60)
    assert metrics["accuracy"] == pytest.approx(110 / 160)
    assert metrics["recall_crackle"] == pytest.approx(0.5)
    assert metrics["confusion"] == PAPER_CM
    for key in ("sp", "se", "score", "accuracy", "macro_f1", "recall_normal", "recall_crackle",
                "recall_wheeze", "recall_both"):
        assert 0.0 <= metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"] <= 1.0, key
    assert metrics["n_patients"] == 16 and metrics["n_resamples"] == 200 and metrics["seed"] == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Score" in result.output and "65.00" in result.output  # table shows percentages

    # the same seed gives the same intervals
    again = tmp_path / "again.json"
    runner.invoke(app, [str(csv), "--out", str(again), "--n-boot", "200", "--seed", "3"])
    assert json.loads(again.read_text()) == metrics


def test_evaluate_multiclass_with_class_names(tmp_path, runner, app):
    cm = [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    csv = write_from_confusion(tmp_path / "dx.csv", cm, n_patients=3)
    out = tmp_path / "m.json"
    result = runner.invoke(app, [str(csv), "--task", "multiclass", "--class-names", "asthma, copd, healthy",
                                 "--out", str(out), "--n-boot", "0"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["recall_asthma"] == pytest.approx(0.75)
    assert metrics["precision_copd"] == pytest.approx(2 / 3)
    # F1 = 2·TP / (row + column): asthma 6/8, copd 4/5, healthy 2/3
    assert metrics["macro_f1"] == pytest.approx((6 / 8 + 4 / 5 + 2 / 3) / 3)
    assert "sp" not in metrics and "accuracy_ci_low" not in metrics
    assert metrics["class_names"] == ["asthma", "copd", "healthy"]


def test_icbhi_task_on_three_classes_fails_clearly(tmp_path, runner, app):
    csv = write_from_confusion(tmp_path / "dx.csv", [[2, 1, 0], [0, 2, 0], [1, 0, 1]], n_patients=3)
    result = runner.invoke(app, [str(csv), "--n-boot", "0"])
    assert result.exit_code == 1
    assert "multiclass" in result.output and "dx.csv" in result.output


def test_unlabelled_predictions_cannot_be_evaluated(tmp_path, runner, app):
    csv = write_from_confusion(tmp_path / "new.csv", PAPER_CM, labelled=False)
    result = runner.invoke(app, [str(csv)])
    assert result.exit_code == 1
    assert "160 of 160 rows have no label" in result.output


def test_bad_file_reports_line(tmp_path, runner, app):
    csv = tmp_path / "bad.csv"
    csv.write_text("recording,cycle,patient,label,pred,prob_0,prob_1,prob_2,prob_3\n"
                   "r,0,1,0,0,0.7,0.1,0.1,0.1\nr,1,1,0,0,0.7,0.7,0.1,0.1\n")
    out = tmp_path / "m.json"
    result = runner.invoke(app, [str(csv), "--out", str(out)])
    assert result.exit_code == 1
    assert "line 3" in result.output and not out.exists()


def test_mounted_on_the_main_cli(tmp_path, runner):
    from lungpipe.cli import app as main_app

    csv = write_from_confusion(tmp_path / "preds.csv", PAPER_CM)
    out = tmp_path / "metrics.json"
    result = runner.invoke(main_app, ["evaluate", str(csv), "--out", str(out), "--n-boot", "50"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["score"] == pytest.approx(0.65)
