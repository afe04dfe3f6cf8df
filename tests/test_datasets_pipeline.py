"""The data stages wired to params.yaml for every source: download → manifest (+ class counts) →
preprocess per fold → evaluate (mean ± sd over folds), run in-process on a temporary repo copy."""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lungpipe.data.class_counts import class_count_table
from lungpipe.data.sources import cv_folds, get_source, source_from_params
from lungpipe.evaluation.predictions import write_predictions
from lungpipe.util.errors import DataError
from lungpipe.util.typed_config import ConfigError, merge

REPO = Path(__file__).resolve().parents[1]
FRONTEND = {  # tiny features: 1 s at 8 kHz, 16 mel bins, one process
    "cycle": {"sample_rate": 8000, "max_len_s": 1.0, "pad": "repeat"},
    "frontend": {"kind": "kaldi_fbank", "n_mels": 16, "frame_length_ms": 25.0, "frame_shift_ms": 10.0},
    "norm": {"mode": "train_stats"},
    "workers": 1,
}


def _params(source: str, folds: list, **sections) -> dict:
    base = yaml.safe_load((REPO / "params.yaml").read_text())  # every stage checks the params it needs
    data = base["data"]
    data.update({"source": source, "folds": folds, "raw_dir": "data/raw"})
    for key, value in sections.items():
        data[key] = {**(data.get(key) or {}), **value}
    return merge(base, {
        "data": data, "frontends": {"small": FRONTEND},
        "train": {"seeds": [0], "defaults": {"selection_metric": "accuracy"}}, "tuning": {"metric": "accuracy"},
        "split": {"selection": "validation"}, "evaluate": {"n_boot": 20, "seed": 0},
    })


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repo copy holding the stage scripts (outputs land under it)."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def write_params(root: Path, params: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(root: Path, script: str, *argv: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run stages/<script> as `python stages/<script> ARGV` would, with its root = ``root``."""
    monkeypatch.setattr(sys, "argv", [script, *argv])
    monkeypatch.delenv("LUNGPIPE_PARAMS", raising=False)
    monkeypatch.setenv("LUNGPIPE_DEBUG", "1")  # the stage's exception itself, not the printed `error:` line
    monkeypatch.syspath_prepend(str(root / "stages"))
    sys.modules.pop("_common", None)  # each copy's _common resolves its own repo root
    try:
        runpy.run_path(str(root / "stages" / script), run_name="__main__")
    finally:
        sys.modules.pop("_common", None)


def _dataset_info(root: Path, params: dict, monkeypatch: pytest.MonkeyPatch, *, whole_run: bool = False):
    monkeypatch.syspath_prepend(str(root / "stages"))
    sys.modules.pop("_common", None)
    try:
        import _common

        if whole_run:
            sys.modules.pop("_run", None)
            import _run

            return _run.build_run_config(params)
        return _common.dataset_info(params)
    finally:
        sys.modules.pop("_common", None)
        sys.modules.pop("_run", None)


def test_esc50_cross_validation_through_the_stages(repo: Path, monkeypatch) -> None:
    params = _params("esc50_synth", [1, 2, 3, 4, 5],
                     esc50_synth={"n_classes": 3, "n_per_class": 10, "sample_rate": 8000, "duration_s": 1.0})
    write_params(repo, params)
    for script in ("download.py", "manifest.py"):
        run_stage(repo, script, monkeypatch=monkeypatch)
    run_stage(repo, "preprocess.py", "small", monkeypatch=monkeypatch)

    manifest = pd.read_csv(repo / "data/manifest.csv")
    assert len(manifest) == 30 and sorted(manifest["fold"].unique()) == [1, 2, 3, 4, 5]
    # class counts: fold x class, each fold holds 2 clips (one source clip, takes A/B) per class
    counts = pd.read_csv(repo / "data/class_counts.csv").set_index("class")
    by_hand = manifest.groupby(["class_name", "fold"]).size().unstack()
    for name in ("dog", "rooster", "pig"):
        assert [counts.loc[name, f"esc50/fold{k}"] for k in range(1, 6)] == by_hand.loc[name].tolist() == [2] * 5
    assert counts.loc["total", "total"] == 30
    assert "## Patients per class" in (repo / "data/class_counts.md").read_text()

    for k in range(1, 6):  # one feature folder per held-out fold; its test split is exactly that fold
        test = pd.read_csv(repo / f"data/features/small/fold{k}/test.csv")
        train = pd.read_csv(repo / f"data/features/small/fold{k}/train.csv")
        assert set(test["recording"]) == set(manifest.loc[manifest["fold"] == k, "recording"])
        assert len(train) == 24 and not set(train["recording"]) & set(test["recording"])

    # predictions with known per-fold accuracy: fold k gets 7 - k of its 6 test clips right
    expected = []
    for k in range(1, 6):
        test = pd.read_csv(repo / f"data/features/small/fold{k}/test.csv")
        labels = test["label"].to_numpy()
        preds = labels.copy()
        n_wrong = k - 1
        preds[:n_wrong] = (labels[:n_wrong] + 1) % 3
        probs = np.full((len(labels), 3), 0.1)
        probs[np.arange(len(labels)), preds] = 0.8
        run = repo / f"models/cnn6/{k}/seed0"
        write_predictions(run / "predictions.csv", test["recording"].to_numpy(), test["cycle"].to_numpy(),
                          test["patient"].to_numpy(), labels, probs)
        (run / "history.json").write_text(json.dumps([{"epoch": 0, "train_loss": 1.0, "val_accuracy": 0.5}]))
        expected.append((6 - n_wrong) / 6)
    run_stage(repo, "evaluate.py", "cnn6", monkeypatch=monkeypatch)
    metrics = json.loads((repo / "metrics/cnn6.json").read_text())  # the DVC metric: headline numbers
    folds = json.loads((repo / "metrics/details/cnn6.json").read_text())["folds"]  # per-fold details
    assert folds["n_folds"] == 5
    assert [folds["folds"][str(k)]["accuracy"] for k in range(1, 6)] == pytest.approx(expected)
    assert folds["accuracy_fold_mean"] == pytest.approx(4 / 6) == pytest.approx(metrics["accuracy_mean"])
    assert folds["accuracy_fold_std"] == pytest.approx(np.sqrt(2.5) / 6)  # std(6,5,4,3,2)/6, ddof=1
    assert metrics["accuracy_sd"] == pytest.approx(np.sqrt(2.5) / 6, abs=1e-6)
    assert metrics["accuracy"] == pytest.approx(20 / 30)  # pooled over the five test folds
    assert "macro_f1_fold_mean" in folds and "score_fold_mean" not in folds


def test_diagnosis_counts_excluded_and_label_map(repo: Path, monkeypatch) -> None:
    merged = {"class_names": ["normal", "obstructive", "pneumonia"],
              "label_map": {"Healthy": "normal", "N": "normal", "Asthma": "obstructive", "COPD": "obstructive",
                            "Pneumonia": "pneumonia"},
              "duration_s": 0.5}
    params = _params("diagnosis_synth", ["official"], diagnosis_synth=merged)
    write_params(repo, params)
    assert _dataset_info(repo, params, monkeypatch).class_names == ("normal", "obstructive", "pneumonia")
    run_stage(repo, "download.py", monkeypatch=monkeypatch)
    run_stage(repo, "manifest.py", monkeypatch=monkeypatch)
    manifest = pd.read_csv(repo / "data/manifest.csv")
    info = _dataset_info(repo, params, monkeypatch)
    assert info.class_names == ("normal", "obstructive", "pneumonia") and info.metric_task == "multiclass"
    assert info.folds == ()
    # writer defaults: ICBHI Healthy 6, COPD 6, Asthma 2 patients x 2 recordings; KAUH N 4, Asthma 4, COPD 4
    # subjects x 3 filter modes -> obstructive = (6 + 2) * 2 + (4 + 4) * 3 = 40 recordings
    counts = pd.read_csv(repo / "data/class_counts.csv").set_index("class")
    assert counts.loc["obstructive", "total"] == 40 == (manifest["class_name"] == "obstructive").sum()
    table = class_count_table(manifest, class_names=list(info.class_names))
    by_hand = manifest.groupby(["source", "split", "class_name"]).size()
    for (source, split, name), n in by_hand.items():
        assert table.loc[name, f"{source}/{split}"] == n == counts.loc[name, f"{source}/{split}"]
    md = (repo / "data/class_counts.md").read_text()
    assert "## Excluded (not in any class)" in md
    assert "| icbhi | urti | 2 | 4 |" in md and "| kauh | heart failure | 2 | 6 |" in md  # patients, recordings


def test_a_diagnosis_missing_from_the_label_map_names_the_file(repo: Path, monkeypatch) -> None:
    label_map = {"Healthy": "normal", "N": "normal", "Asthma": "asthma", "COPD": "copd"}  # no pneumonia
    write_params(repo, _params("diagnosis_synth", ["official"],
                               diagnosis_synth={"label_map": label_map, "duration_s": 0.25}))
    run_stage(repo, "download.py", monkeypatch=monkeypatch)
    with pytest.raises(DataError, match=r"\.wav: diagnosis 'Pneumonia' is neither in diagnosis\.label_map"):
        run_stage(repo, "manifest.py", monkeypatch=monkeypatch)


def test_a_misnamed_esc50_file_names_the_file(repo: Path, monkeypatch) -> None:
    write_params(repo, _params("esc50_synth", [1, 2, 3, 4, 5],
                               esc50_synth={"n_classes": 2, "n_per_class": 10, "duration_s": 0.25}))
    run_stage(repo, "download.py", monkeypatch=monkeypatch)
    meta = repo / "data/raw/meta/esc50.csv"
    frame = pd.read_csv(meta)
    frame.loc[3, "filename"] = frame.loc[3, "filename"].replace("-", "_")
    frame.to_csv(meta, index=False)
    with pytest.raises(DataError, match=rf"esc50\.csv:5 \({frame.loc[3, 'filename']}\): file name does not follow"):
        run_stage(repo, "manifest.py", monkeypatch=monkeypatch)


@pytest.mark.parametrize(("source", "folds", "message"), [
    ("esc50", [1, 6], r"data\.folds entry 6 is outside 1\.\.5"),
    ("esc50", [0], r"data\.folds entry 0 is outside 1\.\.5"),
    ("esc50", ["official", 2], r"data\.folds .* mixes 'official'"),
    ("esc50", ["two"], r"data\.folds entry 'two' is not a fold number"),
    ("diagnosis", [1, 2], r"data\.folds \[1, 2\]: data\.source 'diagnosis' has a fixed train/test split"),
    ("synth", [1], r"data\.source 'icbhi_synth' has a fixed"),
])
def test_bad_folds_name_the_key(source: str, folds: list, message: str) -> None:
    source_obj, cfg = source_from_params({"source": source})
    with pytest.raises(ConfigError, match=message):
        cv_folds(folds, source_obj, cfg)


def test_bad_folds_stop_the_download_stage(repo: Path, monkeypatch) -> None:
    write_params(repo, _params("esc50_synth", [1, 7]))
    with pytest.raises(ConfigError, match=r"data\.folds entry 7 is outside 1\.\.5"):
        run_stage(repo, "download.py", monkeypatch=monkeypatch)
    assert not (repo / "data/raw").exists()


def test_source_options_come_from_their_params_section() -> None:
    source, cfg = source_from_params({"source": "esc50", "esc50": {"test_fold": 3}})
    assert source.name == "esc50" and cfg.test_fold == 3 and cv_folds([1, 2, 3, 4, 5], source, cfg) == [1, 2, 3, 4, 5]
    with pytest.raises(ConfigError, match=r"data\.esc50.*test_folds"):
        source_from_params({"source": "esc50", "esc50": {"test_folds": 3}})
    # the default synthetic ICBHI set: manifest keys and generator keys share data.synth
    source, cfg = source_from_params({"source": "synth", "synth": {"seed": 5}, "manifest": {"skip_bad": True}})
    assert source.section == "synth" and cfg.synth.seed == 5 and cfg.skip_bad is True
    assert cv_folds(["official"], source, cfg) == []
    with pytest.raises(ConfigError, match="bogus"):
        source_from_params({"source": "synth", "synth": {"bogus": 1}})
    assert get_source("diagnosis").section == "diagnosis"


def test_an_icbhi_selection_metric_on_a_multiclass_source_is_refused(repo: Path, monkeypatch) -> None:
    params = _params("esc50_synth", [1, 2, 3, 4, 5])
    params["train"]["defaults"]["selection_metric"] = "score"
    with pytest.raises(ConfigError, match=r"train\.defaults\.selection_metric"):
        _dataset_info(repo, params, monkeypatch, whole_run=True)


def test_data_cli_commands(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lungpipe.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["data", "sources"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    for name in ("esc50", "esc50_synth", "diagnosis", "diagnosis_synth", "icbhi", "synth"):
        assert f" {name} " in listed.output
    out = runner.invoke(app, ["data", "synth-esc50", str(tmp_path / "esc"), "--n-classes", "2", "--n-per-class", "10",
                              "--duration", "0.25", "--sample-rate", "8000"])
    assert out.exit_code == 0, out.output
    manifest = get_source("esc50").build_manifest(tmp_path / "esc", get_source("esc50").config())
    manifest.to_csv(tmp_path / "m.csv", index=False)
    shown = runner.invoke(app, ["data", "class-counts", str(tmp_path / "m.csv")], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    dog = next(line for line in shown.output.splitlines() if " dog " in line)
    assert [int(v) for v in dog.replace("│", " ").split()[1:]] == [2, 2, 2, 2, 2, 10]
    bad = runner.invoke(app, ["data", "synth-diagnosis", str(tmp_path / "dx"), "--kauh-patients", "N:3"])
    assert bad.exit_code != 0 and "DIAGNOSIS=COUNT" in bad.output
    ok = runner.invoke(app, ["data", "synth-diagnosis", str(tmp_path / "dx"), "--icbhi-patients", "Healthy=2,COPD=2",
                             "--kauh-patients", "N=1,Asthma=2", "--recordings-per-patient", "1", "--duration", "0.25"])
    assert ok.exit_code == 0, ok.output
    assert len(list((tmp_path / "dx").rglob("*.wav"))) == 4 * 1 + 3 * 3  # ICBHI 4 patients x 1, KAUH 3 x 3 filters
