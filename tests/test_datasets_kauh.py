"""KAUH file-name convention: {F}P{N}_{diagnosis},{sound type},{location},{age},{sex}.wav."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from lungpipe.data.kauh import find_kauh_files, is_kauh_name, parse_kauh_filename
from lungpipe.data.synth_datasets import write_synthetic_kauh
from lungpipe.util.errors import DataError


def test_parse_documented_example() -> None:
    info = parse_kauh_filename("BP1_Asthma,I E W,P L L,70,M.wav")
    assert (info.filter_code, info.filter_mode, info.patient_number) == ("B", "bell", 1)
    assert (info.diagnosis, info.sound_type, info.location, info.age, info.sex) == (
        "Asthma", "I E W", "P L L", 70, "M")
    assert info.patient == "kauh_1" and info.recording == "kauh_BP1"


def test_fields_are_read_from_the_right_and_trimmed() -> None:
    # a diagnosis with a comma of its own; stray spaces around fields; lower-case sex
    info = parse_kauh_filename(Path("x") / "EP17_Heart Failure, COPD, C , P R U ,61, f.wav")
    assert info.diagnosis == "Heart Failure, COPD"
    assert (info.sound_type, info.location, info.age, info.sex) == ("C", "P R U", 61, "F")
    assert (info.filter_mode, info.patient_number) == ("extended", 17)
    assert parse_kauh_filename("DP112_Heart Failure + Lung Fibrosis,Crep,P R L,80,F.wav").diagnosis == (
        "Heart Failure + Lung Fibrosis")


@pytest.mark.parametrize("name, message", [
    ("XP1_Asthma,E W,P L L,70,M.wav", "filter mode 'X'"),
    ("BP_Asthma,E W,P L L,70,M.wav", "does not start with"),
    ("101_1b1_Al_sc_Meditron.wav", "does not start with"),
    ("BP1_Asthma,E W,70,M.wav", "4 comma-separated field"),
    ("BP1_Asthma,E W,P L L,seventy,M.wav", "age 'seventy'"),
    ("BP1_Asthma,E W,P L L,70,X.wav", "sex 'X'"),
    ("BP1_,E W,P L L,70,M.wav", "empty diagnosis"),
    ("BP1_Asthma,E W,P L L,70,M.mp3", "not a .wav"),
])
def test_bad_names_raise_naming_the_file(name: str, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        parse_kauh_filename(name)
    assert name in str(info.value)


def test_is_kauh_name() -> None:
    assert is_kauh_name("DP3_N,N,A R U,30,F.wav")
    assert not is_kauh_name("101_1b1_Al_sc_Meditron.wav")
    assert not is_kauh_name("DP3_N,N,A R U,30,F.txt")
    assert not is_kauh_name("ZP3_N,N,A R U,30,F.wav")


def test_synthetic_writer_round_trips(tmp_path: Path) -> None:
    wanted = {"N": 2, "Asthma": 3, "heart failure": 1}
    written = write_synthetic_kauh(tmp_path, wanted, filters="BDE", duration_s=0.05, first_number=5)
    found = find_kauh_files(tmp_path)
    assert found == sorted(written) and len(found) == 3 * sum(wanted.values())
    infos = [parse_kauh_filename(p) for p in found]
    per_diag = Counter((i.diagnosis, i.patient_number) for i in infos)
    assert all(n == 3 for n in per_diag.values())  # one file per filter mode
    assert Counter(d for d, _ in per_diag) == Counter(wanted)
    assert sorted({i.patient_number for i in infos}) == list(range(5, 11))
    assert Counter(i.filter_code for i in infos) == {"B": 6, "D": 6, "E": 6}
