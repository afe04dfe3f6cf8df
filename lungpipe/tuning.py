"""Hyperparameter tuning with Optuna: seeded TPE, pruning on the per-epoch validation metric,
resumable studies, every trial a nested MLflow run, and Optuna's own distributed mode.

The objective is the validation metric of the training split's held-out patients; the test split
is never touched. A study carries everything a worker needs in its user attributes (the typed
base settings and the search space, as plain data), so
``lungpipe tune worker --storage URL --study NAME --trials N`` can join it from any process or
machine that reaches the storage.

A study's name ends in a hash of the question it answers (search space, base training settings,
data version, metric: :func:`study_identity`), so changing any of them starts a new study in the
same storage while the old one is kept. Only COMPLETE trials count toward ``n_trials``; each
process seeds TPE from the sampler seed, its worker offset and the number of trials already in the
study, so a continued study proposes new points.

Storage: an RDB URL (``postgresql://…``, ``mysql://…``; ``sqlite:///…`` for a single process) or a
journal file (``journal:///abs/path.log`` or a plain path), which is the safe choice for several
processes on one machine (Optuna's FAQ advises against parallel workers on one SQLite file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import socket
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow import MlflowClient
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend
from rich.console import Console
from rich.markup import escape

from lungpipe.evaluation.metrics import resolve_metric
from lungpipe.features.store import LAYOUT_FILES
from lungpipe.tracking import params_hash, run_key, start_run, warn_if_shared_sqlite
from lungpipe.training.arch_settings import ArchSettings, with_overrides
from lungpipe.training.job import TrainJob, run_training
from lungpipe.util.atomic import atomic_path
from lungpipe.util.errors import LungpipeError
from lungpipe.util.typed_config import ConfigError, from_dict, require, require_choice

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


def parse_space(arch: str, space: Mapping[str, Any] | None, base: ArchSettings) -> dict[str, SearchParam]:
    """Validate the search space: each entry must be a well-formed SearchParam AND a key the
    architecture's training/augment/model config knows (``train.lr``, ``augment.mixup_alpha``,
    ``model.dropout``)."""
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
    # routes every key or raises a ConfigError naming the unknown one
    with_values(base, {k: _example(p) for k, p in parsed.items()})
    return parsed


def with_values(base: ArchSettings, values: Mapping[str, Any]) -> ArchSettings:
    """``base`` with a trial's (or the tuned file's) namespaced values applied
    (:func:`lungpipe.training.arch_settings.with_overrides`); a key no config knows is a ConfigError naming it."""
    return with_overrides(base, values, source=f"tuning.space.{base.name}")


def _example(p: SearchParam) -> Any:
    return p.choices[0] if p.type == "categorical" else p.low


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
    """An Optuna storage from a URL or path (see the module docstring).

    RDB storages get Optuna's heartbeat: a trial whose worker stops beating for
    ``2 * heartbeat_interval`` seconds is failed and re-queued once (same params) by
    ``RetryHeartbeatStaleTrialCallback`` (formerly ``RetryFailedTrialCallback``). The journal file has
    no heartbeat; its trials left RUNNING by a dead process are found by :func:`fail_orphaned_trials`."""
    if url is None:
        if default_path is None:
            raise ConfigError("tuning.storage is null and no default journal path was given")
        url = str(default_path)
    if url.startswith(("postgresql", "mysql", "sqlite:")):
        _check_rdb_driver(url)
        url = sqlalchemy_url(url)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
        return RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=2 * heartbeat_interval,
                          heartbeat_stale_trial_callback=retry,
                          engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
    path = Path(url.removeprefix("journal://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def sqlalchemy_url(url: str) -> str:
    """``postgresql://…`` with the driver lungpipe installs (psycopg2) named, since SQLAlchemy 2.1
    picks psycopg 3 for a bare ``postgresql://``."""
    return "postgresql+psycopg2://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def _check_rdb_driver(url: str) -> None:
    if url.startswith("postgresql"):
        try:
            import psycopg2  # noqa: F401 - probe: is the driver installed?
        except ImportError as exc:
            raise ConfigError(f"tuning.storage {url.split('@')[-1]!r} is PostgreSQL, but psycopg2 is not installed: "
                              "pip install psycopg2-binary -c constraints.txt") from exc


def make_pruner(name: str):
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if name in ("none", None):
        return optuna.pruners.NopPruner()
    raise ConfigError(f"tuning.pruner must be median, hyperband or none, got {name!r}")


def sampler_seed(base_seed: int, worker_seed: int, n_existing_trials: int) -> int:
    """The TPE seed of one process joining a study: the sampler's state is not stored, so a
    continuation seeded like the first process would replay its points. Mixing in the worker
    offset and the number of trials already in the study gives every process its own stream."""
    digest = hashlib.sha256(f"{base_seed}/{worker_seed}/{n_existing_trials}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def create_or_load_study(storage, study_name: str, cfg: TuningConfig, *, worker_seed: int = 0,
                         user_attrs: Mapping[str, Any] | None = None):
    """Create the study or continue it (``load_if_exists``), with a TPE sampler seeded for this
    process and this point of the study (:func:`sampler_seed`)."""
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize",
                                pruner=make_pruner(cfg.pruner), load_if_exists=True)
    seed = sampler_seed(cfg.sampler_seed, worker_seed, len(study.get_trials(deepcopy=False)))
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, cfg.n_trials))
    for key, value in (user_attrs or {}).items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study


# -- trials left RUNNING by a dead process (journal storage) -------------------------------------

OWNER_ATTR = "lungpipe_worker"


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22); None when gone
    or a zombie. Together with the pid it identifies a process even after pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _this_worker() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def _owner_is_dead(owner: Mapping[str, Any] | None) -> bool:
    if not owner or owner.get("host") != socket.gethostname():
        return False  # another machine's worker: only a heartbeat (RDB storage) can tell
    start = _process_start(int(owner["pid"]))
    return start is None or (owner.get("start") is not None and start != owner["start"])


def fail_orphaned_trials(study, max_retry: int = 1) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker process on this machine is gone, and re-queue each
    once with the same params (Optuna's retry callback). RDB storages do this themselves through
    the heartbeat; this covers the journal file. Returns the numbers of the trials failed."""
    if is_heartbeat_enabled(study._storage):
        return []
    failed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not _owner_is_dead(trial.user_attrs.get(OWNER_ATTR)):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "error", "worker process died (killed?) mid-trial")
            if not study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        log.warning("trial %d of study %s was left RUNNING by a dead process (pid %s): marked FAIL and re-queued",
                    trial.number, study.study_name, trial.user_attrs[OWNER_ATTR].get("pid"))
        retry(study, study._storage.get_trial(trial._trial_id))
        failed.append(trial.number)
    return failed


# -- the question a study answers ----------------------------------------------------------------

def features_fingerprint(features_dir: str | os.PathLike) -> str:
    """A digest of a features folder that changes with its data: the bytes of ``stats.json`` and the
    split index CSVs (which hold normalisation constants, configs and every row's recording and
    label) plus the size of every ``.npy`` array. Cheap on multi-GB folders (arrays are not read)."""
    root = Path(features_dir)
    h = hashlib.sha256()
    for name in sorted(LAYOUT_FILES):
        f = root / name
        h.update(name.encode())
        if not f.is_file():
            h.update(b"<missing>")
        elif f.suffix == ".npy":
            h.update(str(f.stat().st_size).encode())
        else:
            h.update(f.read_bytes())
    return h.hexdigest()


#: Training fields that change how fast a trial runs, not what it answers.
OPERATIONAL_TRAIN_FIELDS = ("device", "num_workers", "eval_batch_size")


def _question_settings(s: ArchSettings) -> dict[str, Any]:
    d = settings_to_dict(s)
    d["train"] = {k: v for k, v in d["train"].items() if k not in OPERATIONAL_TRAIN_FIELDS}
    return d


def redact_url(url: str) -> str:
    """``url`` without a password (``postgresql://user:***@host/db``), for files and logs."""
    return re.sub(r"(://[^:/@]+):[^/]*@", r"\1:***@", url)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def study_identity(job: TuneJob, cfg: TuningConfig) -> dict[str, str]:
    """The hashes that define what a study asks: search space, base training settings (with the
    per-trial epochs), data version and metric. Any change gives a new study name."""
    parts = {
        "space": {k: dataclasses.asdict(p) for k, p in sorted(job.space.items())},
        "settings": {**_question_settings(job.settings), "trial_epochs": cfg.epochs},
        "data": features_fingerprint(job.features_dir),
        "metric": _resolved_metric(cfg, job),
    }
    ident = {k: hashlib.sha256(_canonical(v).encode()).hexdigest()[:12] for k, v in parts.items()}
    ident["metric"] = parts["metric"]
    ident["data"] = parts["data"][:12]
    ident["study_hash"] = hashlib.sha256(_canonical(parts).encode()).hexdigest()[:10]
    return ident


def study_name_for(prefix: str, job: TuneJob, cfg: TuningConfig) -> tuple[str, dict[str, str]]:
    """``<prefix>-<arch>-<hash>`` and the identity it was made from."""
    ident = study_identity(job, cfg)
    return f"{prefix}-{job.settings.name}-{ident['study_hash']}", ident


def _resolved_metric(cfg: TuningConfig, job: TuneJob) -> str:
    return resolve_metric(cfg.metric, job.metric_task, "tuning.metric")


# -- jobs ---------------------------------------------------------------------------------------

@dataclass
class TuneJob:
    """Everything a trial needs, built by the stage from typed settings; stored (as plain data) in
    the study's user attributes so workers in other processes can rebuild it."""

    settings: ArchSettings  # base settings of the architecture (no tuned values)
    space: dict[str, SearchParam]
    features_dir: str
    dataset: str = "synth"
    metric_task: str = "icbhi"
    class_names: list[str] | None = None
    tracking_uri: str | None = None
    experiment: str = "lungpipe"
    parent_run_id: str | None = None

    @property
    def arch(self) -> str:
        return self.settings.name


def settings_to_dict(s: ArchSettings) -> dict[str, Any]:
    return dataclasses.asdict(s)


def job_to_attrs(job: TuneJob) -> dict[str, Any]:
    return {**dataclasses.asdict(job), "space": {k: dataclasses.asdict(p) for k, p in job.space.items()}}


def job_from_attrs(attrs: Mapping[str, Any]) -> TuneJob:
    data = dict(attrs)
    settings = from_dict(ArchSettings, data.pop("settings"), where="study job.settings")
    space = {k: from_dict(SearchParam, v, where=f"study job.space.{k}") for k, v in data.pop("space").items()}
    return TuneJob(settings=settings, space=space, **data)


class Objective:
    """Optuna objective: train with suggested values, report the validation metric per epoch."""

    def __init__(self, job: TuneJob, cfg: TuningConfig):
        cfg = dataclasses.replace(cfg, metric=_resolved_metric(cfg, job))
        if not job.space:
            raise ConfigError(f"tuning.space.{job.arch} is empty: nothing to tune")
        self.job, self.cfg = job, cfg

    def __call__(self, trial) -> float:
        trial.set_user_attr(OWNER_ATTR, _this_worker())
        try:
            return self._train(trial)
        except Exception as exc:
            if not isinstance(exc, optuna.TrialPruned):
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            raise

    def _train(self, trial) -> float:
        values = suggest(trial, self.job.space)
        settings = with_values(self.job.settings, values)
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
                experiment=self.job.experiment, callbacks=[report], score_test=False, progress=None,
                nested=self.job.parent_run_id is not None, run_name=f"{self.job.arch}-trial{trial.number}",
                tags={"optuna_trial": str(trial.number), "optuna_study": trial.study.study_name},
                parent_run_id=self.job.parent_run_id,
                run_finished_on=(optuna.TrialPruned,),  # a pruned trial's run ends FINISHED, optuna_state=PRUNED
            )
            result = run_training(job)
        if result.run_id and self.job.tracking_uri:
            MlflowClient(self.job.tracking_uri).set_tag(result.run_id, "optuna_state", "COMPLETE")
        return float(result.fit.best_value)


def _tag_state(state: str) -> None:
    try:
        if mlflow.active_run() is not None:
            mlflow.set_tag("optuna_state", state)
    except Exception:  # noqa: BLE001 - logging must never break a trial
        pass


class TuningFailedError(LungpipeError):
    """Every trial of a study failed: tuning has nothing to hand to training."""


@dataclass
class StudyResult:
    study_name: str
    best_params: dict[str, Any]
    best_value: float | None
    n_complete: int
    n_pruned: int
    n_failed: int
    plots: list[Path] = field(default_factory=list)
    identity: dict[str, str] = field(default_factory=dict)


def run_worker(storage, study_name: str, n_trials: int, *, worker_seed: int = 0, progress: bool = True,
               tracking_uri: str | None = None) -> StudyResult:
    """Join an existing study and run ``n_trials`` more trials in this process (``tracking_uri``,
    when given, replaces the URI the study was created with, e.g. a team server seen from here).

    Failed trials (an exception, a NaN loss) are recorded as FAIL and the study goes on."""
    try:
        probe = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError as exc:
        names = optuna.get_all_study_names(storage)
        raise ConfigError(f"no study {study_name!r} in this storage; studies there: {names}") from exc
    attrs = probe.user_attrs
    if "job" not in attrs or "tuning" not in attrs:
        raise ConfigError(f"study {study_name!r} was not created by lungpipe (no job in its user attributes)")
    cfg = from_dict(TuningConfig, attrs["tuning"])
    job = job_from_attrs(attrs["job"])
    if tracking_uri:
        job = dataclasses.replace(job, tracking_uri=tracking_uri)
    if job.tracking_uri:
        warn_if_shared_sqlite(job.tracking_uri)
    study = create_or_load_study(storage, study_name, cfg, worker_seed=worker_seed)
    fail_orphaned_trials(study)
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

        try:
            best = f"{study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = "none yet"
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        error = trial.user_attrs.get("error") if trial.state.name == "FAIL" else None
        Console(stderr=True).print(
            f"[bold]trial {self.done} (at most {self.total})[/] #{trial.number} {trial.state.name} value {value}; "
            f"best so far {best}" + (f"; error: {escape(error)}" if error else "")
        )


class _StopWhenComplete:
    """Stops this process's ``optimize`` once the study holds ``target`` COMPLETE trials (all
    workers' trials count)."""

    def __init__(self, target: int):
        self.target = target

    def __call__(self, study, trial) -> None:
        if len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) >= self.target:
            study.stop()


def summarize(study) -> StudyResult:
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
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
    # lazy: pyplot may load only after the headless Agg backend is chosen, and only when plotting
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

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
    study from its storage and runs trials until it holds ``cfg.n_trials`` COMPLETE ones (pruned and
    failed trials do not count; at most ``2 * n_trials`` attempts per call). Trials left RUNNING by
    a killed process are failed and re-queued first. Raises :class:`TuningFailedError`, naming the
    first error, when every trial this call ran failed or the study has no complete trial."""
    Objective(job, cfg)  # a bad space or metric fails before anything is created
    study = create_or_load_study(storage, study_name, cfg)
    fail_orphaned_trials(study)
    missing = cfg.n_trials - summarize(study).n_complete
    # a study that already holds n_trials complete trials opens no (empty) MLflow parent run
    parent_ctx = _parent_run(job, study_name) if missing > 0 else contextlib.nullcontext()
    with parent_ctx as parent:
        if parent is not None:
            job = dataclasses.replace(job, parent_run_id=parent.info.run_id)
        objective = Objective(job, cfg)
        before = {t.number for t in study.get_trials(deepcopy=False)}
        if missing > 0:
            for key, value in {"job": job_to_attrs(job), "tuning": dataclasses.asdict(cfg)}.items():
                study.set_user_attr(key, value)  # what `lungpipe tune worker` rebuilds the job from
            budget = 2 * cfg.n_trials
            study.optimize(objective, n_trials=budget, catch=(Exception,),
                           callbacks=[_StopWhenComplete(cfg.n_trials), _ProgressCallback(budget, progress)])
        ran = [t for t in study.get_trials(deepcopy=False) if t.number not in before
               and t.state != optuna.trial.TrialState.RUNNING]
        result = summarize(study)
        failed = [t for t in ran if t.state == optuna.trial.TrialState.FAIL]
        if (ran and len(failed) == len(ran)) or result.n_complete == 0:
            first = failed[0] if failed else next((t for t in study.get_trials(deepcopy=False)
                                                   if t.state == optuna.trial.TrialState.FAIL), None)
            reason = first.user_attrs.get("error", "no error recorded") if first else "no trial ran"
            where = f"trial {first.number}" if first else "the study"
            raise TuningFailedError(
                f"study {study_name}: no trial completed ({result.n_failed} failed, {result.n_pruned} pruned); "
                f"{where} failed with: {reason}")
        if result.n_complete < cfg.n_trials:
            log.warning("study %s: only %d of %d trials completed after %d attempts; using the best so far",
                        study_name, result.n_complete, cfg.n_trials, len(ran))
        if plots_dir is not None:
            result.plots = save_study_plots(study, plots_dir)
        if parent is not None:
            mlflow.log_params({f"best.{k}": v for k, v in result.best_params.items()})
            if result.best_value is not None:
                mlflow.log_metric("best_value", result.best_value)
            mlflow.log_metrics({"n_complete": result.n_complete, "n_pruned": result.n_pruned,
                                "n_failed": result.n_failed})
            for p in result.plots:
                mlflow.log_artifact(str(p))
    return result


def tuned_record(result: StudyResult, identity: Mapping[str, str], storage_url: str, metric: str) -> dict[str, Any]:
    """The content of ``tuned/<arch>.yaml``: the best values and which study produced them."""
    return {
        "study": result.study_name,
        "storage": storage_url,
        "identity": dict(identity),
        "metric": f"val_{metric}",
        "best_value": result.best_value,
        "best_params": result.best_params,
        "trials": {"complete": result.n_complete, "pruned": result.n_pruned, "failed": result.n_failed},
    }


def _parent_run(job: TuneJob, study_name: str):
    if not job.tracking_uri:
        return contextlib.nullcontext()

    # one parent per study: a resumed study's new parent replaces the old one and adopts its trials
    return start_run(job.tracking_uri, job.experiment, f"study-{study_name}",
                     tags={"architecture": job.arch, "dataset": job.dataset, "optuna_study": study_name,
                           "kind": "optuna-study"},
                     key=run_key("tune", job.arch, "study", 0, params_hash({"study": study_name})))
