"""The combined ICBHI + KAUH diagnosis task: label map, exclusions, patient split, count tables."""

from __future__ import annotations

import csv
import math
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from lungpipe.data.diagnosis import (
    DiagnosisConfig,
    build_diagnosis_dataset,
    class_count_table,
    excluded_counts,
    read_patient_diagnoses,
    split_patients,
)
from lungpipe.data.synth_datasets import (
    kauh_filename,
    write_icbhi_named_recordings,
    write_synthetic_diagnosis,
    write_synthetic_kauh,
    write_wav,
)
from lungpipe.util.errors import DataError
from lungpipe.util.typed_config import ConfigError

MAPPED = {"Healthy": "normal", "Asthma": "asthma", "COPD": "copd", "Pneumonia": "pneumonia"}
KAUH_PATIENTS = {"N": 5, "Asthma": 4, "COPD": 3, "pneumonia": 2, "heart failure": 2, "BRON": 1}


def _independent_diagnoses(path: Path) -> dict[str, str]:
    with open(path, newline="") as fh:
        return {row["ID"]: row["CLASS"] for row in csv.DictReader(fh)}


# --------------------------------------------------------------------------- real ICBHI metadata


@pytest.fixture(scope="module")
def real_layout(shared_icbhi: Path, tmp_path_factory) -> Path:
    """The 920 real ICBHI recording names (as tiny wavs) + the real patient_diagnosis.csv, and a
    synthetic KAUH folder beside them."""
    raw = tmp_path_factory.mktemp("dx_real")
    names = sorted(p.stem for p in (shared_icbhi / "annotations").glob("*.txt"))
    diagnoses = _independent_diagnoses(shared_icbhi / "patient_diagnosis.csv")
    write_icbhi_named_recordings(raw / "icbhi", names, diagnoses, duration_s=0.02)
    shutil.copy(shared_icbhi / "patient_diagnosis.csv", raw / "icbhi" / "patient_diagnosis.csv")
    write_synthetic_kauh(raw / "kauh", KAUH_PATIENTS, duration_s=0.05)
    return raw


@pytest.fixture(scope="module")
def real_dataset(real_layout: Path):
    return build_diagnosis_dataset(real_layout, DiagnosisConfig(seed=7))


def test_read_real_patient_diagnosis(shared_icbhi: Path) -> None:
    path = shared_icbhi / "patient_diagnosis.csv"
    expected = _independent_diagnoses(path)
    assert read_patient_diagnoses(path) == expected
    # the real table: 126 patients, these diagnoses
    assert Counter(expected.values()) == {"COPD": 64, "Healthy": 26, "URTI": 14, "Bronchiectasis": 7,
                                          "Bronchiolitis": 6, "Pneumonia": 6, "LRTI": 2, "Asthma": 1}


def test_icbhi_patients_and_recordings_per_class(real_dataset, shared_icbhi: Path) -> None:
    diagnoses = _independent_diagnoses(shared_icbhi / "patient_diagnosis.csv")
    names = [p.stem for p in (shared_icbhi / "annotations").glob("*.txt")]
    patients_with_audio = {n.split("_")[0] for n in names}
    want_patients = Counter(MAPPED[d] for p, d in diagnoses.items() if d in MAPPED and p in patients_with_audio)
    want_recordings = Counter(MAPPED[diagnoses[n.split("_")[0]]] for n in names
                              if diagnoses[n.split("_")[0]] in MAPPED)
    icbhi = real_dataset.manifest[real_dataset.manifest["source"] == "icbhi"]
    assert icbhi.groupby("class_name")["patient"].nunique().to_dict() == dict(want_patients)
    assert icbhi.groupby("class_name").size().to_dict() == dict(want_recordings)
    # excluded: every other diagnosis, counted by patient and recording
    excluded = real_dataset.excluded[real_dataset.excluded["source"] == "icbhi"]
    want_excluded = Counter(d for p, d in diagnoses.items() if d not in MAPPED)
    assert excluded.groupby("diagnosis")["patient"].nunique().to_dict() == dict(want_excluded)
    assert len(icbhi) + len(excluded) == len(names) == 920
    counts = excluded_counts(real_dataset)
    row = counts[(counts["source"] == "icbhi") & (counts["diagnosis"] == "urti")].iloc[0]
    assert row["patients"] == 14


def test_labels_paths_and_contract(real_dataset, real_layout: Path) -> None:
    m = real_dataset.manifest
    names = ["asthma", "copd", "normal", "pneumonia"]
    assert (m["label"] == m["class_name"].map(names.index)).all()
    assert all((real_layout / p).is_file() for p in m["path"])
    assert (m["end_s"] == m["duration_s"]).all() and (m["cycle"] == 0).all()
    assert m["fold"].isna().all()
    kauh = m[m["source"] == "kauh"]
    assert kauh["patient"].str.startswith("kauh_").all()
    assert set(kauh["device"]) == {"kauh_bell", "kauh_diaphragm", "kauh_extended"}
    # KAUH: 3 filter modes per subject; heart failure and BRON are excluded
    want = {"normal": 5, "asthma": 4, "copd": 3, "pneumonia": 2}
    assert kauh.groupby("class_name")["patient"].nunique().to_dict() == want
    assert kauh.groupby("class_name").size().to_dict() == {k: 3 * v for k, v in want.items()}
    kauh_excluded = real_dataset.excluded[real_dataset.excluded["source"] == "kauh"]
    assert kauh_excluded.groupby("diagnosis")["patient"].nunique().to_dict() == {"BRON": 1, "heart failure": 2}


def test_patient_split_is_disjoint_and_stratified(real_dataset) -> None:
    m = real_dataset.manifest
    assert (m.groupby("patient")["split"].nunique() == 1).all()
    train = set(m.loc[m["split"] == "train", "patient"])
    test = set(m.loc[m["split"] == "test", "patient"])
    assert train and test and not (train & test)
    per_stratum = m.drop_duplicates("patient").groupby(["class_name", "source"])
    for (cls, src), group in per_stratum:
        n, n_test = len(group), int((group["split"] == "test").sum())
        if n == 1:
            assert n_test == 0  # a lone patient trains
        else:
            assert n_test == min(max(math.floor(0.3 * n + 0.5), 1), n - 1), (cls, src)
    # ICBHI COPD: 64 patients, 30 % -> 19 in test
    copd = m[(m["source"] == "icbhi") & (m["class_name"] == "copd")].drop_duplicates("patient")
    assert (copd["split"] == "test").sum() == 19


def test_split_depends_on_seed_only(real_layout: Path, real_dataset) -> None:
    again = build_diagnosis_dataset(real_layout, DiagnosisConfig(seed=7)).manifest
    pd.testing.assert_frame_equal(again, real_dataset.manifest)
    other = build_diagnosis_dataset(real_layout, DiagnosisConfig(seed=8)).manifest
    assert set(other.loc[other["split"] == "test", "patient"]) != set(
        real_dataset.manifest.loc[real_dataset.manifest["split"] == "test", "patient"])


# --------------------------------------------------------------------------- label map and bad input


@pytest.fixture
def small_raw(tmp_path: Path) -> Path:
    write_synthetic_diagnosis(tmp_path, icbhi_patients={"Healthy": 2, "COPD": 2, "URTI": 1},
                              kauh_patients={"N": 2, "Asthma": 2}, recordings_per_patient=1, duration_s=0.05)
    return tmp_path


def _kauh_file(raw: Path, name: str) -> Path:
    import numpy as np

    return write_wav(raw / "kauh" / "Audio Files" / name, np.zeros(200, dtype="float32"), 4000)


def test_unknown_diagnosis_is_an_error_unless_excluded(small_raw: Path) -> None:
    name = kauh_filename("B", 90, "Sarcoidosis")
    _kauh_file(small_raw, name)
    with pytest.raises(DataError, match="'Sarcoidosis' is neither") as info:
        build_diagnosis_dataset(small_raw)
    assert name in str(info.value)
    cfg = DiagnosisConfig(excluded=[*DiagnosisConfig().excluded, "sarcoidosis"])
    dataset = build_diagnosis_dataset(small_raw, cfg)
    assert "kauh_90" not in set(dataset.manifest["patient"])
    assert dataset.excluded.set_index("patient").loc["kauh_90", "diagnosis"] == "Sarcoidosis"


def test_label_map_is_case_and_space_insensitive(small_raw: Path) -> None:
    _kauh_file(small_raw, kauh_filename("D", 91, "  ASTHMA "))
    m = build_diagnosis_dataset(small_raw).manifest
    assert m.set_index("patient").loc["kauh_91", "class_name"] == "asthma"


def test_config_errors(small_raw: Path) -> None:
    with pytest.raises(ConfigError, match="not one of class_names"):
        build_diagnosis_dataset(small_raw, DiagnosisConfig(label_map={"COPD": "emphysema"}))
    with pytest.raises(ConfigError, match="both in label_map and excluded"):
        build_diagnosis_dataset(small_raw, DiagnosisConfig(excluded=["copd"]))
    with pytest.raises(ConfigError, match="test_fraction"):
        build_diagnosis_dataset(small_raw, DiagnosisConfig(test_fraction=1.0))
    with pytest.raises(ConfigError, match="diagnosis.sources"):
        build_diagnosis_dataset(small_raw, DiagnosisConfig(sources=["coswara"]))
    with pytest.raises(ConfigError, match="kauh_filters"):
        build_diagnosis_dataset(small_raw, DiagnosisConfig(kauh_filters=["Q"]))


def test_one_subject_two_diagnoses(small_raw: Path) -> None:
    _kauh_file(small_raw, kauh_filename("B", 95, "COPD"))
    bad = _kauh_file(small_raw, kauh_filename("D", 95, "Asthma"))
    with pytest.raises(DataError, match="one subject needs one diagnosis") as info:
        build_diagnosis_dataset(small_raw)
    assert bad.name in str(info.value)
    dataset = build_diagnosis_dataset(small_raw, DiagnosisConfig(skip_bad=True))
    assert "kauh_95" not in set(dataset.manifest["patient"])
    assert [Path(f).name for f, _ in dataset.rejects] == [bad.name]


def test_bad_names_and_undiagnosed_patients(small_raw: Path) -> None:
    bad = _kauh_file(small_raw, "BP96_COPD,N,P L L,old,M.wav")
    write_icbhi_named_recordings(small_raw / "icbhi", ["150_1b1_Al_sc_Meditron"], {}, duration_s=0.05)
    with pytest.raises(DataError, match="age 'old'"):
        build_diagnosis_dataset(small_raw, DiagnosisConfig(sources=["kauh"]))
    with pytest.raises(DataError, match="patient 150 has no diagnosis"):
        build_diagnosis_dataset(small_raw, DiagnosisConfig(sources=["icbhi"]))
    dataset = build_diagnosis_dataset(small_raw, DiagnosisConfig(skip_bad=True))
    assert sorted(Path(f).name for f, _ in dataset.rejects) == sorted([bad.name, "150_1b1_Al_sc_Meditron.wav"])


def test_filter_modes_and_sources(small_raw: Path) -> None:
    m = build_diagnosis_dataset(small_raw, DiagnosisConfig(kauh_filters=["D"])).manifest
    kauh = m[m["source"] == "kauh"]
    assert set(kauh["filter_mode"]) == {"diaphragm"} and kauh["patient"].is_unique
    only_icbhi = build_diagnosis_dataset(small_raw, DiagnosisConfig(sources=["icbhi"])).manifest
    assert set(only_icbhi["source"]) == {"icbhi"}


def test_read_patient_diagnoses_formats(tmp_path: Path) -> None:
    tab = tmp_path / "ICBHI_Challenge_diagnosis.txt"
    tab.write_text("101\tURTI\n102\tHealthy\t\n\n103\tCOPD\n")
    assert read_patient_diagnoses(tab) == {"101": "URTI", "102": "Healthy", "103": "COPD"}
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,CLASS\n101,COPD\n102\n")
    with pytest.raises(DataError, match=r"bad.csv:3"):
        read_patient_diagnoses(bad)
    bad.write_text("ID,CLASS\n101,COPD\n101,Asthma\n")
    with pytest.raises(DataError, match=r"bad.csv:3: patient 101 listed again"):
        read_patient_diagnoses(bad)


# --------------------------------------------------------------------------- split and tables


def test_split_patients_sizes() -> None:
    patients = pd.DataFrame({
        "patient": [f"p{i}" for i in range(13)],
        "class_name": ["a"] * 10 + ["b"] * 2 + ["c"],
    })
    split = split_patients(patients, test_fraction=0.3, seed=0, strata=["class_name"])
    got = Counter((c, split[p]) for p, c in zip(patients["patient"], patients["class_name"]))
    assert got == {("a", "test"): 3, ("a", "train"): 7, ("b", "test"): 1, ("b", "train"): 1, ("c", "train"): 1}


def _hand_manifest() -> pd.DataFrame:
    rows = [  # (source, split, class, label, patient)
        ("icbhi", "train", "copd", 1, "101"), ("icbhi", "train", "copd", 1, "101"),
        ("icbhi", "train", "copd", 1, "102"), ("icbhi", "test", "copd", 1, "103"),
        ("kauh", "train", "asthma", 0, "kauh_1"), ("kauh", "test", "asthma", 0, "kauh_2"),
        ("kauh", "test", "asthma", 0, "kauh_2"),
    ]
    return pd.DataFrame(rows, columns=["source", "split", "class_name", "label", "patient"])


def test_class_count_table_by_hand() -> None:
    table = class_count_table(_hand_manifest())
    assert list(table.index) == ["asthma", "copd", "total"]
    assert list(table.columns) == ["icbhi/train", "icbhi/test", "kauh/train", "kauh/test", "total"]
    assert table.loc["copd"].tolist() == [3, 1, 0, 0, 4]
    assert table.loc["asthma"].tolist() == [0, 0, 1, 2, 3]
    assert table.loc["total"].tolist() == [3, 1, 1, 2, 7]
    patients = class_count_table(_hand_manifest(), unit="patients")
    assert patients.loc["copd"].tolist() == [2, 1, 0, 0, 3]
    assert patients.loc["asthma"].tolist() == [0, 0, 1, 1, 2]
