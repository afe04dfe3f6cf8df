"""The evaluate stage's library step on hand-made predictions of two seeds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from lungpipe.evaluation.predictions import write_predictions
from lungpipe.evaluation.scoring import EvaluationConfig, evaluate_architecture, headline_keys

NAMES = ["normal", "crackle", "wheeze", "both"]


def _run(models, seed, preds):
    labels = np.array([0] * 10 + [1, 2, 3, 1, 2, 3])
    probs = np.full((16, 4), 0.1)
    probs[np.arange(16), preds] = 0.7
    out = models / "official" / f"seed{seed}"
    write_predictions(out / "predictions.csv", [f"r{i // 4}" for i in range(16)], np.arange(16),
                      np.arange(16) // 4, labels, probs)
    (out / "history.json").write_text(json.dumps([{"epoch": 0, "train_loss": 1.0, "val_score": 0.5}]))


def test_pooled_metrics_intervals_and_seed_spread(tmp_path):
    models = tmp_path / "models" / "cnn6"
    # seed 0: every cycle right (Score 1); seed 1: all predicted normal (Sp 1, Se 0, Score 0.5)
    _run(models, 0, np.array([0] * 10 + [1, 2, 3, 1, 2, 3]))
    _run(models, 1, np.zeros(16, dtype=int))
    res = evaluate_architecture("cnn6", models, tmp_path / "m.json", tmp_path / "plots", task="icbhi",
                                class_names=NAMES, cfg=EvaluationConfig(n_boot=400, seed=0))
    m = json.loads((tmp_path / "m.json").read_text())
    assert m == res["metrics"] and sorted(m) == sorted(headline_keys("icbhi"))
    assert all(v is None or isinstance(v, float) for v in m.values())  # flat numbers, no strings
    assert m["sp"] == 1.0 and m["se"] == 0.5 and m["score"] == 0.75  # pooled over both seeds
    assert m["score_mean"] == 0.75 and abs(m["score_sd"] - round(np.std([1.0, 0.5], ddof=1), 6)) < 1e-12
    # the seeds disagree completely: resampling the seeds (not only patients) spans both of them
    assert m["score_lo"] == 0.5 and m["score_hi"] == 1.0
    assert res["pooled"]["score"] == {"value": 0.75, "ci_low": 0.5, "ci_high": 1.0}
    assert res["n_runs"] == 2 and res["per_run"]["official/seed0"]["score"] == 1.0
    details = json.loads((tmp_path / "details" / "cnn6.json").read_text())
    assert details["confusion"] == [[20, 0, 0, 0], [2, 2, 0, 0], [2, 0, 2, 0], [2, 0, 0, 2]]
    conf = pd.read_csv(tmp_path / "plots" / "confusion.csv")
    assert len(conf) == 32 and set(conf.label) == set(NAMES)
    assert (tmp_path / "plots" / "confusion.png").stat().st_size > 1000


def test_curves_are_the_mean_over_runs_per_epoch(tmp_path):
    models = tmp_path / "models" / "cnn6"
    _run(models, 0, np.zeros(16, dtype=int))
    _run(models, 1, np.zeros(16, dtype=int))
    (models / "official" / "seed1" / "history.json").write_text(json.dumps(
        [{"epoch": 0, "train_loss": 3.0, "val_score": 0.7}, {"epoch": 1, "train_loss": 2.0, "val_score": 0.9}]))
    evaluate_architecture("cnn6", models, tmp_path / "m.json", tmp_path / "plots", task="icbhi",
                          class_names=NAMES, cfg=EvaluationConfig(n_boot=10))
    curves = pd.read_csv(tmp_path / "plots" / "curves.csv")
    assert curves["val_score"].tolist() == [0.6, 0.9] and curves["n_runs"].tolist() == [2, 1]
    assert curves["train_loss"].tolist() == [2.0, 2.0]


def test_cross_validation_spread_is_over_folds(tmp_path):
    models = tmp_path / "models" / "cnn6"
    right, normal = np.array([0] * 10 + [1, 2, 3, 1, 2, 3]), np.zeros(16, dtype=int)
    for fold, seed, preds in (("1", 0, right), ("1", 1, normal), ("2", 0, normal), ("2", 1, normal)):
        _run(models.parent / "x", seed, preds)
        (models / fold).mkdir(parents=True, exist_ok=True)
        (models.parent / "x" / "official" / f"seed{seed}").rename(models / fold / f"seed{seed}")
    res = evaluate_architecture("cnn6", models, tmp_path / "m.json", tmp_path / "plots", task="icbhi",
                                class_names=NAMES, cfg=EvaluationConfig(n_boot=20), folds=["1", "2"], seeds=[0, 1])
    # fold 1: mean of seeds (1.0, 0.5) = 0.75; fold 2: 0.5 → mean 0.625, sd over the two folds
    assert res["metrics"]["score_mean"] == 0.625
    assert res["metrics"]["score_sd"] == round(float(np.std([0.75, 0.5], ddof=1)), 6)
    assert res["folds"]["folds"]["1"]["score"] == 0.75


def test_dvc_metrics_show_rows_fit_200_columns(tmp_path):
    """Six architectures with the longest names of the default profile, 3 seeds each."""
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True)
    rng = np.random.default_rng(0)
    for arch in ("cnn6", "resnet50", "ast", "add4rsc_ast", "add4rsc_resnet50", "mrinet"):
        models = tmp_path / "models" / arch
        for seed in range(3):
            _run(models, seed, rng.integers(0, 4, 16))
        evaluate_architecture(arch, models, repo / "metrics" / f"{arch}.json", tmp_path / "plots" / arch,
                              task="icbhi", class_names=NAMES, cfg=EvaluationConfig(n_boot=50))
    files = sorted(str(p.relative_to(repo)) for p in (repo / "metrics").glob("*.json"))
    shown = subprocess.run(["dvc", "metrics", "show", *files], cwd=repo, check=True, capture_output=True, text=True)
    rows = [line for line in shown.stdout.splitlines() if line.strip()]
    assert len(rows) == 7 and "score_mean" in rows[0], shown.stdout
    assert max(len(line) for line in rows) <= 200, shown.stdout


def test_only_the_configured_folds_and_seeds_are_scored(tmp_path):
    import pytest

    from lungpipe.util.errors import DataError

    models = tmp_path / "models" / "cnn6"
    _run(models, 0, np.array([0] * 10 + [1, 2, 3, 1, 2, 3]))  # Score 1
    _run(models, 1, np.zeros(16, dtype=int))  # a stale seed from an earlier configuration: Score 0.5
    stale = models / "3" / "seed0"  # a stale fold of another dataset with a different class count
    stale.mkdir(parents=True)
    (stale / "predictions.csv").write_text("not,a,predictions,file\n")
    res = evaluate_architecture("cnn6", models, tmp_path / "m.json", tmp_path / "plots", task="icbhi",
                                class_names=NAMES, cfg=EvaluationConfig(n_boot=50, seed=0),
                                folds=["official"], seeds=[0])
    assert res["metrics"]["score"] == 1.0 and res["n_runs"] == 1
    with pytest.raises(DataError, match=r"official/seed2/predictions.csv"):
        evaluate_architecture("cnn6", models, tmp_path / "m.json", tmp_path / "plots", task="icbhi",
                              class_names=NAMES, cfg=EvaluationConfig(n_boot=50), folds=["official"], seeds=[0, 2])
