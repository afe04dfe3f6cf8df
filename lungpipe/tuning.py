"""Hyperparameter tuning with Optuna: seeded TPE, pruning on the per-epoch validation metric,
resumable studies, every trial a nested MLflow run, and Optuna's own distributed mode.

The objective is the validation metric of the training split's held-out patients; the test split
is never touched. A study carries everything a worker needs in its user attributes (the typed
settings of the architecture, as plain data, and its search space), so ``lungpipe tune worker --storage URL --study NAME --trials N``
can join it from any process or machine that reaches the storage.

Storage: an RDB URL (``postgresql://…``, ``mysql://…``; ``sqlite:///…`` for a single process) or a
journal file (``journal:///abs/path.log`` or a plain path), which is the safe choice for several
processes on one machine (Optuna's FAQ advises against parallel workers on one SQLite file).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungpipe.config import ConfigError, from_dict, require, require_choice
from lungpipe.settings import ArchSettings, check_override_keys, settings_from_dict, with_overrides

log = logging.getLogger(__name__)


@dataclass
class SearchParam:
    """One dimension of the search space."""

    type: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None


PRUNERS = ("median", "hyperband", "none")


@dataclass
class TuningConfig:
    n_trials: int = 4
    epochs: int = 4
    sampler_seed: int = 0
    pruner: str = "median"  # median | hyperband | none
    storage: str | None = None
    heartbeat_interval: int = 60  # RDB storages: stale trials of a killed worker are failed
    metric: str = "auto"  # validation metric to maximise (auto: ICBHI Score, or macro-F1 for multiclass)

    def __post_init__(self) -> None:
        require(self, "n_trials", self.n_trials >= 1, "must be >= 1")
        require(self, "epochs", self.epochs >= 1, "must be >= 1")
        require_choice(self, "pruner", PRUNERS)
        require(self, "heartbeat_interval", self.heartbeat_interval >= 1, "must be >= 1 (seconds)")


def parse_space(arch: str, space: Mapping[str, Any], base: ArchSettings) -> dict[str, SearchParam]:
    """Validate the search space: each entry must be a well-formed SearchParam AND a namespaced
    key (``train.lr``, ``augment.time_mask_width``, ``model.label_smoothing``) of ``base``."""
    parsed = {}
    for key, spec in (space or {}).items():
        p = from_dict(SearchParam, spec, where=f"tuning.space.{arch}.{key}")
        if p.type in ("float", "int"):
            if p.low is None or p.high is None or p.low > p.high:
                raise ConfigError(f"tuning.space.{arch}.{key}: needs low <= high, got {p.low}..{p.high}")
            if p.log and p.low <= 0:
                raise ConfigError(f"tuning.space.{arch}.{key}: log scale needs low > 0")
        elif p.type == "categorical":
            if not p.choices:
                raise ConfigError(f"tuning.space.{arch}.{key}: categorical needs a non-empty 'choices' list")
        else:
            raise ConfigError(f"tuning.space.{arch}.{key}: type must be float, int or categorical, got {p.type!r}")
        parsed[key] = p
    check_override_keys(base, list(parsed), source=f"tuning.space.{arch}")
    return parsed


def suggest(trial, space: Mapping[str, SearchParam]) -> dict[str, Any]:
    values = {}
    for key, p in space.items():
        if p.type == "float":
            values[key] = trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
        elif p.type == "int":
            values[key] = trial.suggest_int(key, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            values[key] = trial.suggest_categorical(key, p.choices)
    return values


def make_storage(url: str | None, default_path: Path | None = None, heartbeat_interval: int = 60):
    """An Optuna storage from a URL or path (see the module docstring)."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    import optuna

    if url is None:
        if default_path is None:
            raise ConfigError("tuning.storage is null and no default journal path was given")
        url = str(default_path)
    if url.startswith(("postgresql", "mysql", "sqlite:")):
        return RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=2 * heartbeat_interval,
                          failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1))
    path = Path(url.removeprefix("journal://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def make_pruner(name: str):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if name in ("none", None):
        return optuna.pruners.NopPruner()
    raise ConfigError(f"tuning.pruner must be median, hyperband or none, got {name!r}")


def create_or_load_study(storage, study_name: str, cfg: TuningConfig, *, worker_seed: int = 0,
                         user_attrs: Mapping[str, Any] | None = None):
    """Create the study or continue it (``load_if_exists``); the TPE sampler is seeded per worker
    (the sampler's state is not stored, so each worker gets its own seed)."""
    import optuna

    sampler = optuna.samplers.TPESampler(seed=cfg.sampler_seed + worker_seed, n_startup_trials=min(4, cfg.n_trials))
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", sampler=sampler,
                                pruner=make_pruner(cfg.pruner), load_if_exists=True)
    for key, value in (user_attrs or {}).items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study


@dataclass
class TuneJob:
    """Everything a trial needs; stored (as plain data) in the study's user attributes."""

    arch: str
    settings: dict[str, Any]  # the architecture's ArchSettings as plain data (lungpipe.config.to_dict)
    space: dict[str, Any]  # tuning.space.<arch>: namespaced key -> SearchParam fields
    features_dir: str
    dataset: str = "synth"
    metric_task: str = "icbhi"
    class_names: list[str] | None = None
    tracking_uri: str | None = None
    experiment: str = "lungpipe"
    parent_run_id: str | None = None


class Objective:
    """Optuna objective: train with suggested values, report the validation metric per epoch."""

    def __init__(self, job: TuneJob, cfg: TuningConfig):
        from lungpipe.metrics import resolve_metric

        cfg = dataclasses.replace(cfg, metric=resolve_metric(cfg.metric, job.metric_task, "tuning.metric"))
        self.job, self.cfg = job, cfg
        self.base = settings_from_dict(job.settings)
        self.space = parse_space(job.arch, job.space, self.base)
        if not self.space:
            raise ConfigError(f"tuning.space.{job.arch} is empty: nothing to tune")

    def __call__(self, trial) -> float:
        import optuna
        from lungpipe.training.job import TrainJob, run_training

        values = suggest(trial, self.space)
        settings = with_overrides(self.base, values, source=f"tuning.space.{self.job.arch} (trial {trial.number})")
        settings.train = dataclasses.replace(settings.train, epochs=self.cfg.epochs,
                                             selection_metric=self.cfg.metric, early_stopping_patience=0)

        def report(epoch: int, record: Mapping[str, Any]) -> None:
            value = record.get(f"val_{self.cfg.metric}")
            value = float("nan") if value is None else float(value)
            if math.isnan(value):
                return
            trial.report(value, epoch)
            if trial.should_prune():
                _tag_state("PRUNED")
                raise optuna.TrialPruned(f"pruned at epoch {epoch} ({self.cfg.metric} {value:.4f})")

        with tempfile.TemporaryDirectory(prefix=f"trial{trial.number}-") as tmp:
            job = TrainJob(
                settings=settings, features_dir=Path(self.job.features_dir), out_dir=Path(tmp),
                checkpoint_dir=None, seed=trial.number, dataset=self.job.dataset, metric_task=self.job.metric_task,
                class_names=self.job.class_names, tracking_uri=self.job.tracking_uri,
                experiment=self.job.experiment, callbacks=[report], score_test=False, progress=False,
                nested=self.job.parent_run_id is not None, run_name=f"{self.job.arch}-trial{trial.number}",
                tags={"optuna_trial": str(trial.number), "optuna_study": trial.study.study_name},
                parent_run_id=self.job.parent_run_id,
            )
            result = run_training(job)
        if result.run_id and self.job.tracking_uri:
            from mlflow import MlflowClient

            MlflowClient(self.job.tracking_uri).set_tag(result.run_id, "optuna_state", "COMPLETE")
        return float(result.fit.best_value)


def _tag_state(state: str) -> None:
    try:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.set_tag("optuna_state", state)
    except Exception:  # noqa: BLE001 - logging must never break a trial
        pass


@dataclass
class StudyResult:
    study_name: str
    best_params: dict[str, Any]
    best_value: float | None
    n_complete: int
    n_pruned: int
    n_failed: int
    plots: list[Path] = field(default_factory=list)


def run_worker(storage, study_name: str, n_trials: int, *, worker_seed: int = 0, progress: bool = True) -> StudyResult:
    """Join an existing study and run ``n_trials`` more trials in this process.

    Failed trials (an exception, a NaN loss) are recorded as FAIL and the study goes on."""
    import optuna

    probe = optuna.load_study(study_name=study_name, storage=storage)
    attrs = probe.user_attrs
    if "job" not in attrs or "tuning" not in attrs:
        raise ConfigError(f"study {study_name!r} was not created by lungpipe (no job in its user attributes)")
    cfg = from_dict(TuningConfig, attrs["tuning"])
    job = TuneJob(**attrs["job"])
    study = create_or_load_study(storage, study_name, cfg, worker_seed=worker_seed)
    objective = Objective(job, cfg)
    study.optimize(objective, n_trials=n_trials, catch=(Exception,), callbacks=[_ProgressCallback(n_trials, progress)])
    return summarize(study)


class _ProgressCallback:
    """Prints 'trial n of N, best so far' after every trial of this worker."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done = total, enabled, 0

    def __call__(self, study, trial) -> None:
        self.done += 1
        if not self.enabled:
            return
        from rich.console import Console

        try:
            best = f"{study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = "none yet"
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        Console(stderr=True).print(
            f"[bold]trial {self.done} of {self.total}[/] #{trial.number} {trial.state.name} value {value}; best so far {best}"
        )


def summarize(study) -> StudyResult:
    import optuna

    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    return StudyResult(
        study_name=study.study_name,
        best_params=dict(best.params) if best else {},
        best_value=float(best.value) if best else None,
        n_complete=len(complete),
        n_pruned=states.count(optuna.trial.TrialState.PRUNED),
        n_failed=states.count(optuna.trial.TrialState.FAIL),
    )


def save_study_plots(study, out_dir: Path) -> list[Path]:
    """Optuna's optimization-history and parameter-importance plots as PNGs (matplotlib)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    from lungpipe.atomic import atomic_path

    out = []
    plots = {"optimization_history.png": ovm.plot_optimization_history}
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) >= 2 and len(complete[0].params) >= 1:
        plots["param_importances.png"] = ovm.plot_param_importances
    for name, fn in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = fn(study)
            except (ValueError, RuntimeError) as exc:  # e.g. importances need variation
                log.warning("skipping %s: %s", name, exc)
                continue
        fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
        fig.set_size_inches(7, 4.5)
        fig.tight_layout()
        target = Path(out_dir) / name
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        out.append(target)
    return out


def run_study(job: TuneJob, cfg: TuningConfig, storage, study_name: str, *, progress: bool = True,
              plots_dir: Path | None = None) -> StudyResult:
    """The tune stage: one MLflow parent run per study, trials as nested child runs; resumes the
    study from its storage and runs only the trials still missing to reach ``cfg.n_trials``."""
    import optuna

    parent_ctx = _parent_run(job, study_name)
    with parent_ctx as parent:
        if parent is not None:
            job = dataclasses.replace(job, parent_run_id=parent.info.run_id)
        study = create_or_load_study(storage, study_name, cfg, user_attrs={
            "job": dataclasses.asdict(job), "tuning": dataclasses.asdict(cfg)})
        finished = [t for t in study.trials if t.state != optuna.trial.TrialState.RUNNING]
        missing = max(0, cfg.n_trials - len(finished))
        if missing:
            study.optimize(Objective(job, cfg), n_trials=missing, catch=(Exception,),
                           callbacks=[_ProgressCallback(missing, progress)])
        result = summarize(study)
        if plots_dir is not None:
            result.plots = save_study_plots(study, plots_dir)
        if parent is not None:
            import mlflow

            mlflow.log_params({f"best.{k}": v for k, v in result.best_params.items()})
            if result.best_value is not None:
                mlflow.log_metric("best_value", result.best_value)
            mlflow.log_metrics({"n_complete": result.n_complete, "n_pruned": result.n_pruned,
                                "n_failed": result.n_failed})
            for p in result.plots:
                mlflow.log_artifact(str(p))
    return result


def _parent_run(job: TuneJob, study_name: str):
    if not job.tracking_uri:
        import contextlib

        return contextlib.nullcontext()
    from lungpipe.tracking import start_run

    return start_run(job.tracking_uri, job.experiment, f"study-{study_name}",
                     tags={"architecture": job.arch, "dataset": job.dataset, "optuna_study": study_name,
                           "kind": "optuna-study"})
