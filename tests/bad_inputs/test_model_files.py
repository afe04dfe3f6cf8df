"""Bad model files: a crafted pickle must never run, whatever door it comes through.

| input                                              | expected message fragment             |
|----------------------------------------------------|---------------------------------------|
| torch.save of an object whose pickle calls os.system | "<file>: refused" + "posix.system"   |
| a plain pickle (protocol 2 / 4) calling os.system  | "<file>: refused" (+ the global if named) |
| the crafted model.pt as an MLflow run's artifact   | "model.pt: refused" (downloaded copy)  |
| a truncated model.pt                               | "<file>: cannot read the model file"   |
| a torch file that is not a lungpipe model          | "not a lungpipe model file"            |
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lungpipe.inference.model_file import ModelLoadError, read_model_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ helpers (mlflow_store)


class _Payload:
    """Unpickling this calls os.system("touch <marker>")."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _torch_pickle(path: Path, marker: Path) -> Path:
    torch.save({"arch": "cnn6", "model_config": {}, "state_dict": {"w": torch.zeros(2)}, "x": _Payload(marker)}, path)
    return path


def _plain_pickle(protocol: int):
    def make(path: Path, marker: Path) -> Path:
        path.write_bytes(pickle.dumps({"arch": "cnn6", "payload": _Payload(marker)}, protocol=protocol))
        return path

    return make


@pytest.mark.parametrize(("make", "named"), [(_torch_pickle, "posix.system"), (_plain_pickle(2), "posix.system"),
                                             (_plain_pickle(4), "Python objects other than tensors")],
                         ids=["torch.save", "pickle-protocol-2", "pickle-protocol-4"])
def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path, make, named):
    marker = tmp_path / "pwned"
    model = make(tmp_path / "model.pt", marker)
    with pytest.raises(ModelLoadError) as info:
        read_model_file(model)
    assert f"{model}: refused" in str(info.value) and named in str(info.value)
    assert not marker.exists()


def test_predict_cli_refuses_a_crafted_model_file(tmp_path):
    from lungpipe.cli import app

    marker = tmp_path / "pwned"
    model = _torch_pickle(tmp_path / "model.pt", marker)
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")  # never read: the model is refused first
    result = CliRunner().invoke(app, ["predict", str(wav), "--model", str(model)], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "error:" in result.output and str(model) in result.output and "refused" in result.output
    assert "Traceback" not in result.output
    assert not marker.exists()


def test_a_crafted_model_in_an_mlflow_run_is_refused(tmp_path):
    from mlflow import MlflowClient
    from mlflow_store import fresh_db

    from lungpipe.inference.predict import load_predictor

    marker = tmp_path / "pwned"
    uri = fresh_db(tmp_path / "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("lungpipe-synth", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(exp).info.run_id
    client.log_artifact(run_id, str(_torch_pickle(tmp_path / "model.pt", marker)))
    with pytest.raises(ModelLoadError, match=r"model\.pt: refused"):
        load_predictor(run_id, uri)
    assert not marker.exists()


def test_damaged_and_foreign_files_are_named(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, good)
    with pytest.raises(ModelLoadError, match="not a lungpipe model file"):
        read_model_file(good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:50])
    with pytest.raises(ModelLoadError, match=rf"{cut}: cannot read the model file"):
        read_model_file(cut)
