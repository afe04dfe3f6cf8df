"""The preprocess step end to end on tiny recordings: the on-disk contract, normalisation from
the training split only, determinism across runs and worker counts, and error handling."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from lungpipe.features import (
    CycleConfig,
    FrontendConfig,
    NormConfig,
    PreprocessConfig,
    compute_features_for_waveform,
    config_from_stats,
    frontend_key,
    load_split,
    normalise,
    preprocess,
)
from lungpipe.features.audio import read_audio
from lungpipe.features.config import AUDIOSET_MEAN, AUDIOSET_STD
from lungpipe.features.extract import features_for_recording
from lungpipe.util.errors import DataError

# 1 s cycles at 16 kHz → 98 Kaldi frames; 32 mel bins keep the tests fast.
SMALL = PreprocessConfig(
    cycle=CycleConfig(max_len_s=1.0, recording_fade_samples=100, pad_fade_samples=100),
    frontend=FrontendConfig(n_mels=32),
    norm=NormConfig(mode="train_stats"),
    workers=1,
)
FRAMES = 98


def _noise(seconds: float, sr: int, amplitude: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(-1, 1, int(seconds * sr)) * amplitude).astype(np.float32)


def _dataset(root, test_amplitude: float = 0.02):
    """Three recordings (16 kHz 16-bit, 44.1 kHz 24-bit, 8 kHz 16-bit) and a manifest whose
    rows interleave splits and recordings. Train audio is quiet, test audio ``test_amplitude``."""
    raw = root / "raw"
    (raw / "sub").mkdir(parents=True)
    sf.write(raw / "a.wav", _noise(3.0, 16000, 0.02, 1), 16000, subtype="PCM_16")
    sf.write(raw / "sub" / "b.wav", _noise(2.5, 44100, 0.01, 2), 44100, subtype="PCM_24")
    sf.write(raw / "c.wav", _noise(2.0, 8000, test_amplitude, 3), 8000, subtype="PCM_16")
    rows = [
        ("a", "train", 0.10, 0.80, 0), ("c", "test", 0.00, 1.90, 1), ("a", "train", 0.80, 2.90, 2),
        ("sub/b", "train", 0.20, 0.50, 3), ("c", "test", 0.50, 0.90, 0), ("a", "train", 1.00, 1.40, 1),
    ]
    manifest = pd.DataFrame(
        [{"recording": name.split("/")[-1], "patient": i, "split": split, "cycle": i, "start_s": s,
          "end_s": e, "label": label, "path": f"{name}.wav"} for i, (name, split, s, e, label) in enumerate(rows)]
    )
    return raw, manifest


def test_layout_shapes_and_row_order(tmp_path):
    raw, manifest = _dataset(tmp_path)
    out = tmp_path / "features"
    summary = preprocess(manifest, raw, out, SMALL, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["stats.json", "test.csv", "test.npy", "train.csv", "train.npy"]
    assert summary.counts == {"train": 4, "test": 2} and summary.n_recordings == 3
    assert summary.audio_seconds == pytest.approx(3.0 + 2.5 + 2.0)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["n_frames"] == FRAMES and stats["n_mels"] == 32 and stats["sample_rate"] == 16000
    assert stats["counts"] == {"train": 4, "test": 2} and stats["frontend_key"] == frontend_key(SMALL)
    assert stats["frontend"]["n_mels"] == 32 and stats["cycle"]["max_len_s"] == 1.0

    train, test = load_split(out, "train"), load_split(out, "test")
    assert isinstance(train.x, np.memmap) and train.x.dtype == np.float32
    assert train.x.shape == (4, FRAMES, 32) and test.x.shape == (2, FRAMES, 32)
    assert train.index["cycle"].tolist() == [0, 2, 3, 5]  # manifest order within the split
    assert test.index["cycle"].tolist() == [1, 4]
    # row i of the array is the cycle of csv row i: recompute each row on its own
    for split in (train, test):
        for i, row in split.index.iterrows():
            wave, sr = read_audio(raw / row["path"])
            alone = features_for_recording(wave, sr, [(row["start_s"], row["end_s"])], SMALL)[0].numpy()
            np.testing.assert_allclose(split.x[i], normalise(alone, split.stats), atol=1e-5)


def test_single_clip_manifest_equals_inference_path(tmp_path):
    sr = 22050
    wave = _noise(1.7, sr, 0.3, 9)
    (tmp_path / "raw").mkdir()
    sf.write(tmp_path / "raw" / "clip.wav", wave, sr, subtype="FLOAT")
    manifest = pd.DataFrame([
        {"path": "clip.wav", "split": "train", "start_s": 0.0, "end_s": len(wave) / sr, "label": 3},
        {"path": "clip.wav", "split": "test", "start_s": 0.0, "end_s": len(wave) / sr, "label": 3},
    ])
    out = tmp_path / "features"
    preprocess(manifest, tmp_path / "raw", out, SMALL, progress=False)
    test = load_split(out, "test")
    cfg = config_from_stats(test.stats)  # what a predict command would do
    assert frontend_key(cfg) == frontend_key(SMALL)
    expected = normalise(compute_features_for_waveform(wave, sr, cfg), test.stats)
    np.testing.assert_array_equal(test.x[0], expected)


def test_summary_prints_as_people_read_it(tmp_path):
    """No dataclass repr on the console; floats to 3 decimals."""
    import re

    raw, manifest = _dataset(tmp_path)
    summary = preprocess(manifest, raw, tmp_path / "features", SMALL, progress=False)
    text = str(summary)
    assert "PreprocessSummary(" not in text and "PosixPath" not in text
    assert "6 cycles (train 4, test 2) from 3 recordings, 7.500 s of audio" in text
    assert f"each {FRAMES} frames x 32 mel bins" in text and frontend_key(SMALL) in text
    assert all(len(d) == 3 for d in re.findall(r"\d+\.(\d+)", text))  # every float has 3 decimals


def test_normalisation_statistics_come_from_train_only(tmp_path):
    raw, manifest = _dataset(tmp_path, test_amplitude=0.9)  # test audio far louder than train
    none_cfg = PreprocessConfig(cycle=SMALL.cycle, frontend=SMALL.frontend, norm=NormConfig(mode="none"), workers=1)
    preprocess(manifest, raw, tmp_path / "raw_feats", none_cfg, progress=False)
    raw_train = np.asarray(load_split(tmp_path / "raw_feats", "train").x, dtype=np.float64)
    raw_test = np.asarray(load_split(tmp_path / "raw_feats", "test").x, dtype=np.float64)
    assert raw_test.mean() > raw_train.mean() + 3  # the splits really differ

    preprocess(manifest, raw, tmp_path / "feats", SMALL, progress=False)
    train = load_split(tmp_path / "feats", "train")
    assert train.stats["mean"] == pytest.approx(raw_train.mean(), rel=1e-5)
    assert train.stats["std"] == pytest.approx(raw_train.std(), rel=1e-4)
    both = np.concatenate([raw_train.ravel(), raw_test.ravel()])
    assert abs(train.stats["mean"] - both.mean()) > 1
    normed = np.asarray(train.x, dtype=np.float64)
    assert normed.mean() == pytest.approx(0.0, abs=1e-4)
    assert normed.std() == pytest.approx(1 / SMALL.norm.std_scale, rel=1e-4)
    test = load_split(tmp_path / "feats", "test")
    np.testing.assert_allclose(test.x, (raw_test - train.stats["mean"]) / (2 * train.stats["std"]), atol=1e-4)


def test_audioset_normalisation_constants(tmp_path):
    raw, manifest = _dataset(tmp_path)
    none_cfg = PreprocessConfig(cycle=SMALL.cycle, frontend=SMALL.frontend, norm=NormConfig(mode="none"), workers=1)
    as_cfg = PreprocessConfig(cycle=SMALL.cycle, frontend=SMALL.frontend, norm=NormConfig(mode="audioset"), workers=1)
    preprocess(manifest, raw, tmp_path / "none", none_cfg, progress=False)
    preprocess(manifest, raw, tmp_path / "as", as_cfg, progress=False)
    plain, scaled = load_split(tmp_path / "none", "train").x, load_split(tmp_path / "as", "train")
    assert scaled.stats["mean"] == AUDIOSET_MEAN and scaled.stats["std"] == AUDIOSET_STD
    np.testing.assert_allclose(scaled.x, (plain + 4.2677) / (2 * 4.5690), atol=1e-5)


def test_rerun_and_worker_count_give_identical_arrays(tmp_path):
    raw, manifest = _dataset(tmp_path)
    out = tmp_path / "features"
    preprocess(manifest, raw, out, SMALL, progress=False)
    first = {s: np.array(load_split(out, s).x) for s in ("train", "test")}
    import dataclasses

    preprocess(manifest, raw, out, dataclasses.replace(SMALL, workers=2), progress=False)  # same folder
    for split in ("train", "test"):
        np.testing.assert_array_equal(load_split(out, split).x, first[split])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_manifest_csv_path_and_errors_name_file_and_line(tmp_path):
    raw, manifest = _dataset(tmp_path)
    manifest_path = tmp_path / "manifest.csv"
    bad = manifest.copy()
    bad.loc[4, "end_s"] = 5.0  # c.wav is 2 s long
    bad.to_csv(manifest_path, index=False)
    with pytest.raises(DataError, match=r"manifest\.csv line 6 \(c\.wav\).*ends past the recording"):
        preprocess(manifest_path, raw, tmp_path / "features", SMALL, progress=False)
    assert not (tmp_path / "features").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    bad = manifest.copy()
    bad.loc[2, "split"] = "valid"
    bad.to_csv(manifest_path, index=False)
    with pytest.raises(DataError, match=r"line 4: split 'valid'"):
        preprocess(manifest_path, raw, tmp_path / "features", SMALL, progress=False)
    with pytest.raises(DataError, match=r"missing column\(s\) \['start_s'\]"):
        preprocess(manifest.drop(columns="start_s"), raw, tmp_path / "features", SMALL, progress=False)


def test_unreadable_wav_fails_cleanly_with_both_worker_modes(tmp_path):
    import dataclasses

    raw, manifest = _dataset(tmp_path)
    (raw / "c.wav").write_bytes(b"not a wav file at all")
    for workers in (1, 2):
        with pytest.raises(DataError, match=r"c\.wav: cannot read audio"):
            preprocess(manifest, raw, tmp_path / "features", dataclasses.replace(SMALL, workers=workers),
                       progress=False)
        assert not (tmp_path / "features").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_refuses_to_replace_a_folder_that_is_not_a_features_folder(tmp_path):
    raw, manifest = _dataset(tmp_path)
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="other than a features folder"):
        preprocess(manifest, raw, out, SMALL, progress=False)
    assert (out / "notes.txt").read_text() == "keep me"


def test_bench_preprocess_command_reports_speed_and_cleans_up(tmp_path):
    from typer.testing import CliRunner

    from lungpipe.cli import app

    raw, manifest = _dataset(tmp_path)
    manifest.to_csv(tmp_path / "m.csv", index=False)
    kept = tmp_path / "kept"
    result = CliRunner().invoke(app, ["bench", "preprocess", str(raw), "--manifest", str(tmp_path / "m.csv"),
                                      "--workers", "1", "--max-len-s", "1", "--n-mels", "32", "--keep", str(kept)])
    assert result.exit_code == 0, result.output
    assert "cycles/s" in result.output and "peak memory" in result.output
    assert "6 (train 4, test 2) from 3 recordings" in result.output
    assert load_split(kept, "train").x.shape == (4, FRAMES, 32)
