"""Inference on one recording with a model trained by :func:`lungpipe.training.job.run_training`.

The model comes from a ``model.pt`` file (or the training output folder holding it), an MLflow run
id, or a logged/registered MLflow model (``models:/<name>@<alias>``); in every case the
``model.pt`` is read by :func:`lungpipe.inference.model_file.read_model_file` (tensors and plain data only,
never unpickled code). It carries the architecture, the resolved model config, the class names,
the weights and the ``stats.json`` of the features folder the model was trained on; those stats hold the cycle,
frontend and normalisation settings, so a recording is turned into features by the very code
path preprocessing used (:func:`lungpipe.features.extract.features_for_recording`, then
:func:`lungpipe.features.normalise`).

The recording is cut into segments: the cycles of an ICBHI annotation file when one is given
(their true labels then fill the ``label`` column), else consecutive fixed windows (labels left
empty, the predictions CSV's "unlabelled" convention).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from lungpipe.data.annotations import load_annotations
from lungpipe.data.names import try_parse_name
from lungpipe.evaluation.predictions import write_predictions
from lungpipe.features import config_from_stats, normalise
from lungpipe.features.audio import read_audio
from lungpipe.features.extract import features_for_recording
from lungpipe.inference.model_file import MODEL_FILE, ModelFile, ModelLoadError, build_model, read_model_file
from lungpipe.tracking import check_tracking_server, resolve_tracking_uri
from lungpipe.training.data import SpectrogramDataset
from lungpipe.training.engine import predict_proba
from lungpipe.util.errors import DataError
from lungpipe.util.typed_config import ConfigError

log = logging.getLogger(__name__)

__all__ = ["MODEL_FILE", "ModelLoadError", "Predictor", "Segment", "load_predictor", "predict_recording"]
#: A trailing fixed window shorter than this is dropped (unless it is the only one).
MIN_WINDOW_S = 0.5
#: Key of a model file's features stats: the shortest training cycle in seconds (written by training).
SHORTEST_TRAIN_CYCLE_KEY = "shortest_train_cycle_s"


@dataclass(frozen=True)
class Segment:
    """A stretch of the recording to classify; ``label`` is the true class when known."""

    start_s: float
    end_s: float
    label: int | None = None


@dataclass
class Predictor:
    """A model ready for inference with everything needed to compute its input features."""

    model: Any  # torch.nn.Module, in eval mode on the CPU
    arch: str
    stats: dict[str, Any]
    preprocess: Any  # lungpipe.features.PreprocessConfig
    class_names: list[str]
    n_frames: int
    n_mels: int
    source: str  # where the model came from (path or run id), for messages


@dataclass
class RecordingPrediction:
    """Per-segment probabilities of one recording."""

    recording: str
    patient: str
    segments: list[Segment]
    probs: np.ndarray  # (n_segments, K)
    class_names: list[str]

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


# ------------------------------------------------------------------------------- loading models
def preprocess_config_from_stats(stats: Mapping[str, Any] | None, where: str):
    """The :class:`~lungpipe.features.PreprocessConfig` recorded in a features folder's stats."""
    if not stats or not stats.get("cycle") or not stats.get("frontend"):
        raise ModelLoadError(
            f"{where}: the saved features stats hold no cycle/frontend settings, so the recording's "
            "features cannot be computed as in training. Re-train with a features folder written by "
            "the preprocess stage (its stats.json records them)."
        )
    try:
        return config_from_stats(dict(stats))
    except (ConfigError, KeyError) as exc:
        raise ModelLoadError(f"{where}: {exc}") from None


def predictor_from_model_file(saved: ModelFile, source: str) -> Predictor:
    """A :class:`Predictor` from the contents of a model file (read by :func:`read_model_file`)."""
    cfg = saved.model_config
    return Predictor(
        model=build_model(saved, source), arch=saved.arch, stats=dict(saved.features_stats),
        preprocess=preprocess_config_from_stats(saved.features_stats, source), class_names=list(saved.class_names),
        n_frames=int(cfg["n_frames"]), n_mels=int(cfg["n_mels"]), source=source,
    )


def predictor_from_checkpoint(path: str | os.PathLike) -> Predictor:
    """Load ``model.pt`` (or the folder holding it) written by ``run_training``."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    return predictor_from_model_file(read_model_file(path), str(path))


def predictor_from_run(run_id: str, tracking_uri: str) -> Predictor:
    """The ``model.pt`` artifact of an MLflow run (downloaded to a temporary folder)."""
    check_tracking_server(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        names = {f.path for f in client.list_artifacts(run_id)}
    except MlflowException as exc:
        raise ModelLoadError(f"MLflow run {run_id!r} at {tracking_uri}: {exc.message}") from None
    if MODEL_FILE not in names:
        raise ModelLoadError(
            f"MLflow run {run_id} logged no {MODEL_FILE} artifact (it has: {sorted(names) or 'none'}), so "
            "the features statistics the model needs are unknown. Pass the run's training folder "
            "(models/<arch>/<fold>/seed<k>/) or its model.pt instead."
        )
    with tempfile.TemporaryDirectory(prefix="lungpipe-predict-") as tmp:
        local = Path(client.download_artifacts(run_id, MODEL_FILE, tmp))
        saved = read_model_file(local)
    return predictor_from_model_file(saved, f"MLflow run {run_id}")


def predictor_from_model_uri(uri: str, tracking_uri: str) -> Predictor:
    """A logged or registered MLflow model (``models:/<name>@<alias>``, ``models:/<name>/<version>``,
    ``models:/<model id>``): its ``model.pt`` artifact is downloaded and read as a model file; the
    MLflow model itself (its Python code) is never loaded."""
    from lungpipe.serving.pyfunc import download_model_file  # circular: serving.pyfunc imports this module

    with tempfile.TemporaryDirectory(prefix="lungpipe-predict-") as tmp:
        saved = read_model_file(download_model_file(uri, tracking_uri, Path(tmp)))
    return predictor_from_model_file(saved, uri)


def looks_like_run_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text.lower())


def load_predictor(model: str | os.PathLike, tracking_uri: str | None = None) -> Predictor:
    """A path to ``model.pt`` (or its folder), a ``models:/`` URI, else an MLflow run id."""
    text = str(model)
    path = Path(model)
    if text.startswith("models:/") or looks_like_run_id(text) and not path.exists():
        uri = tracking_uri or resolve_tracking_uri()
        return predictor_from_model_uri(text, uri) if text.startswith("models:/") else predictor_from_run(text, uri)
    return predictor_from_checkpoint(path)


# ------------------------------------------------------------------------------------ segments
def annotation_segments(path: str | os.PathLike) -> list[Segment]:
    """The cycles of an ICBHI annotation file, with their 4-class labels."""
    return [Segment(c.start, c.end, c.label) for c in load_annotations(Path(path))]


def window_segments(duration_s: float, window_s: float, min_window_s: float = MIN_WINDOW_S) -> list[Segment]:
    """Consecutive windows ``[k·w, min((k+1)·w, duration))``; a last window shorter than
    ``min_window_s`` is dropped unless it is the only one."""
    if window_s <= 0:
        raise ValueError(f"window length must be positive, got {window_s}")
    if duration_s <= 0:
        raise ValueError("the recording is empty")
    n = int(np.ceil(duration_s / window_s - 1e-9))
    out = [Segment(k * window_s, min((k + 1) * window_s, duration_s)) for k in range(n)]
    if len(out) > 1 and out[-1].end_s - out[-1].start_s < min(min_window_s, window_s):
        out.pop()
    return out


def patient_of(recording: str) -> str:
    """The patient number of an ICBHI recording name, else the recording name itself."""
    parsed = try_parse_name(recording)
    return str(parsed.patient) if parsed is not None else recording


# ----------------------------------------------------------------------------------- inference
def segment_features(predictor: Predictor, wave: np.ndarray, sample_rate: int, segments: Sequence[Segment],
                     where: str) -> np.ndarray:
    """Normalised (n_segments, frames, mels) features, computed exactly as preprocessing does."""
    spans = [(s.start_s, s.end_s) for s in segments]
    labels = [f"{where}: segment {i} ({s.start_s:g}-{s.end_s:g} s)" for i, s in enumerate(segments)]
    x = features_for_recording(wave, sample_rate, spans, predictor.preprocess, labels).numpy()
    x = normalise(x, predictor.stats) if predictor.stats.get("mean") is not None else x
    if x.shape[1:] != (predictor.n_frames, predictor.n_mels):
        raise DataError(
            f"{where}: features of shape {x.shape[1:]} (frames, mels) but {predictor.source} expects "
            f"{(predictor.n_frames, predictor.n_mels)}; the model's saved frontend settings do not "
            "reproduce its input shape."
        )
    return x


def segment_probabilities(predictor: Predictor, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Softmax probabilities (N, K) of the model on features ``x`` (N, frames, mels), by the
    training engine's :func:`~lungpipe.training.engine.predict_proba` on the CPU."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    dataset = SpectrogramDataset(x, np.zeros(len(x), dtype=np.int64))
    return predict_proba(predictor.model, dataset, batch_size=batch_size, device="cpu", amp="off").astype(np.float64)


def check_waveform(predictor: Predictor, wave: np.ndarray, segments: Sequence[Segment], where: str) -> None:
    """Refuse a waveform with NaN/inf samples (naming the first offset); warn for every segment
    shorter than the shortest cycle the model was trained on (its prediction is extrapolation)."""
    finite = np.isfinite(np.asarray(wave))
    if not finite.all():
        offset = int(np.flatnonzero(~finite.reshape(-1))[0])
        raise DataError(f"{where}: non-finite sample ({np.asarray(wave).reshape(-1)[offset]}) at sample offset "
                        f"{offset}; the recording is damaged, so no prediction is made.")
    shortest = predictor.stats.get(SHORTEST_TRAIN_CYCLE_KEY)
    if shortest:
        short = [s for s in segments if s.end_s - s.start_s < float(shortest)]
        if short:
            log.warning("%s: %d segment(s) shorter than the shortest training cycle of %s (%.3f s), e.g. "
                        "%.3f-%.3f s: the model never saw such short input; treat those predictions with care",
                        where, len(short), predictor.source, float(shortest), short[0].start_s, short[0].end_s)


def predict_waveform(predictor: Predictor, wave: np.ndarray, sample_rate: int, segments: Sequence[Segment],
                     where: str) -> np.ndarray:
    """Probabilities (n_segments, K) of the segments of one waveform (the MLflow model calls this too)."""
    check_waveform(predictor, wave, segments, where)
    return segment_probabilities(predictor, segment_features(predictor, wave, sample_rate, segments, where))


def predict_recording(predictor: Predictor, wav: str | os.PathLike, *, annotations: str | os.PathLike | None = None,
                      window_s: float = 4.0) -> RecordingPrediction:
    """Classify every segment of the recording ``wav``."""
    wav = Path(wav)
    wave, sample_rate = read_audio(wav)
    if annotations is not None:
        segments = annotation_segments(annotations)
        if len(predictor.class_names) != 4:  # annotation labels are ICBHI's 4 classes
            segments = [Segment(s.start_s, s.end_s) for s in segments]
    else:
        segments = window_segments(len(wave) / sample_rate, window_s)
    probs = predict_waveform(predictor, wave, sample_rate, segments, str(wav))
    return RecordingPrediction(recording=wav.stem, patient=patient_of(wav.stem), segments=segments,
                               probs=probs, class_names=predictor.class_names)


def write_recording_predictions(result: RecordingPrediction, path: str | os.PathLike) -> Path:
    """The predictions CSV (shared format; unknown labels are empty cells)."""
    n = len(result.segments)
    return write_predictions(path, [result.recording] * n, np.arange(n), [result.patient] * n,
                             [s.label for s in result.segments], result.probs)
