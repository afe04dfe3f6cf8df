"""Classification metrics for lung-sound tasks, with patient-level bootstrap intervals.

Every metric here is a function of the confusion matrix (rows = true class, columns = predicted
class), so the point estimate and each bootstrap resample are computed by the same vectorised
code on a batch of confusion matrices.

Tasks
-----
``icbhi`` (4 classes: 0 normal, 1 crackle, 2 wheeze, 3 both; the ICBHI 2017 challenge metric)
    ``sp``    specificity: normal cycles predicted normal / all normal cycles.
    ``se``    sensitivity: abnormal cycles (1, 2, 3) predicted as exactly their own class /
              all abnormal cycles.  A crackle predicted as "both" does not count.
    ``score`` (sp + se) / 2.
    ``sp_2class``, ``se_2class``, ``score_2class``: normal vs any abnormal; an abnormal cycle
              counts for ``se_2class`` whatever abnormal class was predicted (``sp_2class``
              always equals ``sp``; it is kept so the 2-class triple is complete).
    plus everything of the ``multiclass`` task.
``multiclass`` (any number of classes: diagnosis datasets, ESC-50)
    ``accuracy``, ``balanced_accuracy`` (mean recall), ``macro_f1``, and per class
    ``recall_<name>``, ``precision_<name>``, ``f1_<name>``.

Undefined values (documented choices)
-------------------------------------
* A ratio whose denominator is zero is undefined and reported as ``None`` (never NaN, so the
  result is valid JSON): ``recall_<c>`` when class c has no true cycles, ``precision_<c>`` when
  c is never predicted, ``sp`` without normal cycles, ``se`` without abnormal cycles, and
  ``score`` when either half is undefined.
* ``f1_<c>`` = 2·TP / (2·TP + FP + FN); it is ``None`` only when c is neither true nor predicted.
  A class with true cycles that is never predicted has F1 0.
* ``macro_f1`` and ``balanced_accuracy`` average over the classes **present in the labels**
  (support > 0). A class absent from the labels is left out of the average even when it is
  predicted; those wrong predictions still lower the recall (and F1) of the true classes.
  ``accuracy`` is always defined.

Intervals
---------
``bootstrap_intervals`` resamples *patients* with replacement and keeps all their cycles (cycles
of one patient are correlated, so resampling cycles understates the spread). For each scalar
metric it returns the percentile interval as ``<metric>_ci_low`` / ``<metric>_ci_high``;
resamples in which a metric is undefined are left out of its interval, and the interval is
``None`` when the metric is undefined in every resample.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from lungpipe.labels import ICBHI_CLASS_NAMES
from lungpipe.util.typed_config import ConfigError

TASKS: tuple[str, ...] = ("icbhi", "multiclass")

#: Keys of a metrics dict that describe the evaluation rather than measure it.
METADATA_KEYS: frozenset[str] = frozenset(
    {"task", "class_names", "num_classes", "confusion", "n_samples", "n_patients",
     "n_resamples", "ci_level", "seed"}
)
_CI_SUFFIXES = ("_ci_low", "_ci_high")
# Bootstrap confusion matrices are built in chunks of at most this many float64 values.
_CHUNK_VALUES = 8_000_000


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _as_int_array(values, name: str) -> np.ndarray:
    """1-D integer array from a sequence; floats must be whole numbers."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64, copy=False)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise ValueError(
                f"{name} must be whole class indices; non-integer values "
                f"{_describe(arr[bad])} at positions {_describe(np.flatnonzero(bad))}"
            )
        return arr.astype(np.int64)
    raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")


def _describe(values: np.ndarray, limit: int = 10) -> str:
    """Short text listing of (up to ``limit``) distinct values."""
    uniq = np.unique(values)
    text = ", ".join(str(v) for v in uniq[:limit].tolist())
    return f"[{text}{', …' if uniq.size > limit else ''}]"


def _check_labels_preds(labels, preds, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    y = _as_int_array(labels, "labels")
    p = _as_int_array(preds, "preds")
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"labels and preds differ in length: {y.shape[0]} labels, {p.shape[0]} preds")
    if y.shape[0] == 0:
        raise ValueError("cannot compute metrics on empty input (no labels and no predictions)")
    for arr, name in ((y, "labels"), (p, "preds")):
        bad = (arr < 0) | (arr >= num_classes)
        if bad.any():
            raise ValueError(
                f"{name} outside 0..{num_classes - 1}: values {_describe(arr[bad])} "
                f"({int(bad.sum())} of {arr.size} entries); check num_classes or the {name}"
            )
    return y, p


def _resolve_classes(task: str, num_classes: int | None,
                     class_names: Sequence[str] | None) -> tuple[int, list[str], list[str]]:
    """(num_classes, display names, key-safe names) for a task."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if num_classes is None:
        if class_names is not None:
            num_classes = len(class_names)
        elif task == "icbhi":
            num_classes = len(ICBHI_CLASS_NAMES)
        else:
            raise ValueError("task 'multiclass' needs num_classes (or class_names)")
    num_classes = int(num_classes)
    if task == "icbhi" and num_classes != 4:
        raise ValueError(
            f"task 'icbhi' has 4 classes (normal, crackle, wheeze, both), got num_classes="
            f"{num_classes}; use task 'multiclass' for other label sets"
        )
    if class_names is None:
        class_names = list(ICBHI_CLASS_NAMES) if task == "icbhi" else [str(k) for k in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for {num_classes} classes: {names}")
    keys = [class_key(n) for n in names]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"class names must be distinct after normalisation; duplicates: {dupes}")
    return num_classes, names, keys


#: The validation metric ``"auto"`` stands for, per metric task.
AUTO_METRIC = {"icbhi": "score", "multiclass": "macro_f1"}
#: Metrics only the ICBHI task computes.
ICBHI_ONLY_METRICS = frozenset({"score", "sp", "se", "score_2class", "sp_2class", "se_2class"})


def resolve_metric(name: str, task: str, where: str = "selection_metric") -> str:
    """The metric ``name`` means for ``task``: ``"auto"`` → the task's headline metric (ICBHI Score;
    macro-F1 for multiclass tasks). An ICBHI-only metric on a multiclass task is a ConfigError
    naming ``where``, raised before any training."""
    if task not in AUTO_METRIC:
        raise ConfigError(f"{where}: unknown metric task {task!r}; expected one of {sorted(AUTO_METRIC)}")
    if name == "auto":
        return AUTO_METRIC[task]
    if task != "icbhi" and name in ICBHI_ONLY_METRICS:
        raise ConfigError(
            f"{where}: {name!r} is an ICBHI cycle metric, but this dataset is scored with multiclass metrics; "
            "use auto, accuracy, balanced_accuracy or macro_f1"
        )
    return name


def class_key(name: str) -> str:
    """The form of a class name used in metric keys: lower case, runs of other characters → ``_``.

    ``"Crackle + wheeze"`` → ``"crackle_wheeze"``.
    """
    key = re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")
    if not key:
        raise ValueError(f"class name {name!r} has no letters or digits to build a metric key from")
    return key


# --------------------------------------------------------------------------------------------
# confusion matrices and the metrics computed from them
# --------------------------------------------------------------------------------------------
def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """K×K count matrix, rows = true class, columns = predicted class (int64)."""
    y, p = _check_labels_preds(labels, preds, num_classes)
    flat = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN where den == 0."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _batch_metrics(cms: np.ndarray, task: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Every scalar metric for a batch of confusion matrices (B, K, K) → arrays of shape (B,).

    Undefined values are NaN here; callers turn them into ``None``.
    """
    cms = np.asarray(cms, dtype=np.float64)
    diag = np.diagonal(cms, axis1=1, axis2=2)  # (B, K)
    support = cms.sum(axis=2)  # true counts per class
    predicted = cms.sum(axis=1)  # predicted counts per class
    total = support.sum(axis=1)

    recall = _ratio(diag, support)
    precision = _ratio(diag, predicted)
    f1 = _ratio(2.0 * diag, support + predicted)
    present = support > 0
    n_present = present.sum(axis=1)
    macro_f1 = _ratio(np.where(present, f1, 0.0).sum(axis=1), n_present)
    balanced = _ratio(np.where(present, recall, 0.0).sum(axis=1), n_present)

    out: dict[str, np.ndarray] = {}
    if task == "icbhi":
        normal = support[:, 0]
        abnormal = support[:, 1:].sum(axis=1)
        sp = _ratio(diag[:, 0], normal)
        se = _ratio(diag[:, 1:].sum(axis=1), abnormal)
        se2 = _ratio(cms[:, 1:, 1:].sum(axis=(1, 2)), abnormal)
        out.update(
            sp=sp, se=se, score=(sp + se) / 2.0,
            sp_2class=sp.copy(), se_2class=se2, score_2class=(sp + se2) / 2.0,
        )
    out["accuracy"] = _ratio(diag.sum(axis=1), total)
    out["balanced_accuracy"] = balanced
    out["macro_f1"] = macro_f1
    for prefix, values in (("recall", recall), ("precision", precision), ("f1", f1)):
        for k, key in enumerate(keys):
            out[f"{prefix}_{key}"] = values[:, k]
    return out


def _clean(value: float) -> float | None:
    value = float(value)
    return None if not np.isfinite(value) else value


def metrics_from_confusion(confusion, *, task: str = "icbhi",
                           class_names: Sequence[str] | None = None) -> dict[str, float | None]:
    """Scalar metrics of one confusion matrix (rows true, columns predicted); ``None`` = undefined."""
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square K×K, got shape {cm.shape}")
    if (cm < 0).any():
        raise ValueError("confusion matrix has negative counts")
    if cm.sum() == 0:
        raise ValueError("confusion matrix is empty (all counts zero)")
    _, _, keys = _resolve_classes(task, cm.shape[0], class_names)
    batch = _batch_metrics(cm[None], task, keys)
    return {name: _clean(values[0]) for name, values in batch.items()}


# --------------------------------------------------------------------------------------------
# bootstrap over patients
# --------------------------------------------------------------------------------------------
def _group_codes(values, n_cycles: int, what: str) -> np.ndarray:
    """0..G-1 codes of the per-cycle group labels ``values`` (patients or runs), one per cycle."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n_cycles:
        raise ValueError(f"{what}s must give one {what} per cycle: {arr.shape[0] if arr.ndim else 0} "
                         f"{what}s for {n_cycles} cycles")
    return np.unique(arr, return_inverse=True)[1].reshape(-1)


def bootstrap_intervals(labels, preds, patients=None, *, task: str = "icbhi",
                        num_classes: int | None = None, class_names: Sequence[str] | None = None,
                        n_resamples: int = 1000, seed: int = 0,
                        ci_level: float = 0.95, runs=None) -> dict[str, float | None]:
    """Percentile bootstrap intervals for every scalar metric, resampling patients.

    Each resample draws as many patients as there are, with replacement, and pools all cycles
    of the drawn patients. ``patients`` gives each cycle's patient (any hashable values);
    ``None`` treats every cycle as its own patient (plain per-cycle bootstrap).
    Returns ``{"<metric>_ci_low": ..., "<metric>_ci_high": ...}``.

    ``runs`` (optional, one value per cycle: e.g. the training seed that produced the prediction)
    pools the predictions of several trainings: each resample then also draws the runs with
    replacement (as many as there are), so the interval covers the training variance as well as
    the patients. A cycle's weight in a resample is (draws of its run) × (draws of its patient).

    Vectorised: one confusion matrix per patient, multinomial draw counts per resample, and a
    single matrix product gives every resample's confusion matrix.
    """
    num_classes, _, keys = _resolve_classes(task, num_classes, class_names)
    y, p = _check_labels_preds(labels, preds, num_classes)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < ci_level < 1.0:
        raise ValueError(f"ci_level must lie strictly between 0 and 1, got {ci_level}")
    codes = np.arange(y.shape[0]) if patients is None else _group_codes(patients, y.shape[0], "patient")
    n_patients = int(codes.max()) + 1
    run_codes = np.zeros_like(codes) if runs is None else _group_codes(runs, y.shape[0], "run")
    n_runs = int(run_codes.max()) + 1
    kk = num_classes * num_classes
    cells = (run_codes * n_patients + codes) * kk + y * num_classes + p
    per_unit = np.bincount(cells, minlength=n_runs * n_patients * kk)
    per_unit = per_unit.reshape(n_runs * n_patients, kk).astype(np.float64)  # (run, patient) → counts

    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=n_resamples)
    run_counts = (rng.multinomial(n_runs, np.full(n_runs, 1.0 / n_runs), size=n_resamples) if n_runs > 1
                  else np.ones((n_resamples, 1), dtype=np.int64))
    chunk = max(1, _CHUNK_VALUES // (kk * n_runs))
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n_resamples, chunk):
        stop = start + chunk
        weights = (run_counts[start:stop, :, None] * counts[start:stop, None, :]).reshape(-1, n_runs * n_patients)
        cms = (weights @ per_unit).reshape(-1, num_classes, num_classes)
        parts.append(_batch_metrics(cms, task, keys))
    samples = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    tail = (1.0 - ci_level) / 2.0 * 100.0
    out: dict[str, float | None] = {}
    for name, values in samples.items():
        defined = values[np.isfinite(values)]
        if defined.size == 0:
            low = high = None
        else:
            low_v, high_v = np.percentile(defined, [tail, 100.0 - tail])
            low, high = _clean(low_v), _clean(high_v)
        out[f"{name}_ci_low"] = low
        out[f"{name}_ci_high"] = high
    return out


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------
def compute_metrics(labels, preds, *, task: str = "icbhi", num_classes: int | None = None,
                    class_names: Sequence[str] | None = None, patients=None,
                    n_resamples: int = 0, seed: int = 0, ci_level: float = 0.95, runs=None) -> dict:
    """All metrics of a task as a JSON-ready dict (plain floats, ints, lists; ``None`` = undefined).

    ``labels``/``preds``: integer class indices 0..K-1 (K = ``num_classes``; 4 for ``icbhi``,
    inferred from ``class_names`` when given). ``class_names`` default to
    ``normal, crackle, wheeze, both`` (icbhi) or ``0..K-1`` (multiclass).
    With ``n_resamples > 0`` the dict also carries ``<metric>_ci_low``/``<metric>_ci_high`` from
    :func:`bootstrap_intervals` over ``patients`` (and ``runs``, when the predictions of several
    trainings are pooled), seeded by ``seed``.

    Keys: the scalar metrics (see the module docstring), then metadata: ``task``,
    ``class_names``, ``num_classes``, ``confusion`` (K×K list, rows true / columns predicted),
    ``n_samples``, ``n_patients`` when ``patients`` is given, and when intervals are computed
    ``n_resamples``, ``ci_level``, ``seed``. Raises ``ValueError`` on empty input, mismatched lengths, or class
    indices outside 0..K-1.
    """
    num_classes, names, keys = _resolve_classes(task, num_classes, class_names)
    cm = confusion_matrix(labels, preds, num_classes)
    result: dict = {name: _clean(values[0]) for name, values in _batch_metrics(cm[None], task, keys).items()}
    if n_resamples > 0:
        result.update(bootstrap_intervals(labels, preds, patients, task=task, num_classes=num_classes,
                                          class_names=names, n_resamples=n_resamples, seed=seed,
                                          ci_level=ci_level, runs=runs))
        result.update(n_resamples=int(n_resamples), ci_level=float(ci_level), seed=int(seed))
    if patients is not None:
        result["n_patients"] = len(np.unique(np.asarray(patients)))
    result.update(task=task, class_names=names, num_classes=num_classes, confusion=cm.tolist(),
                  n_samples=int(cm.sum()))
    return result


def scalar_metric_keys(metrics: Mapping) -> list[str]:
    """Names of the scalar metrics in a metrics dict (no metadata, no interval bounds), in order."""
    return [
        key for key, value in metrics.items()
        if key not in METADATA_KEYS and not key.endswith(_CI_SUFFIXES)
        and (value is None or (isinstance(value, (int, float, np.number)) and not isinstance(value, bool)))
    ]


def summarize_seeds(runs: Iterable[Mapping]) -> dict:
    """Mean and spread of every scalar metric over several runs (seeds or folds).

    Returns ``<metric>_mean`` and ``<metric>_std`` (sample standard deviation, ddof=1) for each
    scalar metric, plus ``n_seeds``. Runs in which a metric is undefined (``None``) are left out
    of its statistics; the std is ``None`` with fewer than two defined values and the mean is
    ``None`` with none. All runs must carry the same scalar metrics.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("summarize_seeds needs at least one metrics dict")
    names = scalar_metric_keys(runs[0])
    for i, run in enumerate(runs[1:], start=1):
        other = scalar_metric_keys(run)
        if set(other) != set(names):
            missing = sorted(set(names) - set(other))
            extra = sorted(set(other) - set(names))
            raise ValueError(f"run {i} has different metrics than run 0: missing {missing}, extra {extra}")
    out: dict = {}
    for name in names:
        values = np.array([float(run[name]) for run in runs if run[name] is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[f"{name}_mean"] = _clean(values.mean()) if values.size else None
        out[f"{name}_std"] = _clean(values.std(ddof=1)) if values.size >= 2 else None
    out["n_seeds"] = len(runs)
    return out
