"""`lungpipe predict`: features by the preprocessing code path, segments, the CSV, the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from lungpipe.data.synth_audio import render_recording
from lungpipe.data.synth_datasets import write_wav
from lungpipe.evaluation.predictions import read_predictions
from lungpipe.features import (
    CycleConfig,
    FrontendConfig,
    NormConfig,
    PreprocessConfig,
    load_split,
    preprocess,
)
from lungpipe.inference.model_file import ModelFile, read_model_file, write_model_file
from lungpipe.inference.predict import (
    ModelLoadError,
    Segment,
    load_predictor,
    predict_recording,
    predictor_from_run,
    segment_probabilities,
    window_segments,
    write_recording_predictions,
)
from lungpipe.models import create_model, resolve_config
from lungpipe.util.typed_config import to_dict

CLASSES = ["normal", "crackle", "wheeze", "both"]
TRAIN, TEST = "101_1b1_Al_sc_Meditron", "102_1b1_Ar_sc_Meditron"
# start, end, crackle, wheeze  → labels 0, 1, 2, 3
TEST_CYCLES = np.array([[0.2, 1.4, 0, 0], [1.5, 2.9, 1, 0], [3.0, 4.1, 0, 1], [4.2, 5.2, 1, 1]])
TRAIN_CYCLES = np.array([[0.1, 1.2, 0, 0], [1.3, 2.8, 1, 0], [3.0, 4.5, 0, 1], [4.6, 5.9, 0, 0]])
CFG = PreprocessConfig(cycle=CycleConfig(sample_rate=16000, max_len_s=1.0), frontend=FrontendConfig(n_mels=32),
                       norm=NormConfig(mode="train_stats"), workers=1)


def _recording(raw: Path, name: str, cycles: np.ndarray, duration: float, seed: int) -> Path:
    wave = render_recording(cycles, duration, 4000, np.random.default_rng(seed))
    write_wav(raw / f"{name}.wav", wave, 4000)
    (raw / f"{name}.txt").write_text("".join(f"{a:.3f}\t{b:.3f}\t{int(c)}\t{int(w)}\n" for a, b, c, w in cycles))
    return raw / f"{name}.wav"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A features folder made by the real preprocess step from two synthetic recordings, and a
    randomly initialised cnn6 saved as training saves it (model.pt with the folder's stats)."""
    root = tmp_path_factory.mktemp("predict")
    raw = root / "raw"
    raw.mkdir()
    _recording(raw, TRAIN, TRAIN_CYCLES, 6.0, 0)
    _recording(raw, TEST, TEST_CYCLES, 5.3, 1)
    rows = []
    for name, split, cycles in ((TRAIN, "train", TRAIN_CYCLES), (TEST, "test", TEST_CYCLES)):
        for i, (a, b, c, w) in enumerate(cycles):
            rows.append({"recording": name, "patient": int(name[:3]), "split": split, "cycle": i, "start_s": a,
                         "end_s": b, "label": int(c) + 2 * int(w), "path": f"{name}.wav"})
    features = root / "features"
    preprocess(pd.DataFrame(rows), raw, features, CFG, progress=False)
    split = load_split(features, "test")
    cfg = {"preset": "small", "num_classes": 4, "n_frames": split.x.shape[1], "n_mels": split.x.shape[2]}
    torch.manual_seed(0)
    model = create_model("cnn6", cfg).eval()
    out = root / "models" / "cnn6" / "official" / "seed0"
    out.mkdir(parents=True)
    write_model_file(out / "model.pt", ModelFile(
        arch="cnn6", model_config=to_dict(resolve_config("cnn6", cfg)), state_dict=model.state_dict(),
        class_names=CLASSES, features_stats=split.stats, best_epoch=0))
    return {"root": root, "raw": raw, "features": features, "split": split, "model": model, "dir": out}


def test_annotated_cycles_get_the_preprocessed_features_and_the_models_probabilities(trained):
    predictor = load_predictor(trained["dir"])
    assert predictor.arch == "cnn6" and predictor.class_names == CLASSES
    wav = trained["raw"] / f"{TEST}.wav"
    result = predict_recording(predictor, wav, annotations=trained["raw"] / f"{TEST}.txt")
    assert [s.label for s in result.segments] == [0, 1, 2, 3]
    assert [(s.start_s, s.end_s) for s in result.segments] == [tuple(c[:2]) for c in TEST_CYCLES]
    # the same rows the preprocess step wrote for this recording's cycles
    from lungpipe.features.audio import read_audio
    from lungpipe.inference.predict import segment_features

    wave, sr = read_audio(wav)
    x = segment_features(predictor, wave, sr, result.segments, "test")
    np.testing.assert_allclose(x, np.asarray(trained["split"].x), rtol=0, atol=1e-5)
    with torch.no_grad():
        expected = torch.softmax(trained["model"](torch.from_numpy(np.array(trained["split"].x))[:, None]), 1)
    np.testing.assert_allclose(result.probs, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(segment_probabilities(predictor, x), result.probs, atol=1e-6)


def test_predictions_csv_follows_the_shared_format(trained, tmp_path):
    predictor = load_predictor(trained["dir"] / "model.pt")
    wav = trained["raw"] / f"{TEST}.wav"
    labelled = write_recording_predictions(
        predict_recording(predictor, wav, annotations=trained["raw"] / f"{TEST}.txt"), tmp_path / "a.csv")
    back = read_predictions(labelled)
    assert back.labels.tolist() == [0, 1, 2, 3] and back.has_labels
    assert back.patients.tolist() == ["102"] * 4 and back.recordings.tolist() == [TEST] * 4
    windows = predict_recording(predictor, wav, window_s=2.0)
    back = read_predictions(write_recording_predictions(windows, tmp_path / "b.csv"))
    assert back.labels.tolist() == [-1, -1, -1] and back.cycles.tolist() == [0, 1, 2]
    assert (back.preds == windows.probs.argmax(1)).all()
    assert "label" in (tmp_path / "b.csv").read_text().splitlines()[0]
    assert (tmp_path / "b.csv").read_text().splitlines()[1].split(",")[3] == ""  # empty label cell


def test_fixed_windows_cover_the_recording():
    assert window_segments(5.3, 2.0) == [Segment(0.0, 2.0), Segment(2.0, 4.0), Segment(4.0, 5.3)]
    assert window_segments(4.2, 2.0) == [Segment(0.0, 2.0), Segment(2.0, 4.0)]  # 0.2 s tail dropped
    assert window_segments(0.3, 4.0) == [Segment(0.0, 0.3)]  # a short clip is still one window
    assert len(window_segments(8.0, 4.0)) == 2
    with pytest.raises(ValueError):
        window_segments(3.0, 0.0)


def test_cli_prints_a_table_and_writes_the_csv(trained, tmp_path):
    from lungpipe.cli import app

    out = tmp_path / "pred.csv"
    wav = trained["raw"] / f"{TEST}.wav"
    result = CliRunner().invoke(app, ["predict", str(wav), "--model", str(trained["dir"]), "--annotations",
                                      str(trained["raw"] / f"{TEST}.txt"), "--out", str(out)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "p(wheeze)" in result.output and "4.20–5.20" in result.output
    assert len(read_predictions(out)) == 4
    bad = CliRunner().invoke(app, ["predict", str(wav), "--model", str(tmp_path / "nothing.pt")])
    assert bad.exit_code == 1 and "no such model file" in bad.output


def test_the_same_model_gives_the_same_file_bytes_wherever_it_is_written(trained, tmp_path):
    # torch.save names the zip's inner folder after the file it writes; the model file must not
    # carry its (temporary) file name, or two checkouts would get different model.pt bytes.
    saved = read_model_file(trained["dir"] / "model.pt")
    a = write_model_file(tmp_path / "a" / "model.pt", saved)
    b = write_model_file(tmp_path / "b" / "other_name.pt", saved)
    assert a.read_bytes() == b.read_bytes() == (trained["dir"] / "model.pt").read_bytes()
    assert b"other_name" not in b.read_bytes()


def test_model_without_frontend_settings_is_refused(trained, tmp_path):
    saved = read_model_file(trained["dir"] / "model.pt")
    write_model_file(tmp_path / "model.pt", dataclasses.replace(
        saved, features_stats={"mean": 0.0, "std": 1.0, "norm_mode": "none", "cycle": {}, "frontend": {}}))
    with pytest.raises(ModelLoadError, match="cycle/frontend settings"):
        load_predictor(tmp_path / "model.pt")


def test_model_from_an_mlflow_run(trained, tmp_path):
    from mlflow import MlflowClient
    from mlflow_store import fresh_db

    uri = fresh_db(tmp_path / "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("lungpipe-synth", artifact_location=(tmp_path / "art").as_uri())
    with_model = client.create_run(exp).info.run_id
    client.log_artifact(with_model, str(trained["dir"] / "model.pt"))
    without = client.create_run(exp).info.run_id
    predictor = predictor_from_run(with_model, uri)
    assert predictor.source == f"MLflow run {with_model}"
    probs = predict_recording(predictor, trained["raw"] / f"{TEST}.wav", window_s=2.0).probs
    local = predict_recording(load_predictor(trained["dir"]), trained["raw"] / f"{TEST}.wav", window_s=2.0).probs
    np.testing.assert_allclose(probs, local, atol=1e-6)
    with pytest.raises(ModelLoadError, match="logged no model.pt"):
        predictor_from_run(without, uri)
    # a run id on the command line goes to MLflow
    assert load_predictor(with_model, uri).source.startswith("MLflow run")


def test_non_finite_audio_is_refused_naming_the_offset(trained, tmp_path):
    """A NaN sample in a waveform stops the prediction with its offset (no 'normal, p = nan')."""
    from lungpipe.inference.predict import predict_waveform
    from lungpipe.util.errors import DataError

    predictor = load_predictor(trained["dir"])
    wave = np.zeros(16000 * 2, dtype=np.float32)
    wave[12345] = np.nan
    with pytest.raises(DataError, match="sample offset 12345"):
        predict_waveform(predictor, wave, 16000, [Segment(0.0, 2.0)], "clip.wav")


def test_a_segment_shorter_than_every_training_cycle_warns(trained, caplog):
    from lungpipe.inference.predict import SHORTEST_TRAIN_CYCLE_KEY, predict_waveform

    predictor = load_predictor(trained["dir"])
    predictor.stats = {**predictor.stats, SHORTEST_TRAIN_CYCLE_KEY: 1.0}
    wave = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    with caplog.at_level("WARNING", logger="lungpipe.inference.predict"):
        predict_waveform(predictor, wave, 16000, [Segment(0.0, 0.1)], "clip.wav")
    assert "shorter than the shortest training cycle" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lungpipe.inference.predict"):
        predict_waveform(predictor, wave, 16000, [Segment(0.0, 1.0)], "clip.wav")
    assert "shorter than" not in caplog.text
