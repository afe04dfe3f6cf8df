"""The dataset plug-in registry: every source emits the same manifest."""

from __future__ import annotations

import types
from pathlib import Path

import pandas as pd
import pytest

from lungpipe.data import sources
from lungpipe.data.sources import (
    MANIFEST_COLUMNS,
    METRIC_TASKS,
    TASKS,
    class_names_from_manifest,
    finalize_manifest,
    get_source,
    recording_row,
    source_names,
)
from lungpipe.util.errors import DataError
from lungpipe.util.typed_config import ConfigError

REQUIRED = {"icbhi", "icbhi_synth", "esc50", "diagnosis"}


def test_registry_knows_the_sources() -> None:
    assert REQUIRED <= set(source_names())
    for name in source_names():
        source = get_source(name)
        assert source.task in TASKS and source.metric_task in METRIC_TASKS
        assert source.class_names and len(set(source.class_names)) == len(source.class_names)
        source.config({})  # the defaults build
        with pytest.raises(ConfigError, match="bogus"):
            source.config({"bogus": 1})
    assert get_source("icbhi").class_names == ["normal", "crackle", "wheeze", "both"]
    assert (get_source("icbhi").task, get_source("icbhi").metric_task) == ("cycle", "icbhi")
    assert (get_source("esc50").task, get_source("esc50").metric_task) == ("recording", "multiclass")
    assert get_source("diagnosis").class_names == ["asthma", "copd", "normal", "pneumonia"]
    assert len(get_source("esc50").class_names) == 50


def test_unknown_source_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        get_source("urbansound")
    for name in source_names():
        assert repr(name) in str(info.value)


def test_remote_files() -> None:
    pytest.importorskip("lungpipe.data.download")
    esc = get_source("esc50")
    (archive,) = esc.remote_files(esc.config())
    assert archive.url.endswith("ESC-50/archive/master.zip") and archive.sha256 is None
    dx = get_source("diagnosis")
    files = dx.remote_files(dx.config())
    assert [f.filename for f in files] == ["ICBHI_final_database.zip", "ICBHI_Challenge_diagnosis.txt",
                                           "Audio Files.zip"]
    assert files[2].sha256 is not None and files[0].sha256 is None
    assert [f.filename for f in dx.remote_files(dx.config({"sources": ["kauh"]}))] == ["Audio Files.zip"]
    for name in ("icbhi_synth", "esc50_synth", "diagnosis_synth"):
        source = get_source(name)
        assert source.synthetic and source.remote_files(source.config()) == []


def test_finalize_manifest_checks_the_contract() -> None:
    row = recording_row(recording="r1", patient="p1", label=2, path="a/r1.wav", sample_rate=4000,
                        duration_s=1.5, device="d", location="l", extra_col="x")
    out = finalize_manifest(pd.DataFrame([row]), "test")
    assert list(out.columns) == [*MANIFEST_COLUMNS, "fold", "extra_col"]
    assert out.loc[0, "end_s"] == 1.5 and out.loc[0, "split_name"] == "r1" and pd.isna(out.loc[0, "fold"])
    with pytest.raises(DataError, match=r"lacks column\(s\) \['label'\]"):
        finalize_manifest(pd.DataFrame([row]).drop(columns=["label"]), "test")
    with pytest.raises(DataError, match="split values"):
        finalize_manifest(pd.DataFrame([{**row, "split": "val"}]), "test")


def test_class_names_from_manifest() -> None:
    frame = pd.DataFrame({"label": [1, 0, 1], "class_name": ["b", "a", "b"]})
    assert class_names_from_manifest(frame) == ["a", "b"]
    with pytest.raises(DataError, match="several class names"):
        class_names_from_manifest(pd.DataFrame({"label": [0, 0], "class_name": ["a", "b"]}))
    with pytest.raises(DataError, match="without gaps"):
        class_names_from_manifest(pd.DataFrame({"label": [0, 2], "class_name": ["a", "c"]}))


def test_icbhi_source_wraps_the_cycle_builder(monkeypatch, tmp_path: Path) -> None:
    """The wrapper passes raw_dir, the split file (resolved against raw_dir), skip_bad and strict_cycles through
    and adds the fold and source columns; checked against a stand-in builder."""
    calls = []
    cycles = pd.DataFrame([{
        "recording": "101_1b1_Al_sc_Meditron", "patient": 101, "split": "test", "cycle": 0, "start_s": 0.1,
        "end_s": 2.0, "crackle": 1, "wheeze": 0, "label": 1, "device": "Meditron", "location": "Al",
        "sample_rate": 4000, "path": "101_1b1_Al_sc_Meditron.wav", "duration_s": 20.0,
        "split_name": "101_1b1_Al_sc_Meditron",
    }])

    def fake_build(raw_dir, split_file=None, *, skip_bad=False, strict_cycles=False):
        calls.append((raw_dir, split_file, skip_bad, strict_cycles))
        return types.SimpleNamespace(cycles=cycles, rejects=pd.DataFrame())

    monkeypatch.setattr(sources, "build_icbhi_manifest", fake_build)
    source = get_source("icbhi")
    out = source.build_manifest(tmp_path, source.config({"split_file": "split.txt", "skip_bad": True,
                                                         "strict_cycles": True}))
    assert calls == [(tmp_path, tmp_path / "split.txt", True, True)]
    assert list(out.columns) == [*MANIFEST_COLUMNS, "fold", "source"]
    assert out.loc[0, "source"] == "icbhi" and pd.isna(out.loc[0, "fold"]) and out.loc[0, "patient"] == 101


def test_synthetic_sources_round_trip(tmp_path: Path) -> None:
    esc = get_source("esc50_synth")
    cfg = esc.config({"n_classes": 3, "n_per_class": 5, "sample_rate": 4000, "duration_s": 0.1, "test_fold": 2})
    esc.synthesize(tmp_path / "esc", cfg)
    m = esc.build_manifest(tmp_path / "esc", cfg)
    assert len(m) == 15 and set(m.loc[m["split"] == "test", "fold"]) == {2}
    assert esc.class_names_for(cfg, m) == ["dog", "rooster", "pig"] == esc.class_names_for(cfg)
    dx = get_source("diagnosis_synth")
    dcfg = dx.config({"duration_s": 0.1, "recordings_per_patient": 1})
    dx.synthesize(tmp_path / "dx", dcfg)
    m = dx.build_manifest(tmp_path / "dx", dcfg)
    assert set(m["class_name"]) == {"asthma", "copd", "normal", "pneumonia"}
    assert set(m["source"]) == {"icbhi", "kauh"}


def test_with_the_synthetic_icbhi_folder(tmp_path: Path) -> None:
    """Integration: the ICBHI-shaped folder written by lungpipe.data.synth feeds both the cycle
    source and the diagnosis task (its patient_diagnosis.csv)."""
    synth = pytest.importorskip("lungpipe.data.synth")
    icbhi = pytest.importorskip("lungpipe.data.icbhi")
    cfg = synth.SynthConfig(n_patients=6, recordings_per_patient=(1, 2), cycles_per_recording=(2, 3))
    synth.write_synthetic_icbhi(tmp_path, cfg)
    source = get_source("icbhi_synth")
    cycles = source.build_manifest(tmp_path, source.config())
    direct = icbhi.build_manifest(tmp_path).cycles
    pd.testing.assert_frame_equal(cycles[list(MANIFEST_COLUMNS)], direct[list(MANIFEST_COLUMNS)])
    dx = get_source("diagnosis")
    recordings = dx.build_manifest(tmp_path, dx.config({"sources": ["icbhi"]}))
    diagnoses = pd.read_csv(tmp_path / "patient_diagnosis.csv", dtype=str).set_index("ID")["CLASS"]
    mapped = {"Healthy": "normal", "COPD": "copd", "Asthma": "asthma", "Pneumonia": "pneumonia"}
    assert sorted(recordings["recording"]) == sorted(
        r for r in direct["recording"].unique() if diagnoses[r.split("_")[0]] in mapped)
    for row in recordings.itertuples():
        assert row.class_name == mapped[diagnoses[row.patient]]
