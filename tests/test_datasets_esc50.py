"""ESC-50 source: metadata checks, the manifest, 5-fold splits, and the synthetic writer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from lungpipe.data.esc50 import (
    ESC50_CATEGORIES,
    Esc50Config,
    build_esc50_manifest,
    read_esc50_meta,
    split_for_fold,
)
from lungpipe.data.sources import MANIFEST_COLUMNS
from lungpipe.data.synth_datasets import write_synthetic_esc50
from lungpipe.util.errors import DataError

N_CLASSES, N_PER_CLASS, SR, DUR = 4, 10, 8000, 0.25


@pytest.fixture(scope="module")
def esc_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("esc50") / "ESC-50-master"
    write_synthetic_esc50(out, n_per_class=N_PER_CLASS, n_classes=N_CLASSES, sample_rate=SR,
                          duration_s=DUR, seed=3)
    return out


@pytest.fixture(scope="module")
def manifest(esc_dir: Path) -> pd.DataFrame:
    # raw_dir is the parent: the builder must find the single ESC-50 folder below it
    return build_esc50_manifest(esc_dir.parent, Esc50Config(test_fold=1))


def test_manifest_follows_the_contract(manifest: pd.DataFrame, esc_dir: Path) -> None:
    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert len(manifest) == N_CLASSES * N_PER_CLASS
    for row in manifest.itertuples(index=False):
        fold, src, take, target = Path(row.path).stem.split("-")
        assert row.label == int(target) and row.fold == int(fold)
        assert row.patient == src and row.take == take
        assert row.class_name == ESC50_CATEGORIES[int(target)]
        assert (esc_dir.parent / row.path).is_file()
    assert (manifest["cycle"] == 0).all() and (manifest["start_s"] == 0).all()
    assert np.allclose(manifest["end_s"], DUR) and np.allclose(manifest["duration_s"], DUR)
    assert (manifest["sample_rate"] == SR).all()
    assert (manifest[["crackle", "wheeze"]] == 0).all().all()
    # round-robin folds: 10 clips per class over 5 folds -> 2 clips of every class in every fold
    counts = manifest.groupby(["fold", "label"]).size()
    assert (counts == 2).all() and len(counts) == 5 * N_CLASSES
    # the two takes of one source clip share a fold (grouping by patient never splits a source)
    assert (manifest.groupby("patient")["fold"].nunique() == 1).all()


def test_split_for_fold_holds_out_exactly_that_fold(manifest: pd.DataFrame) -> None:
    tested = []
    for k in range(1, 6):
        split = split_for_fold(manifest, k)
        test = split[split["split"] == "test"]
        assert set(test["fold"]) == {k}
        assert len(test) == (manifest["fold"] == k).sum()
        assert set(split.loc[split["split"] == "train", "fold"]) == set(range(1, 6)) - {k}
        assert (split["split_scheme"] == f"fold{k}").all()
        tested += test["recording"].tolist()
    assert sorted(tested) == sorted(manifest["recording"])  # every clip is tested exactly once
    with pytest.raises(DataError, match="outside 1..5"):
        split_for_fold(manifest, 6)


def test_synthetic_classes_are_separable(manifest: pd.DataFrame, esc_dir: Path) -> None:
    """Nearest class centroid of log spectra, trained on folds 2-5, labels fold 1 perfectly."""
    def spectrum(path: str) -> np.ndarray:
        audio, _ = sf.read(esc_dir.parent / path)
        return np.log(np.abs(np.fft.rfft(audio)) + 1e-3)

    feats = np.stack([spectrum(p) for p in manifest["path"]])
    labels = manifest["label"].to_numpy()
    train = (manifest["split"] == "train").to_numpy()
    centroids = np.stack([feats[train & (labels == c)].mean(0) for c in range(N_CLASSES)])
    pred = np.argmin(((feats[~train, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == labels[~train]).mean() == 1.0


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def small_esc(tmp_path: Path) -> Path:
    write_synthetic_esc50(tmp_path, n_per_class=2, n_classes=2, sample_rate=4000, duration_s=0.05)
    return tmp_path


def _edit_row(root: Path, row: int, **changes) -> str:
    meta_csv = root / "meta" / "esc50.csv"
    meta = pd.read_csv(meta_csv, dtype=str)
    for col, value in changes.items():
        meta.loc[row, col] = value
    meta.to_csv(meta_csv, index=False)
    return f"esc50.csv:{row + 2}"  # header is line 1


@pytest.mark.parametrize("changes, message", [
    ({"fold": "6"}, r"fold 6 is outside 1\.\.5"),
    ({"target": "50"}, r"target 50 is outside 0\.\.49"),
    ({"filename": "dog_bark.wav"}, r"does not follow the ESC-50 convention"),
    ({"take": "C"}, r"disagrees with its row \(take: name says '[AB]', row says 'C'\)"),
    ({"fold": "x"}, r"fold 'x' is not an integer"),
])
def test_bad_metadata_names_file_and_line(small_esc: Path, changes, message) -> None:
    where = _edit_row(small_esc, 1, **changes)
    filename = changes.get("filename") or pd.read_csv(small_esc / "meta" / "esc50.csv")["filename"][1]
    with pytest.raises(DataError, match=message) as info:
        build_esc50_manifest(small_esc)
    assert where in str(info.value) and filename in str(info.value)


def test_target_disagreeing_with_file_name(small_esc: Path) -> None:
    meta = pd.read_csv(small_esc / "meta" / "esc50.csv")
    row = int(meta.index[meta["target"] == 0][0])
    _edit_row(small_esc, row, target="1", category=meta.loc[meta["target"] == 1, "category"].iloc[0])
    with pytest.raises(DataError, match=r"target: name says 0, row says 1"):
        build_esc50_manifest(small_esc)


def test_missing_audio_file_is_named(small_esc: Path) -> None:
    victim = sorted((small_esc / "audio").glob("*.wav"))[2]
    victim.unlink()
    with pytest.raises(DataError, match=re.escape(victim.name)):
        build_esc50_manifest(small_esc)


def test_other_metadata_problems(small_esc: Path) -> None:
    meta_csv = small_esc / "meta" / "esc50.csv"
    meta = pd.read_csv(meta_csv)
    pd.concat([meta, meta.iloc[[0]]]).to_csv(meta_csv, index=False)
    with pytest.raises(DataError, match="listed twice"):
        read_esc50_meta(meta_csv)
    meta.drop(columns=["take"]).to_csv(meta_csv, index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) \['take'\]"):
        read_esc50_meta(meta_csv)
    with pytest.raises(DataError, match="no meta/esc50.csv"):
        build_esc50_manifest(small_esc / "audio")
