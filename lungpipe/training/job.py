"""One training job: features → model → fit → test predictions → files and an MLflow run.

Used by the train stage (one job per architecture, fold and seed) and by the tuning objective
(one job per trial, test split untouched). Outputs in ``out_dir``:

- ``model.pt``: best weights + architecture name + resolved model config (what `predict` loads),
- ``predictions.csv``: test predictions in the shared predictions format,
- ``history.json``: per-epoch records; ``val_metrics.json``: the selected epoch's validation metrics,
- ``config.json``: the resolved configuration of the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lungpipe import atomic
from lungpipe.config import to_dict
from lungpipe.models import create_model, resolve_config
from lungpipe.settings import ArchSettings
from lungpipe.training import checkpoint
from lungpipe.training.data import SpectrogramDataset, split_by_patient
from lungpipe.training.engine import EpochCallback, FitResult, fit, predict_proba, run_signature

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


@dataclass
class TrainJobResult:
    fit: FitResult
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None
    run_id: str | None
    out_dir: Path


def _evaluator(task: str, num_classes: int):
    from lungpipe.metrics import compute_metrics, scalar_metric_keys

    def evaluate(labels: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
        m = compute_metrics(labels, probs.argmax(1), task=task, num_classes=num_classes)
        return {k: m[k] for k in scalar_metric_keys(m)}

    return evaluate


def load_model(path: Path) -> torch.nn.Module:
    """Rebuild a model saved by :func:`run_training` (``model.pt``)."""
    saved = checkpoint.load(path)  # tensors and plain data only: a model file may come from anyone
    model = create_model(saved["arch"], saved["model_config"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def run_training(job: TrainJob) -> TrainJobResult:
    from lungpipe.features import load_split

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

    model_cfg = {**s.model, "num_classes": num_classes, "n_frames": int(n_frames), "n_mels": int(n_mels)}
    resolved_model = to_dict(resolve_config(s.name, model_cfg))
    from dataclasses import replace

    from lungpipe.metrics import resolve_metric

    train_cfg = replace(s.train, seed=job.seed,
                        selection_metric=resolve_metric(s.train.selection_metric, job.metric_task,
                                                        f"{s.name}: train.selection_metric"))
    torch.manual_seed(job.seed)
    model = create_model(s.name, model_cfg)
    resolved = {
        "arch": s.name, "display_name": display_name_of(job), "frontend": s.frontend, "fold": job.fold,
        "seed": job.seed, "dataset": job.dataset,
        "model": resolved_model, "train": to_dict(train_cfg), "split": to_dict(s.split), "tuned": s.tuned,
        "selection": selection_note, "features": {"dir": str(job.features_dir), "n_frames": int(n_frames),
                                                   "n_mels": int(n_mels)},
    }
    signature = run_signature(resolved, sorted(train_split.stats.items()) if hasattr(train_split, "stats") else None)
    evaluate = _evaluator(job.metric_task, num_classes)
    out_dir = Path(job.out_dir)

    run_ctx, callbacks = _tracking_context(job, resolved), list(job.callbacks)
    with run_ctx as run:
        if run is not None:
            from lungpipe.tracking import EpochLogger

            callbacks.insert(0, EpochLogger())
        result = fit(
            model, train_ds, val_ds, train_cfg, num_classes=num_classes, evaluate=evaluate,
            checkpoint_dir=job.checkpoint_dir, signature=signature, callbacks=callbacks, progress=job.progress,
            description=f"{s.name} {job.fold} seed {job.seed}",
        )
        if result.best_state is not None:
            model.load_state_dict(result.best_state)
        model.cpu().eval()
        val_metrics = {k[4:]: v for k, v in result.history[result.best_epoch].items() if k.startswith("val_")} \
            if result.best_epoch >= 0 else {}
        test_metrics = None
        files: dict[str, Path] = {}
        with atomic.atomic_path(out_dir / "model.pt") as tmp:
            torch.save({"arch": s.name, "model_config": resolved_model, "state_dict": model.state_dict(),
                        "best_epoch": result.best_epoch, "class_names": job.class_names,
                        "features_stats": getattr(train_split, "stats", None)}, tmp)
        files["model"] = out_dir / "model.pt"
        files["history"] = atomic.write_json(out_dir / "history.json", result.history)
        files["val_metrics"] = atomic.write_json(out_dir / "val_metrics.json", val_metrics)
        files["config"] = atomic.write_json(out_dir / "config.json", resolved)
        files["run_summary"] = atomic.write_json(out_dir / "run_summary.json", {
            "display_name": resolved["display_name"], "n_params": int(sum(p.numel() for p in model.parameters())),
            "device": result.device, "train_seconds": float(sum(r.get("seconds", 0.0) for r in result.history)),
            "epochs_run": len(result.history), "epochs_configured": int(train_cfg.epochs),
            "best_epoch": int(result.best_epoch), "stopped_early": bool(result.stopped_early)})
        if job.score_test:
            test_metrics, pred_path, png = _score_test(job, model, test_split, num_classes, train_cfg)
            files["predictions"] = pred_path
            files["confusion"] = png
        if run is not None:
            _log_run_outputs(result, val_metrics, test_metrics, files, model, val_ds)
    return TrainJobResult(result, val_metrics, test_metrics, run.info.run_id if run is not None else None, out_dir)


def _score_test(job: TrainJob, model, test_split, num_classes: int, train_cfg):
    from lungpipe.evaluation import score_test_predictions
    from lungpipe.plots import plot_confusion
    from lungpipe.predictions import write_predictions

    idx = test_split.index
    labels = idx["label"].to_numpy()
    probs = predict_proba(model, SpectrogramDataset(test_split.x, labels), batch_size=train_cfg.eval_batch_size,
                          device="cpu" if not torch.cuda.is_available() else "cuda", amp=train_cfg.amp)
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
    from lungpipe.naming import display_name

    return display_name(job.settings.name, job.settings.model)


class _NoRun:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _tracking_context(job: TrainJob, resolved: dict[str, Any]):
    if not job.tracking_uri:
        return _NoRun()
    from lungpipe.tracking import git_commit, start_run
    from lungpipe.training.device import describe, pick_device

    tags = {"architecture": job.settings.name, "dataset": job.dataset, "fold": job.fold, "seed": str(job.seed),
            "device": describe(pick_device(job.settings.train.device)), "git_commit": git_commit(),
            "selection": job.settings.split.selection, "model_preset": str(job.settings.model.get("preset", "small")),
            "model_summary": display_name_of(job), **job.tags}
    name = job.run_name or f"{job.settings.name}[{tags['model_preset']}]-{job.fold}-seed{job.seed}"
    return start_run(job.tracking_uri, job.experiment, name, params=resolved, tags=tags, nested=job.nested,
                     parent_run_id=job.parent_run_id)


def _log_run_outputs(result: FitResult, val_metrics, test_metrics, files: dict[str, Path], model, val_ds) -> None:
    import mlflow

    from lungpipe.tracking import log_model, scalar_metrics

    mlflow.log_metrics({"best_epoch": float(result.best_epoch), **scalar_metrics(val_metrics, "best_val_")})
    if test_metrics:
        mlflow.log_metrics(scalar_metrics(test_metrics, "test_"))
    for path in files.values():
        if path is not None and Path(path).exists():
            mlflow.log_artifact(str(path))
    example = np.stack([val_ds[i][0].numpy() for i in range(min(2, len(val_ds)))])
    log_model(model, example)
    mlflow.set_tag("stopped_early", str(result.stopped_early))
    if result.resumed_from_epoch is not None:
        mlflow.set_tag("resumed_from_epoch", str(result.resumed_from_epoch))
    log.info("logged run %s", json.dumps({"best_epoch": result.best_epoch, "best": result.best_value}))
