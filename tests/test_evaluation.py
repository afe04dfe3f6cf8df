"""The evaluate stage's library step on hand-made predictions of two seeds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from lungpipe.evaluation import EvaluationConfig, evaluate_architecture
from lungpipe.predictions import write_predictions

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
                                class_names=NAMES, cfg=EvaluationConfig(n_boot=200, seed=0))
    assert res["sp"] == 1.0 and res["se"] == 0.5 and res["score"] == 0.75  # pooled over both seeds
    assert res["score_mean"] == 0.75 and abs(res["score_std"] - np.std([1.0, 0.5], ddof=1)) < 1e-12
    assert res["score_ci_low"] <= res["score"] <= res["score_ci_high"]
    assert json.loads((tmp_path / "m.json").read_text())["n_runs"] == 2
    conf = pd.read_csv(tmp_path / "plots" / "confusion.csv")
    assert len(conf) == 32 and set(conf.label) == set(NAMES)
    assert (tmp_path / "plots" / "confusion.png").stat().st_size > 1000


def test_only_the_configured_folds_and_seeds_are_scored(tmp_path):
    import pytest

    from lungpipe.errors import DataError

    models = tmp_path / "models" / "cnn6"
    _run(models, 0, np.array([0] * 10 + [1, 2, 3, 1, 2, 3]))  # Score 1
    _run(models, 1, np.zeros(16, dtype=int))  # a stale seed from an earlier configuration: Score 0.5
    stale = models / "3" / "seed0"  # a stale fold of another dataset with a different class count
    stale.mkdir(parents=True)
    (stale / "predictions.csv").write_text("not,a,predictions,file\n")
    res = evaluate_architecture("cnn6", models, tmp_path / "m.json", tmp_path / "plots", task="icbhi",
                                class_names=NAMES, cfg=EvaluationConfig(n_boot=50, seed=0),
                                folds=["official"], seeds=[0])
    assert res["score"] == 1.0 and res["n_runs"] == 1
    with pytest.raises(DataError, match=r"official/seed2/predictions.csv"):
        evaluate_architecture("cnn6", models, tmp_path / "m.json", tmp_path / "plots", task="icbhi",
                              class_names=NAMES, cfg=EvaluationConfig(n_boot=50), folds=["official"], seeds=[0, 2])
