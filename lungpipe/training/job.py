"""One training job: features → model → fit → test predictions → files and an MLflow run.

Used by the train stage (one job per architecture, fold and seed) and by the tuning objective
(one job per trial, test split untouched). Outputs in ``out_dir``:

- ``model.pt``: best weights + architecture name + resolved model config (what `predict` loads),
- ``predictions.csv``: test predictions in the shared predictions format,
- ``history.json``: per-epoch records; ``val_metrics.json``: the selected epoch's validation metrics,
- ``config.json``: the resolved configuration of the run,
- ``mlflow_run.json``: the MLflow run (when tracking is on; also kept in ``checkpoint_dir`` so a
  resumed training continues the same run).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

from lungpipe.evaluation.metrics import compute_metrics, resolve_metric, scalar_metric_keys
from lungpipe.evaluation.plots import plot_confusion
from lungpipe.evaluation.predictions import write_predictions
from lungpipe.evaluation.scoring import score_test_predictions
from lungpipe.features import load_split
from lungpipe.inference.model_file import (
    MODEL_FILE,
    ModelFile,
    write_model_file,
)
from lungpipe.inference.predict import SHORTEST_TRAIN_CYCLE_KEY
from lungpipe.models import create_model, resolve_config
from lungpipe.models.naming import display_name
from lungpipe.serving.pyfunc import log_audio_model
from lungpipe.tracking import (
    EpochLogger,
    log_features_input,
    params_hash,
    provenance_tags,
    run_key,
    scalar_metrics,
    start_run,
    write_run_file,
)
from lungpipe.training import checkpoint
from lungpipe.training.arch_settings import ArchSettings
from lungpipe.training.data import SpectrogramDataset, split_by_patient
from lungpipe.training.device import describe, pick_device
from lungpipe.training.engine import EpochCallback, FitResult, fit, run_signature
from lungpipe.training.placement import SingleProcess
from lungpipe.training.probabilities import predict_loader
from lungpipe.util import atomic
from lungpipe.util.typed_config import to_dict

log = logging.getLogger(__name__)


@dataclass
class TrainJob:
    settings: ArchSettings
    features_dir: Path
    out_dir: Path
    checkpoint_dir: Path | None = None
    seed: int = 0
    dataset: str = "synth"
    fold: str = "official"
    metric_task: str = "icbhi"
    class_names: list[str] | None = None
    tracking_uri: str | None = None
    experiment: str = "lungpipe"
    tags: dict[str, str] = field(default_factory=dict)
    callbacks: Sequence[EpochCallback] = ()
    score_test: bool = True
    n_boot: int = 200
    progress: bool | None = None
    nested: bool = False
    run_name: str | None = None
    parent_run_id: str | None = None  # tuning: trials are child runs of the study's run
    placement: SingleProcess | None = None  # a rank of a torchrun run (lungpipe.training.distributed); None: one process
    run_finished_on: tuple[type[BaseException], ...] = ()  # e.g. optuna.TrialPruned: the run ends FINISHED


@dataclass
class TrainJobResult:
    fit: FitResult
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None
    run_id: str | None
    out_dir: Path


def _evaluator(task: str, num_classes: int):
    def evaluate(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
        m = compute_metrics(labels, probs.argmax(1), task=task, num_classes=num_classes)
        return {k: m[k] for k in scalar_metric_keys(m)}

    return evaluate


@dataclass
class _TrainData:
    """The features of a job, split into the datasets the engine fits and selects on."""

    train_split: Any
    test_split: Any
    train_ds: SpectrogramDataset
    val_ds: SpectrogramDataset
    num_classes: int
    n_frames: int
    n_mels: int
    selection_note: str


@dataclass
class _RunPlan:
    """Everything :func:`fit` needs besides the data, and the resolved config the run records."""

    model: torch.nn.Module
    model_cfg: dict[str, Any]
    resolved_model: dict[str, Any]
    train_cfg: Any
    resolved: dict[str, Any]
    placement: SingleProcess
    world_size: int
    signature: Any
    evaluate: Any


def run_training(job: TrainJob) -> TrainJobResult:
    """Prepare the data, build the model, fit it (an MLflow run when tracking is on), then, on the
    writing rank, write the run's files, score the test split and log the outputs."""
    data = _prepare_data(job)
    plan = _plan_run(job, data)
    out_dir = Path(job.out_dir)
    # rank 0 alone logs and writes; the other ranks train, evaluate and gather with it
    run_ctx = _tracking_context(job, plan.resolved) if plan.placement.writer else _NoRun()
    with run_ctx as run:
        result, test_probs = _fit_with_callbacks(job, data, plan, tracking=run is not None)
        if not plan.placement.writer:
            return TrainJobResult(result, {}, None, None, out_dir)
        model = _model_to_save(job, plan)
        val_metrics = {k[4:]: v for k, v in result.history[result.best_epoch].items() if k.startswith("val_")} \
            if result.best_epoch >= 0 else {}
        files = _write_artifacts(job, data, plan, model, result, val_metrics)
        test_metrics = None
        if job.score_test:
            test_metrics, files["predictions"], files["confusion"] = _score_test(job, test_probs, data.test_split,
                                                                                 data.num_classes)
        if run is not None:
            _log_run_outputs(job, result, val_metrics, test_metrics, files)
            write_run_file(out_dir, run, job.tracking_uri)
    return TrainJobResult(result, val_metrics, test_metrics, run.info.run_id if run is not None else None, out_dir)


def _prepare_data(job: TrainJob) -> _TrainData:
    """The train and test features, and the train/validation datasets of ``split.selection``."""
    s = job.settings
    train_split = load_split(job.features_dir, "train")
    test_split = load_split(job.features_dir, "test")
    n_frames, n_mels = train_split.x.shape[1:3]
    labels_all = train_split.index["label"].to_numpy()
    num_classes = len(job.class_names) if job.class_names else int(max(labels_all.max(), 3) + 1)

    if s.split.selection == "validation":
        ps = split_by_patient(train_split.index, s.split.val_fraction, s.split.seed)
        train_ds = SpectrogramDataset(train_split.x, labels_all, ps.train_idx)
        val_ds = SpectrogramDataset(train_split.x, labels_all, ps.val_idx)
        selection_note = f"validation ({len(ps.val_patients)} training patients held out)"
    elif s.split.selection == "test":
        train_ds = SpectrogramDataset(train_split.x, labels_all)
        val_ds = SpectrogramDataset(test_split.x, test_split.index["label"].to_numpy())
        selection_note = "TEST SET (selection: test; reproduces published protocols, optimistic)"
        log.warning("%s: model selection on the TEST set (split.selection: test)", s.name)
    else:
        raise ValueError(f"split.selection must be 'validation' or 'test', got {s.split.selection!r}")
    return _TrainData(train_split, test_split, train_ds, val_ds, num_classes, int(n_frames), int(n_mels),
                      selection_note)


def _plan_run(job: TrainJob, data: _TrainData) -> _RunPlan:
    """The model (seeded), the training config of this seed, the resolved config, where it runs and
    the resume signature."""
    s = job.settings
    model_cfg = {**s.model, "num_classes": data.num_classes, "n_frames": data.n_frames, "n_mels": data.n_mels}
    resolved_model = to_dict(resolve_config(s.name, model_cfg))
    train_cfg = replace(s.train, seed=job.seed,
                        selection_metric=resolve_metric(s.train.selection_metric, job.metric_task,
                                                        f"{s.name}: train.selection_metric"))
    torch.manual_seed(job.seed)
    model = create_model(s.name, model_cfg)
    resolved = {
        "arch": s.name, "display_name": display_name_of(job), "frontend": s.frontend, "fold": job.fold,
        "seed": job.seed, "dataset": job.dataset,
        "model": resolved_model, "train": to_dict(train_cfg), "split": to_dict(s.split), "tuned": s.tuned,
        "selection": data.selection_note, "features": {"dir": str(job.features_dir), "n_frames": data.n_frames,
                                                        "n_mels": data.n_mels},
    }
    placement = job.placement or SingleProcess(pick_device(train_cfg.device))
    world_size = getattr(placement, "world_size", 1)
    if world_size > 1:  # the data order depends on it: a checkpoint resumes only with the same number of processes
        resolved["distributed"] = {"world_size": world_size}
    split = data.train_split
    signature = run_signature(resolved, sorted(split.stats.items()) if hasattr(split, "stats") else None)
    return _RunPlan(model, model_cfg, resolved_model, train_cfg, resolved, placement, world_size, signature,
                    _evaluator(job.metric_task, data.num_classes))


def _fit_with_callbacks(job: TrainJob, data: _TrainData, plan: _RunPlan, *, tracking: bool):
    """Fit (the MLflow epoch logger first when tracking), keep the best weights, and predict the
    test split when it is scored: ``(FitResult, test probabilities or None)``."""
    callbacks = list(job.callbacks)
    if tracking:
        callbacks.insert(0, EpochLogger())
        log_features_input(job.features_dir, job.dataset,
                           {"train": "training", **({"test": "evaluation"} if job.score_test else {})})
    writer = plan.placement.writer
    result = fit(
        plan.model, data.train_ds, data.val_ds, plan.train_cfg, num_classes=data.num_classes,
        evaluate=plan.evaluate, checkpoint_dir=job.checkpoint_dir, signature=plan.signature, callbacks=callbacks,
        progress=job.progress if writer else False,
        description=f"{job.settings.name} {job.fold} seed {job.seed}", placement=plan.placement,
    )
    if result.best_state is not None:
        plan.model.load_state_dict(result.best_state)
    test_probs = _predict(plan.placement, plan.model, data.test_split, plan.train_cfg) if job.score_test else None
    return result, test_probs


def _model_to_save(job: TrainJob, plan: _RunPlan) -> torch.nn.Module:
    """The trained model on the CPU in eval mode; of a distributed run, a plain copy to save and
    log (no DDP hook, BatchNorm instead of SyncBatchNorm)."""
    model = plan.model
    if plan.world_size > 1:
        model = create_model(job.settings.name, plan.model_cfg)
        model.load_state_dict(plan.model.state_dict())
    return model.cpu().eval()


def _write_artifacts(job: TrainJob, data: _TrainData, plan: _RunPlan, model: torch.nn.Module, result: FitResult,
                     val_metrics: dict[str, Any]) -> dict[str, Path]:
    """``model.pt``, ``history.json``, ``val_metrics.json``, ``config.json`` and ``run_summary.json``."""
    out_dir = Path(job.out_dir)
    files: dict[str, Path] = {}
    files["model"] = write_model_file(out_dir / MODEL_FILE, ModelFile(
        arch=job.settings.name, model_config=plan.resolved_model, state_dict=model.state_dict(),
        class_names=job.class_names or [str(k) for k in range(data.num_classes)],
        features_stats=_model_file_stats(data.train_split, data.train_ds), best_epoch=result.best_epoch))
    files["history"] = atomic.write_json(out_dir / "history.json", result.history)
    files["val_metrics"] = atomic.write_json(out_dir / "val_metrics.json", val_metrics)
    files["config"] = atomic.write_json(out_dir / "config.json", plan.resolved)
    files["run_summary"] = atomic.write_json(out_dir / "run_summary.json", {
        "display_name": plan.resolved["display_name"], "n_params": int(sum(p.numel() for p in model.parameters())),
        "device": result.device, "train_seconds": float(sum(r.get("seconds", 0.0) for r in result.history)),
        "epochs_run": len(result.history), "epochs_configured": int(plan.train_cfg.epochs),
        "best_epoch": int(result.best_epoch), "stopped_early": bool(result.stopped_early)})
    return files


def _model_file_stats(train_split, train_ds: SpectrogramDataset) -> dict[str, Any]:
    """The features' stats plus the shortest cycle the model trained on (predict warns below it)."""
    stats = dict(getattr(train_split, "stats", None) or {})
    index = train_split.index
    if {"start_s", "end_s"} <= set(index.columns) and len(train_ds):
        durations = (index["end_s"] - index["start_s"]).to_numpy()[train_ds.indices]
        stats[SHORTEST_TRAIN_CYCLE_KEY] = round(float(durations.min()), 6)
    return stats


def _predict(placement: SingleProcess, model, test_split, train_cfg) -> np.ndarray:
    """Test probabilities in row order, from every rank of a distributed run."""
    dataset = SpectrogramDataset(test_split.x, test_split.index["label"].to_numpy())
    loader = placement.eval_loader(dataset, train_cfg)
    return placement.gather(predict_loader(model, loader, placement.device, train_cfg.amp))


def _score_test(job: TrainJob, probs: np.ndarray, test_split, num_classes: int):
    idx = test_split.index
    labels = idx["label"].to_numpy()
    pred_path = Path(job.out_dir) / "predictions.csv"
    write_predictions(pred_path, idx["recording"].to_numpy(), idx["cycle"].to_numpy(), idx["patient"].to_numpy(),
                      labels, probs)
    preds = probs.argmax(1)
    names = job.class_names or [str(i) for i in range(num_classes)]
    metrics = score_test_predictions(labels, preds, idx["patient"].to_numpy(), task=job.metric_task,
                                     class_names=names, n_boot=job.n_boot, seed=job.seed)
    png = plot_confusion(np.asarray(metrics["confusion"]), names,
                         Path(job.out_dir) / "confusion.png", title=f"{display_name_of(job)}: test")
    atomic.write_json(Path(job.out_dir) / "test_metrics.json", metrics)
    return metrics, pred_path, png


def display_name_of(job: TrainJob) -> str:
    """The architecture named with its preset, e.g. ``resnet50 (small preset: layers 1-1-1-1, …)``."""
    return display_name(job.settings.name, job.settings.model)


class _NoRun:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def run_name_of(job: TrainJob) -> str:
    """The MLflow run name, e.g. ``cnn6[small]-official-seed0`` (trials: given by the tuner)."""
    return job.run_name or f"{job.settings.name}[{job.settings.model.get('preset', 'small')}]-{job.fold}-seed{job.seed}"


def logged_model_name(job: TrainJob) -> str:
    """The LoggedModel's name: dataset and run name in the characters MLflow allows in names."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", f"{job.dataset}-{run_name_of(job)}").strip("-")


def hashed_params(resolved: dict[str, Any]) -> dict[str, Any]:
    """What the params hash covers: the resolved config without the features folder's location
    (a `dvc exp run --temp` copy or a moved checkout trains the same run)."""
    return {**resolved, "features": {k: v for k, v in resolved["features"].items() if k != "dir"}}


def _tracking_context(job: TrainJob, resolved: dict[str, Any]):
    if not job.tracking_uri:
        return _NoRun()
    digest = params_hash(hashed_params(resolved))
    stage = job.tags.get("dvc_stage") or ("tune" if job.parent_run_id or "optuna_trial" in job.tags else "train")
    tags = {"architecture": job.settings.name, "dataset": job.dataset, "fold": job.fold, "seed": str(job.seed),
            "device": describe(pick_device(job.settings.train.device)), **provenance_tags(),
            "params_hash": digest, "selection": job.settings.split.selection,
            "model_preset": str(job.settings.model.get("preset", "small")), "model_summary": display_name_of(job),
            **job.tags}
    name = run_name_of(job)
    return start_run(job.tracking_uri, job.experiment, name, params=resolved, tags=tags, nested=job.nested,
                     parent_run_id=job.parent_run_id, key=run_key(stage, job.settings.name, job.fold, job.seed, digest),
                     resume_dir=job.checkpoint_dir, resuming=_has_checkpoint(job.checkpoint_dir), system_metrics=True,
                     finished_on=tuple(job.run_finished_on))


def _has_checkpoint(checkpoint_dir: Path | None) -> bool:
    return checkpoint_dir is not None and (Path(checkpoint_dir) / checkpoint.LAST).is_file()


def _log_run_outputs(job: TrainJob, result: FitResult, val_metrics, test_metrics, files: dict[str, Path]) -> None:
    # The model before the final metrics: MLflow links the run's step-0 metrics to a LoggedModel,
    # those logged before it by reading each one's history (a query per metric name, ~100 test_*
    # names), those logged after it (at step 0, as these are) directly. Same links, fewer queries.
    log_audio_model(files["model"], name=logged_model_name(job))
    mlflow.log_metrics({"best_epoch": float(result.best_epoch), **scalar_metrics(val_metrics, "best_val_")})
    if test_metrics:
        mlflow.log_metrics(scalar_metrics(test_metrics, "test_"))
    for path in files.values():
        if path is not None and Path(path).exists():
            mlflow.log_artifact(str(path))
    mlflow.set_tag("stopped_early", str(result.stopped_early))
    if result.resumed_from_epoch is not None:
        mlflow.set_tag("resumed_from_epoch", str(result.resumed_from_epoch))
    log.info("logged run %s", json.dumps({"best_epoch": result.best_epoch, "best": result.best_value}))
