"""Metrics on confusion matrices worked out on paper, bootstrap intervals, seed summaries."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from lungpipe.evaluation.metrics import (
    bootstrap_intervals,
    compute_metrics,
    confusion_matrix,
    metrics_from_confusion,
    scalar_metric_keys,
    summarize_seeds,
)


def expand(confusion):
    """labels, preds reproducing a confusion matrix (rows true, columns predicted)."""
    labels, preds = [], []
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            labels += [i] * count
            preds += [j] * count
    return np.array(labels), np.array(preds)


# 100 normal (80 right), 60 abnormal (30 exactly right; 14 called normal; 16 called another
# abnormal class, which counts for the 2-class Se only).
PAPER_CM = [
    [80, 10, 5, 5],   # normal
    [5, 10, 0, 5],    # crackle: 5 → both
    [4, 6, 10, 0],    # wheeze: 6 → crackle
    [5, 0, 5, 10],    # both: 5 → wheeze
]


def test_icbhi_paper_example():
    y, p = expand(PAPER_CM)
    m = compute_metrics(y, p, task="icbhi")
    assert m["confusion"] == PAPER_CM
    assert m["sp"] == pytest.approx(0.8)
    assert m["se"] == pytest.approx(0.5)
    assert m["score"] == pytest.approx(0.65)
    assert m["sp_2class"] == pytest.approx(0.8)
    assert m["se_2class"] == pytest.approx(46 / 60)
    assert m["score_2class"] == pytest.approx((0.8 + 46 / 60) / 2)
    assert m["accuracy"] == pytest.approx(110 / 160)
    assert m["recall_normal"] == pytest.approx(0.8)
    for name in ("crackle", "wheeze", "both"):
        assert m[f"recall_{name}"] == pytest.approx(0.5)
    assert m["precision_normal"] == pytest.approx(80 / 94)
    assert m["precision_crackle"] == pytest.approx(10 / 26)
    assert m["precision_wheeze"] == pytest.approx(10 / 20)
    assert m["precision_both"] == pytest.approx(10 / 20)
    assert m["balanced_accuracy"] == pytest.approx((0.8 + 0.5 * 3) / 4)
    assert m["task"] == "icbhi" and m["class_names"] == ["normal", "crackle", "wheeze", "both"]
    assert m["n_samples"] == 160 and m["num_classes"] == 4
    assert metrics_from_confusion(PAPER_CM, task="icbhi")["score"] == pytest.approx(0.65)


def test_confusion_matrix_orientation():
    cm = confusion_matrix([0, 0, 1], [1, 1, 1], num_classes=2)
    assert cm.tolist() == [[0, 2], [0, 1]]  # rows true, columns predicted


def test_macro_f1_by_hand():
    # class 0: TP 2, FN 1, FP 0 → F1 4/5; class 1: TP 1, FN 1, FP 1 → 2/4; class 2: TP 1, FP 1 → 2/3
    m = compute_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], task="multiclass", num_classes=3)
    assert m["f1_0"] == pytest.approx(0.8)
    assert m["f1_1"] == pytest.approx(0.5)
    assert m["f1_2"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert "sp" not in m and "score" not in m


def test_class_names_become_metric_keys():
    m = compute_metrics([0, 1, 2], [0, 1, 1], task="multiclass",
                        class_names=["Asthma", "COPD", "Healthy / normal"])
    assert m["num_classes"] == 3
    assert m["recall_asthma"] == 1.0 and m["recall_healthy_normal"] == 0.0
    assert m["class_names"] == ["Asthma", "COPD", "Healthy / normal"]


def test_class_absent_from_labels_is_undefined_and_left_out_of_macro_f1():
    # class 2 never true but predicted once; macro-F1 over classes 0 (F1 2/3) and 1 (F1 1)
    m = compute_metrics([0, 0, 1, 1], [0, 2, 1, 1], task="multiclass", num_classes=3)
    assert m["recall_2"] is None
    assert m["precision_2"] == 0.0 and m["f1_2"] == 0.0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    # class 2 neither true nor predicted: everything about it is undefined
    m = compute_metrics([0, 1, 0, 1], [0, 1, 1, 1], task="multiclass", num_classes=3)
    assert m["recall_2"] is None and m["precision_2"] is None and m["f1_2"] is None
    json.dumps(m, allow_nan=False)  # valid JSON: None, never NaN


def test_icbhi_without_normal_cycles_has_no_sp_or_score():
    m = compute_metrics([1, 2, 3], [1, 2, 0], task="icbhi", n_resamples=50, patients=[1, 2, 3])
    assert m["sp"] is None and m["score"] is None
    assert m["se"] == pytest.approx(2 / 3)
    assert m["sp_ci_low"] is None and m["score_ci_high"] is None
    json.dumps(m, allow_nan=False)


@pytest.mark.parametrize(
    ("labels", "preds", "kwargs", "message"),
    [
        ([], [], {}, "empty"),
        ([0, 1], [0], {}, "differ in length"),
        ([0, 7, 1], [0, 1, 1], {}, "labels outside 0..3: values [7]"),
        ([0, 1, 1], [0, -1, 5], {}, "preds outside 0..3: values [-1, 5]"),
        ([0, 1.5], [0, 1], {}, "non-integer"),
        ([0, 1], [0, 1], {"num_classes": 3}, "4 classes"),
        ([0, 1], [0, 1], {"class_names": ["a", "b", "c"]}, "4 classes"),
        ([0, 1], [0, 1], {"task": "multiclass"}, "needs num_classes"),
        ([0, 1], [0, 1], {"task": "multiclass", "class_names": ["a", "A"]}, "duplicates"),
        ([0, 1], [0, 1], {"task": "binary"}, "unknown task"),
    ],
)
def test_bad_inputs_raise_clear_errors(labels, preds, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        compute_metrics(labels, preds, **kwargs)


# --------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------
def random_cohort(n_patients=30, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 40, n_patients)
    patients = np.repeat(np.arange(n_patients), sizes)
    skill = rng.uniform(0.3, 0.9, n_patients)[patients]  # patients differ in difficulty
    labels = rng.integers(0, 4, patients.size)
    wrong = rng.integers(0, 4, patients.size)
    preds = np.where(rng.random(patients.size) < skill, labels, wrong)
    return labels, preds, patients


def test_interval_contains_point_estimate():
    y, p, pat = random_cohort()
    m = compute_metrics(y, p, patients=pat, n_resamples=500, seed=1)
    for key in ("sp", "se", "score", "accuracy", "macro_f1", "se_2class", "recall_both"):
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
        assert m[f"{key}_ci_low"] < m[f"{key}_ci_high"], key
    assert m["n_patients"] == 30 and m["n_resamples"] == 500 and m["ci_level"] == 0.95


def test_interval_collapses_when_every_patient_is_identical():
    one = ([0, 0, 0, 1, 2, 3, 3], [0, 0, 1, 1, 3, 3, 0])  # the same 7 cycles for each patient
    y = np.tile(one[0], 12)
    p = np.tile(one[1], 12)
    pat = np.repeat(np.arange(12), 7)
    m = compute_metrics(y, p, patients=pat, n_resamples=200, seed=3)
    for key in scalar_metric_keys(m):
        if m[key] is not None:
            assert m[f"{key}_ci_low"] == pytest.approx(m[key]), key
            assert m[f"{key}_ci_high"] == pytest.approx(m[key]), key


def test_interval_is_deterministic_under_a_seed():
    y, p, pat = random_cohort()
    a = bootstrap_intervals(y, p, pat, n_resamples=300, seed=7)
    b = bootstrap_intervals(y, p, pat, n_resamples=300, seed=7)
    c = bootstrap_intervals(y, p, pat, n_resamples=300, seed=8)
    assert a == b
    assert a != c


def test_resampling_patients_widens_interval_for_clustered_errors():
    # 20 patients with 10 cycles each: patients 0..9 entirely right, 10..19 entirely wrong.
    pat = np.repeat(np.arange(20), 10)
    y = np.zeros(200, dtype=int)
    p = np.where(pat < 10, 0, 1)
    by_patient = bootstrap_intervals(y, p, pat, task="multiclass", num_classes=2, n_resamples=2000)
    by_cycle = bootstrap_intervals(y, p, None, task="multiclass", num_classes=2, n_resamples=2000)
    width_patient = by_patient["accuracy_ci_high"] - by_patient["accuracy_ci_low"]
    width_cycle = by_cycle["accuracy_ci_high"] - by_cycle["accuracy_ci_low"]
    # binomial spread over 20 patients vs over 200 cycles: widths differ by about sqrt(10)
    assert width_patient > 2.0 * width_cycle
    assert width_patient == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 20), rel=0.2)
    assert width_cycle == pytest.approx(2 * 1.96 * np.sqrt(0.25 / 200), rel=0.2)


def test_vectorised_bootstrap_matches_pooling_drawn_patients():
    """Recompute each resample by literally pooling the drawn patients' cycles."""
    y, p, pat = random_cohort(n_patients=8, seed=4)
    n_resamples, seed, level = 40, 11, 0.9
    got = bootstrap_intervals(y, p, pat, n_resamples=n_resamples, seed=seed, ci_level=level)
    # same draws as the library: counts of each patient per resample from one multinomial call
    counts = np.random.default_rng(seed).multinomial(8, np.full(8, 1 / 8), size=n_resamples)
    scores = []
    for row in counts:
        idx = np.concatenate([np.repeat(np.flatnonzero(pat == k), c) for k, c in enumerate(row)])
        scores.append(metrics_from_confusion(confusion_matrix(y[idx], p[idx], 4))["score"])
    assert got["score_ci_low"] == pytest.approx(np.percentile(scores, 5))
    assert got["score_ci_high"] == pytest.approx(np.percentile(scores, 95))


def test_narrower_level_gives_narrower_interval():
    y, p, pat = random_cohort()
    wide = bootstrap_intervals(y, p, pat, n_resamples=400, ci_level=0.95)
    narrow = bootstrap_intervals(y, p, pat, n_resamples=400, ci_level=0.5)
    assert narrow["score_ci_high"] - narrow["score_ci_low"] < wide["score_ci_high"] - wide["score_ci_low"]


def test_metric_defined_in_some_resamples_only():
    # class 3 ("both") occurs in one patient only: its recall is undefined when that patient is
    # not drawn, and its interval comes from the resamples that drew it.
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    p = np.array([0, 1, 1, 1, 2, 0, 3, 0])
    pat = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    ci = bootstrap_intervals(y, p, pat, n_resamples=300, seed=0)
    assert ci["recall_both_ci_low"] == pytest.approx(0.5) and ci["recall_both_ci_high"] == pytest.approx(0.5)


def test_bootstrap_rejects_bad_patients_and_settings():
    with pytest.raises(ValueError, match="one patient per cycle"):
        bootstrap_intervals([0, 1, 2], [0, 1, 2], [1, 2], n_resamples=10)
    with pytest.raises(ValueError, match="ci_level"):
        bootstrap_intervals([0, 1], [0, 1], [1, 2], n_resamples=10, ci_level=95)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_intervals([0, 1], [0, 1], [1, 2], n_resamples=0)


# --------------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------------
def test_summarize_seeds_mean_and_sample_std():
    runs = [
        {"score": 0.60, "sp": 0.8, "se": None, "score_ci_low": 0.5, "score_ci_high": 0.7,
         "confusion": [[1]], "task": "icbhi", "n_samples": 10},
        {"score": 0.62, "sp": 0.7, "se": 0.4, "score_ci_low": 0.5, "score_ci_high": 0.7,
         "confusion": [[1]], "task": "icbhi", "n_samples": 10},
        {"score": 0.64, "sp": 0.9, "se": None, "score_ci_low": 0.5, "score_ci_high": 0.7,
         "confusion": [[1]], "task": "icbhi", "n_samples": 10},
    ]
    s = summarize_seeds(runs)
    assert s["score_mean"] == pytest.approx(0.62)
    assert s["score_std"] == pytest.approx(0.02)  # sqrt((0.02² + 0 + 0.02²) / 2)
    assert s["sp_std"] == pytest.approx(0.1)
    assert s["se_mean"] == pytest.approx(0.4) and s["se_std"] is None  # one defined value
    assert s["n_seeds"] == 3
    assert set(s) == {"score_mean", "score_std", "sp_mean", "sp_std", "se_mean", "se_std", "n_seeds"}


def test_summarize_one_seed_and_real_metric_dicts():
    y, p, pat = random_cohort()
    one = compute_metrics(y, p, patients=pat, n_resamples=20)
    s = summarize_seeds([one])
    assert s["score_mean"] == pytest.approx(one["score"]) and s["score_std"] is None
    assert "n_samples_mean" not in s and "score_ci_low_mean" not in s
    json.dumps(s, allow_nan=False)


def test_summarize_seeds_rejects_mismatched_runs():
    with pytest.raises(ValueError, match="missing"):
        summarize_seeds([{"score": 0.5, "sp": 0.4}, {"score": 0.6}])
    with pytest.raises(ValueError, match="at least one"):
        summarize_seeds([])


def test_resolve_metric_auto_and_task_checks():
    from lungpipe.evaluation.metrics import resolve_metric
    from lungpipe.util.typed_config import ConfigError

    assert resolve_metric("auto", "icbhi") == "score"
    assert resolve_metric("auto", "multiclass") == "macro_f1"
    assert resolve_metric("accuracy", "multiclass") == "accuracy"
    assert resolve_metric("se", "icbhi") == "se"
    with pytest.raises(ConfigError, match="tuning.metric: 'score' is an ICBHI cycle metric"):
        resolve_metric("score", "multiclass", "tuning.metric")
    with pytest.raises(ConfigError, match="unknown metric task"):
        resolve_metric("auto", "regression")
