"""The audio-in MLflow model: logged by training's code path, registered as the champion of its
architecture, loaded by `lungpipe predict --model models:/<name>@champion`, and served by a real
`mlflow models serve --env-manager local` that answers a POSTed recording with the same
probabilities as `lungpipe predict`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow_store import fresh_db
from servers import free_port, stop_process_group, wait_for_http
from test_predict import CLASSES, TEST, trained  # noqa: F401 - the real-preprocess model fixture
from typer.testing import CliRunner

from lungpipe.features.audio import read_audio
from lungpipe.inference.predict import load_predictor, predict_recording
from lungpipe.serving.champion import register_champion, registered_name
from lungpipe.serving.pyfunc import log_audio_model, prob_column
from lungpipe.tracking import setup, write_run_file

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "lungpipe-icbhi_synth"


@pytest.fixture(scope="module")
def registry(trained, tmp_path_factory):  # noqa: F811
    """Two seeds' run folders (validation scores 0.4 and 0.7), each with an MLflow run that logged
    the audio model; the better one registered as champion."""
    import mlflow

    root = tmp_path_factory.mktemp("registry")
    uri = fresh_db(root / "mlflow.db")
    mlflow.MlflowClient(uri).create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    before = mlflow.get_tracking_uri()
    setup(uri, EXPERIMENT)
    run_dirs = []
    for seed, val in ((0, 0.4), (1, 0.7)):
        run_dir = root / "models" / "cnn6" / "official" / f"seed{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "val_metrics.json").write_text(json.dumps({"score": val, "sp": 0.5}))
        with mlflow.start_run(run_name=f"cnn6-official-seed{seed}") as run:
            log_audio_model(trained["dir"] / "model.pt", name=f"icbhi_synth-cnn6-official-seed{seed}")
        write_run_file(run_dir, run, uri)
        run_dirs.append(run_dir)
    champion = register_champion("icbhi_synth", "cnn6", run_dirs, "score")
    again = register_champion("icbhi_synth", "cnn6", run_dirs, "score")
    yield {"uri": uri, "champion": champion, "again": again, "run_dirs": run_dirs, "root": root}
    mlflow.set_tracking_uri(before)


def test_the_best_validation_seed_is_the_champion_and_re_registering_adds_no_version(registry):
    from mlflow import MlflowClient

    champion = registry["champion"]
    assert champion.name == registered_name("icbhi_synth", "cnn6") == "lungpipe-icbhi_synth-cnn6"
    assert champion.run_dir == registry["run_dirs"][1] and champion.val_value == 0.7
    assert champion.uri == "models:/lungpipe-icbhi_synth-cnn6@champion"
    assert registry["again"].version == champion.version == "1"
    client = MlflowClient(registry["uri"])
    version = client.get_model_version_by_alias(champion.name, "champion")
    assert version.run_id == json.loads((registry["run_dirs"][1] / "mlflow_run.json").read_text())["run_id"]
    assert len(client.search_model_versions(f"name = '{champion.name}'")) == 1


def test_predict_accepts_a_registered_model(registry, trained):  # noqa: F811
    from lungpipe.cli import app

    wav = trained["raw"] / f"{TEST}.wav"
    uri = registry["champion"].uri
    predictor = load_predictor(uri, registry["uri"])
    assert predictor.source == uri and predictor.class_names == CLASSES
    np.testing.assert_allclose(predict_recording(predictor, wav, window_s=2.0).probs,
                               predict_recording(load_predictor(trained["dir"]), wav, window_s=2.0).probs, atol=1e-6)
    out = registry["root"] / "pred.csv"
    result = CliRunner().invoke(app, ["predict", str(wav), "--model", uri, "--tracking-uri", registry["uri"],
                                      "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert out.is_file()
    missing = CliRunner().invoke(app, ["predict", str(wav), "--model", "models:/lungpipe-nothing@champion",
                                       "--tracking-uri", registry["uri"]], env={"COLUMNS": "300"})
    assert missing.exit_code == 1 and "models:/lungpipe-nothing@champion" in missing.output


def test_the_pyfunc_takes_a_waveform_or_a_path(registry, trained):  # noqa: F811
    import mlflow

    wav = trained["raw"] / f"{TEST}.wav"
    wave, sr = read_audio(wav)
    model = mlflow.pyfunc.load_model(registry["champion"].uri)
    out = model.predict(pd.DataFrame({"waveform": [wave.tolist(), None], "sample_rate": [sr, None],
                                      "path": [None, str(wav)]}), params={"window_s": 2.0})
    expected = predict_recording(load_predictor(trained["dir"]), wav, window_s=2.0)
    probs = out[[prob_column(n) for n in CLASSES]].to_numpy()
    n = len(expected.segments)
    assert out["input"].tolist() == [0] * n + [1] * n and out["segment"].tolist() == list(range(n)) * 2
    np.testing.assert_allclose(probs[:n], expected.probs, atol=1e-6)
    np.testing.assert_allclose(probs[n:], expected.probs, atol=1e-6)
    assert out["predicted"].tolist()[:n] == [CLASSES[k] for k in expected.preds]


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_posted_recording_like_predict(registry, trained, tmp_path):  # noqa: F811
    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - open for the server's whole life
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry["uri"], "PYTHONPATH": f"{REPO}{os.pathsep}"
           f"{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", registry["champion"].uri, "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/ping", proc, log, timeout=120, what="mlflow models serve did not start")
        wav = trained["raw"] / f"{TEST}.wav"
        wave, sr = read_audio(wav)
        body = json.dumps({"dataframe_records": [{"waveform": wave.astype(float).tolist(), "sample_rate": sr}],
                           "params": {"window_s": 2.0}}).encode()
        request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            answer = json.loads(resp.read())
    finally:
        stop_process_group(proc, grace=10)
        log.close()
    rows = pd.DataFrame(answer["predictions"])
    expected = predict_recording(load_predictor(trained["dir"]), wav, window_s=2.0)
    np.testing.assert_allclose(rows[[prob_column(n) for n in CLASSES]].to_numpy(), expected.probs, atol=1e-5)
    assert rows["start_s"].tolist() == [s.start_s for s in expected.segments]
