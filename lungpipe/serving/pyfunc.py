"""The logged MLflow model: audio in, class probabilities per window out.

:class:`AudioClassifier` is an MLflow pyfunc whose only artifact is the training's ``model.pt``
(read by :func:`lungpipe.inference.model_file.read_model_file`, so no pickle is involved); features are
computed by :mod:`lungpipe.inference.predict`, i.e. by the preprocessing frontend and the training
normalisation recorded in that file. It is logged as a "model from code"
(:mod:`lungpipe.serving.model_code`), so ``mlflow models serve --env-manager local`` works
wherever lungpipe is installed.

Input: a DataFrame (or records) with, per recording, either ``path`` (a WAV/FLAC file readable by
the server) or ``waveform`` (samples, floats in [-1, 1]) with ``sample_rate``. Param ``window_s``
(default 4 s): the recording is cut into consecutive windows of that length, as
``lungpipe predict`` does without annotations. Output: one row per window with ``input`` (row
number of the recording), ``segment``, ``start_s``, ``end_s``, ``predicted`` and one
``prob_<class>`` column per class.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

from lungpipe.features.audio import read_audio
from lungpipe.inference.model_file import MODEL_FILE, ModelLoadError, read_model_file
from lungpipe.inference.predict import predict_waveform, predictor_from_model_file, window_segments
from lungpipe.tracking import check_tracking_server
from lungpipe.util.errors import DataError

DEFAULT_WINDOW_S = 4.0
MODEL_CODE = Path(__file__).with_name("model_code.py")
ARTIFACT_KEY = "model"
#: What a logged model needs besides lungpipe itself (pinned to the versions that logged it).
REQUIREMENTS = ("torch", "torchaudio", "numpy", "pandas", "soundfile", "mlflow")


def prob_column(name: str) -> str:
    return f"prob_{name}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _recording(row: dict[str, Any], i: int) -> tuple[np.ndarray, int, str]:
    """The waveform and sample rate of one input row."""
    path, wave = row.get("path"), row.get("waveform")
    if not _missing(path) and str(path):
        return (*read_audio(Path(str(path))), str(path))
    if wave is None or (not isinstance(wave, (list, tuple, np.ndarray)) and _missing(wave)):
        raise DataError(f"input row {i}: give either 'path' (an audio file) or 'waveform' with 'sample_rate'")
    if _missing(row.get("sample_rate")):
        raise DataError(f"input row {i}: 'waveform' needs its 'sample_rate' (Hz)")
    return np.asarray(wave, dtype=np.float32), int(row["sample_rate"]), f"input row {i}"


class AudioClassifier(mlflow.pyfunc.PythonModel):
    """Class probabilities per window of each input recording (see the module docstring)."""

    def load_context(self, context) -> None:
        path = context.artifacts[ARTIFACT_KEY]
        self.predictor = predictor_from_model_file(read_model_file(path), str(path))

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        window_s = float((params or {}).get("window_s") or DEFAULT_WINDOW_S)
        names = self.predictor.class_names
        rows = []
        for i, row in enumerate(frame.to_dict("records")):
            wave, sample_rate, where = _recording(row, i)
            segments = window_segments(len(wave) / sample_rate, window_s)
            probs = predict_waveform(self.predictor, wave, sample_rate, segments, where)
            for j, (segment, p) in enumerate(zip(segments, probs)):
                rows.append({"input": i, "segment": j, "start_s": segment.start_s, "end_s": segment.end_s,
                             "predicted": names[int(p.argmax())],
                             **{prob_column(n): float(v) for n, v in zip(names, p)}})
        return pd.DataFrame(rows, columns=["input", "segment", "start_s", "end_s", "predicted",
                                           *map(prob_column, names)])


def signature(class_names: list[str]):
    """Input/output schema of :class:`AudioClassifier` for a model with these classes."""
    inputs = Schema([ColSpec("string", "path", required=False), ColSpec(Array("double"), "waveform", required=False),
                     ColSpec("double", "sample_rate", required=False)])  # double: may be missing (NaN)
    outputs = Schema([ColSpec("long", "input"), ColSpec("long", "segment"), ColSpec("double", "start_s"),
                      ColSpec("double", "end_s"), ColSpec("string", "predicted"),
                      *(ColSpec("double", prob_column(n)) for n in class_names)])
    return ModelSignature(inputs=inputs, outputs=outputs,
                          params=ParamSchema([ParamSpec("window_s", "double", DEFAULT_WINDOW_S)]))


def requirements() -> list[str]:
    out = []
    for dist in REQUIREMENTS:
        try:
            out.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            out.append(dist)
    return out


def log_audio_model(model_file: str | os.PathLike, name: str) -> str:
    """Log ``model_file`` as an :class:`AudioClassifier` LoggedModel called ``name`` in the active
    run; returns its model id (load it as ``models:/<model id>``)."""
    saved = read_model_file(model_file)
    with quiet_mlflow(), warnings.catch_warnings():
        # the signature is given; an input example would need a recording at logging time
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name=name, python_model=str(MODEL_CODE), artifacts={ARTIFACT_KEY: str(model_file)},
            signature=signature(saved.class_names), pip_requirements=requirements(),
            metadata={"lungpipe_arch": saved.arch, "class_names": saved.class_names},
        )
    return info.model_id


@contextlib.contextmanager
def quiet_mlflow():
    """No artifact-transfer progress bars from MLflow (they break stage logs) while inside."""
    name = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def download_model_file(uri: str, tracking_uri: str, dst: Path) -> Path:
    """Download the ``model.pt`` of a logged or registered model (``models:/…``) into ``dst``."""
    check_tracking_server(tracking_uri)
    try:
        with quiet_mlflow():
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri.rstrip("/"), dst_path=str(dst),
                                                             tracking_uri=tracking_uri, registry_uri=tracking_uri))
    except MlflowException as exc:
        raise ModelLoadError(f"{uri} at {tracking_uri}: {exc.message}") from None
    found = local / "artifacts" / MODEL_FILE
    if not found.is_file():
        raise ModelLoadError(f"{uri}: not a lungpipe audio model (no artifacts/{MODEL_FILE} in it); log it with "
                             "lungpipe's training or pass a model.pt")
    return found
