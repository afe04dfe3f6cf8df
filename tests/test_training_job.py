"""A training job's model selection: on held-out training patients, or (selection: test) on the test split."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from featuredir import write_feature_dir

from lungpipe.training.job import TrainJob, run_training

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "stages"))
import _common  # noqa: E402
import _run  # noqa: E402


def _job(tmp_path: Path, selection: str) -> TrainJob:
    s = _run.arch_settings(_common.load_params(REPO / "params.yaml"), "cnn6")
    s.train = replace(s.train, epochs=2, batch_size=16, device="cpu", num_workers=0)
    s.split = replace(s.split, selection=selection)
    features = write_feature_dir(tmp_path / "features", n_train=48, n_test=40, n_frames=32, n_mels=16)
    return TrainJob(settings=s, features_dir=features, out_dir=tmp_path / selection, progress=False, n_boot=10,
                    class_names=["normal", "crackle", "wheeze", "both"])


def test_selection_test_scores_the_test_split_as_validation(tmp_path):
    res = run_training(_job(tmp_path, "test"))
    config = json.loads((tmp_path / "test" / "config.json").read_text())
    assert config["selection"].startswith("TEST SET")
    # the chosen epoch's validation numbers are the test numbers of the same model: same rows
    for key in ("score", "se", "sp", "accuracy", "macro_f1"):
        assert res.val_metrics[key] == pytest.approx(res.test_metrics[key]), key


def test_selection_validation_holds_out_training_patients(tmp_path):
    run_training(_job(tmp_path, "validation"))
    config = json.loads((tmp_path / "validation" / "config.json").read_text())
    assert config["selection"].startswith("validation (") and "training patients held out" in config["selection"]


def test_an_unknown_selection_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="selection: must be one of validation, test, got 'best'"):
        run_training(_job(tmp_path, "best"))


def test_the_model_file_loads_with_the_safe_loader_and_predicts_like_the_trained_model(tmp_path):
    import numpy as np
    import pandas as pd
    import torch

    from lungpipe.features import load_split
    from lungpipe.inference.model_file import load_model
    from lungpipe.training.data import SpectrogramDataset
    from lungpipe.training.probabilities import predict_proba

    job = _job(tmp_path, "validation")
    run_training(job)
    torch.load(job.out_dir / "model.pt", weights_only=True)  # plain data and tensors only
    model = load_model(job.out_dir / "model.pt")
    test = load_split(job.features_dir, "test")
    probs = predict_proba(model, SpectrogramDataset(test.x, test.index["label"].to_numpy()))
    written = pd.read_csv(job.out_dir / "predictions.csv")[[f"prob_{k}" for k in range(4)]].to_numpy()
    assert probs.shape == (40, 4)
    np.testing.assert_allclose(probs, written, rtol=1e-5, atol=1e-6)
