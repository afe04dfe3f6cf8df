"""The ICBHI cycle manifest: real metadata (exact counts) and every kind of bad input."""

from __future__ import annotations

import math
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from lungpipe.data.icbhi import MANIFEST_COLUMNS, build_manifest
from lungpipe.util.errors import DataError

SPLIT = "ICBHI_challenge_train_test.txt"


# ----------------------------------------------------------------------------- helpers

def write_sparse_wav(path: Path, sample_rate: int, frames: int) -> None:
    """A valid 16-bit mono PCM wav of ``frames`` samples whose data is a hole in a sparse file:
    the header is real, nothing but the header is written to disk."""
    data_bytes = 2 * frames
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)
    header += b"data" + struct.pack("<I", data_bytes)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + data_bytes)


def write_wav(path: Path, seconds: float, sample_rate: int = 4000, subtype: str = "PCM_16") -> None:
    sf.write(str(path), np.zeros(round(seconds * sample_rate), dtype=np.float32), sample_rate,
             subtype=subtype)


def make_raw(root: Path, recordings: dict[str, tuple[str, float]], split: dict[str, str],
             sample_rate: int = 4000) -> Path:
    """A raw folder: per recording an annotation text and a wav of the given seconds."""
    root.mkdir(parents=True, exist_ok=True)
    for name, (text, seconds) in recordings.items():
        (root / f"{name}.txt").write_text(text)
        write_wav(root / f"{name}.wav", seconds, sample_rate)
    (root / SPLIT).write_text("".join(f"{n}\t{s}\n" for n, s in split.items()))
    return root


GOOD = "0.0\t1.5\t0\t0\n1.5\t3.25\t1\t0\n3.25\t4.5\t0\t1\n4.5 6.0 1 1\n"
A, B, C = "101_1b1_Al_sc_Meditron", "102_1b1_Ar_sc_Meditron", "103_2b2_Ar_mc_LittC2SE"


def good_raw(root: Path) -> Path:
    return make_raw(root, {A: (GOOD, 6.5), B: (GOOD, 6.5), C: ("0.2 2.0 0 0\n", 2.5)},
                    {A: "test", B: "train", C: "train"})


def problems_of(excinfo) -> str:
    return str(excinfo.value)


# ----------------------------------------------------------------------------- real metadata

def test_real_icbhi_metadata_exact_counts(shared_icbhi: Path, tmp_path: Path):
    """The 920 real annotation files, the 91 archive renames and the official split."""
    ann_dir = shared_icbhi / "annotations"
    split_lines = [line.split() for line in (shared_icbhi / "official_split.txt").read_text().splitlines()
                   if line.strip()]
    split = dict(split_lines)
    diffs = [line.strip().strip("'") for line in
             (shared_icbhi / "filename_differences.txt").read_text().splitlines() if line.strip()]
    by_key = {tuple(n.split("_")[:4]): n for n in split}
    archive_of = {by_key[tuple(d.split("_")[:4])]: d for d in diffs}
    assert len(archive_of) == 91

    raw = tmp_path / "raw" / "ICBHI_final_database"
    raw.mkdir(parents=True)
    expected_cycles: Counter = Counter()
    expected_labels: Counter = Counter()
    for txt in sorted(ann_dir.glob("*.txt")):
        text = txt.read_text()
        rows = [line.split() for line in text.splitlines() if line.strip()]
        expected_cycles[split[txt.stem]] += len(rows)
        expected_labels.update(int(r[2]) + 2 * int(r[3]) for r in rows)
        last_end = max(float(r[1]) for r in rows)
        name = archive_of.get(txt.stem, txt.stem)
        (raw / f"{name}.txt").write_text(text)
        write_sparse_wav(raw / f"{name}.wav", 4000, math.ceil(last_end * 4000) + 1)
    (tmp_path / "raw" / SPLIT).write_text((shared_icbhi / "official_split.txt").read_text())

    result = build_manifest(tmp_path / "raw")
    cycles = result.cycles
    assert list(cycles.columns) == list(MANIFEST_COLUMNS)
    assert len(result.rejects) == 0
    assert cycles["recording"].nunique() == 920
    assert len(cycles) == 6898
    per_split = cycles.drop_duplicates("recording")["split"].value_counts().to_dict()
    assert per_split == {"train": 539, "test": 381}
    assert cycles["split"].value_counts().to_dict() == dict(expected_cycles)
    assert cycles["label"].value_counts().to_dict() == dict(expected_labels)
    assert cycles["patient"].nunique() == 126
    renamed = cycles.drop_duplicates("recording")
    renamed = renamed[renamed["recording"] != renamed["split_name"]]
    assert len(renamed) == 91
    assert set(renamed["recording"]) == set(diffs)
    assert (renamed["split_name"].str.endswith("_Meditron")).all()
    assert dict(zip(renamed["split_name"], renamed["recording"])) == archive_of
    # device comes from the archive name (the real file), path is relative to the raw folder
    row = cycles[cycles["recording"] == "101_1b1_Al_sc_AKGC417L"].iloc[0]
    assert row["device"] == "AKGC417L" and row["split_name"] == "101_1b1_Al_sc_Meditron"
    assert row["path"] == "ICBHI_final_database/101_1b1_Al_sc_AKGC417L.wav"
    assert row["split"] == split["101_1b1_Al_sc_Meditron"]


# ----------------------------------------------------------------------------- good input

def test_rows_columns_labels_and_header_facts(tmp_path: Path):
    raw = good_raw(tmp_path / "raw")
    sub = raw / "sub"
    sub.mkdir()
    (raw / f"{C}.wav").rename(sub / f"{C}.wav")
    (raw / f"{C}.txt").rename(sub / f"{C}.txt")
    write_wav(sub / f"{C}.wav", 2.5, 44100, "PCM_24")
    result = build_manifest(raw)
    df = result.cycles
    assert list(df.columns) == list(MANIFEST_COLUMNS)
    assert len(df) == 9 and len(result.rejects) == 0
    a = df[df["recording"] == A]
    assert a["cycle"].tolist() == [0, 1, 2, 3]
    assert a["label"].tolist() == [0, 1, 2, 3]
    assert a["crackle"].tolist() == [0, 1, 0, 1] and a["wheeze"].tolist() == [0, 0, 1, 1]
    assert a["start_s"].tolist() == [0.0, 1.5, 3.25, 4.5]
    assert a["end_s"].tolist() == [1.5, 3.25, 4.5, 6.0]
    assert (a["split"] == "test").all() and (a["patient"] == 101).all()
    assert (a["device"] == "Meditron").all() and (a["location"] == "Al").all()
    assert (a["duration_s"] == 6.5).all() and (a["sample_rate"] == 4000).all()
    c = df[df["recording"] == C].iloc[0]
    assert c["path"] == f"sub/{C}.wav" and c["sample_rate"] == 44100 and c["duration_s"] == 2.5
    assert df["patient"].dtype == np.int64


def test_other_txt_files_are_ignored_and_split_file_can_be_given(tmp_path: Path):
    raw = good_raw(tmp_path / "raw")
    (raw / "ICBHI_Challenge_demographic_information.txt").write_text("101 3.0 F NA 19 99\n")
    (raw / "__MACOSX").mkdir()
    (raw / "__MACOSX" / f"._{A}.wav").write_bytes(b"resource fork")
    (raw / f"._{B}.wav").write_bytes(b"resource fork")
    moved = tmp_path / "elsewhere.txt"
    (raw / SPLIT).rename(moved)
    assert len(build_manifest(raw, moved).cycles) == 9


def test_device_rename_is_reconciled_by_key(tmp_path: Path):
    archive = "101_1b1_Al_sc_AKGC417L"
    raw = make_raw(tmp_path / "raw", {archive: (GOOD, 6.5)}, {A: "train"})
    df = build_manifest(raw).cycles
    assert set(df["recording"]) == {archive} and set(df["split_name"]) == {A}
    assert set(df["device"]) == {"AKGC417L"} and set(df["split"]) == {"train"}


def test_exact_name_wins_over_key_match(tmp_path: Path):
    other = "101_1b1_Al_sc_AKGC417L"
    raw = make_raw(tmp_path / "raw", {A: (GOOD, 6.5), other: (GOOD, 6.5)},
                   {A: "train", other: "test"})
    df = build_manifest(raw).cycles.drop_duplicates("recording").set_index("recording")
    assert df.loc[A, "split"] == "train" and df.loc[other, "split"] == "test"
    assert (df.index == df["split_name"]).all()


# ----------------------------------------------------------------------------- errors

def expect_error(raw: Path, *fragments: str, **kwargs) -> str:
    with pytest.raises(DataError) as excinfo:
        build_manifest(raw, **kwargs)
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    return message


@pytest.mark.parametrize("bad_line, fragment", [
    ("1.0 0.5 0 0", "not after its start"),
    ("1.0 1.0 0 0", "not after its start"),
    ("0.0 1.0 2 0", "crackle flag is '2'"),
    ("0.0 1.0 0 x", "wheeze flag is 'x'"),
    ("0.0 1.0 0", "3 field(s)"),
    ("0.0 1.0 0 0 0", "5 field(s)"),
    ("zero 1.0 0 0", "not numbers"),
    ("-0.5 1.0 0 0", "before the recording"),
])
def test_bad_annotation_line_names_file_and_line(tmp_path: Path, bad_line: str, fragment: str):
    raw = good_raw(tmp_path / "raw")
    (raw / f"{B}.txt").write_text("0.0 1.0 0 0\n" + bad_line + "\n2.0 3.0 0 0\n")
    expect_error(raw, f"{B}.txt, line 2", fragment)


def test_cycle_past_end_of_recording_respects_tolerance(tmp_path: Path):
    raw = good_raw(tmp_path / "raw")
    (raw / f"{B}.txt").write_text("0.0 3.0 0 0\n3.0 6.54 0 0\n")  # wav lasts 6.5 s
    assert len(build_manifest(raw).cycles) == 4 + 2 + 1  # 40 ms over: within the default 50 ms
    expect_error(raw, f"{B}.txt, line 2", "after the end of the recording (6.500 s",
                 end_tolerance_s=0.01)
    (raw / f"{B}.txt").write_text("0.0 3.0 0 0\n3.0 7.0 0 0\n")
    expect_error(raw, f"{B}.txt, line 2", "after the end of the recording")


def test_empty_annotation_file(tmp_path: Path):
    raw = good_raw(tmp_path / "raw")
    (raw / f"{B}.txt").write_text("\n")
    expect_error(raw, f"{B}.txt", "no respiratory cycles")


def test_unreadable_and_empty_wav(tmp_path: Path):
    raw = good_raw(tmp_path / "raw")
    (raw / f"{B}.wav").write_bytes(b"this is not a wav file at all")
    expect_error(raw, f"{B}.wav", "unreadable wav")
    write_wav(raw / f"{B}.wav", 0.0)
    expect_error(raw, f"{B}.wav", "empty wav")


def test_wav_without_annotation_and_annotation_without_wav(tmp_path: Path):
    raw = good_raw(tmp_path / "raw")
    (raw / f"{B}.txt").unlink()
    expect_error(raw, f"{B}.wav", "wav without annotation file")
    raw2 = good_raw(tmp_path / "raw2")
    (raw2 / f"{B}.wav").unlink()
    expect_error(raw2, f"{B}.txt", "annotation file without wav")


def test_recording_absent_from_split_and_split_entry_without_recording(tmp_path: Path):
    raw = good_raw(tmp_path / "raw")
    (raw / SPLIT).write_text(f"{A}\ttest\n{B}\ttrain\n")
    expect_error(raw, f"recording {C} is not in the split file")
    (raw / SPLIT).write_text(f"{A}\ttest\n{B}\ttrain\n{C}\ttrain\n104_1b1_Al_sc_Litt3200\ttest\n")
    expect_error(raw, f"{SPLIT}, line 4", "split entry 104_1b1_Al_sc_Litt3200 has no recording")


def test_ambiguous_matches_are_errors(tmp_path: Path):
    archive = "101_1b1_Al_sc_AKGC417L"
    # one recording, two split entries with its key
    raw = make_raw(tmp_path / "a", {archive: (GOOD, 6.5)},
                   {A: "train", "101_1b1_Al_sc_LittC2SE": "test"})
    expect_error(raw, f"recording {archive} matches several split entries")
    # two recordings, one split entry with their key
    raw = make_raw(tmp_path / "b", {archive: (GOOD, 6.5), "101_1b1_Al_sc_LittC2SE": (GOOD, 6.5)},
                   {A: "train"})
    expect_error(raw, f"split entry {A} matches several recordings")


def test_split_file_problems(tmp_path: Path):
    raw = good_raw(tmp_path / "raw")
    (raw / SPLIT).write_text(f"{A}\ttest\n{B}\tvalidation\n{C}\ttrain\n{A}\ttrain\n")
    expect_error(raw, f"{SPLIT}, line 2", "malformed split line", f"{SPLIT}, line 4", "listed again")
    (raw / SPLIT).unlink()
    expect_error(raw, "no ICBHI_challenge_train_test.txt")
    split_text = f"{A}\ttest\n{B}\ttrain\n{C}\ttrain\n"
    (raw / SPLIT).write_text(split_text)
    (raw / "more").mkdir()
    (raw / "more" / SPLIT).write_text(split_text)
    expect_error(raw, "2 split files named")
    assert len(build_manifest(raw, raw / SPLIT).cycles) == 9


def test_bad_wav_name_and_duplicate_recordings(tmp_path: Path):
    raw = good_raw(tmp_path / "raw")
    write_wav(raw / "notes.wav", 1.0)
    expect_error(raw, "'notes' is not an ICBHI recording name")
    (raw / "notes.wav").unlink()
    (raw / "dup").mkdir()
    write_wav(raw / "dup" / f"{A}.wav", 6.5)
    expect_error(raw, f"2 files named {A}.wav")


def test_default_lists_all_problems_at_once(tmp_path: Path):
    raw = good_raw(tmp_path / "raw")
    (raw / f"{A}.txt").write_text("0 1 0 3\n")
    (raw / f"{B}.wav").write_bytes(b"garbage")
    message = expect_error(raw, "2 problem(s)", f"{A}.txt, line 1", f"{B}.wav", "--skip-bad")
    assert C not in message


# ----------------------------------------------------------------------------- skip_bad

def test_skip_bad_leaves_out_bad_recordings_and_reports_them(tmp_path: Path):
    raw = good_raw(tmp_path / "raw")
    d = "104_1b1_Al_sc_Litt3200"
    (raw / f"{A}.txt").write_text(GOOD + "6.0 6.2 0 1\n6.2 9.0 0 0\n")  # line 6 past the end
    (raw / f"{d}.txt").write_text(GOOD)  # annotation without wav, absent from split
    with (raw / SPLIT).open("a") as f:
        f.write("105_1b1_Tc_sc_Meditron\ttrain\n")  # split entry without recording
    result = build_manifest(raw, skip_bad=True)
    assert sorted(result.cycles["recording"].unique()) == [B, C]
    assert len(result.cycles) == 5
    assert result.cycles.loc[result.cycles["recording"] == B, "cycle"].tolist() == [0, 1, 2, 3]
    rejects = result.rejects
    assert list(rejects.columns) == ["item", "file", "line", "reason"]
    by_item = {item: group for item, group in rejects.groupby("item")}
    assert set(by_item) == {A, d, "105_1b1_Tc_sc_Meditron"}
    assert by_item[A]["line"].tolist() == [6]
    assert by_item[A]["file"].iloc[0].endswith(f"{A}.txt")
    assert by_item["105_1b1_Tc_sc_Meditron"]["line"].tolist() == [4]
    assert any("annotation file without wav" in r for r in by_item[d]["reason"])
    assert any("not in the split file" in r for r in by_item[d]["reason"])


# ----------------------------------------------------------------------------- CLI

def test_cli_manifest_writes_csv_and_rejects(tmp_path: Path):
    from lungpipe.cli import app

    raw = good_raw(tmp_path / "raw")
    (raw / f"{A}.txt").write_text("0 1 0 3\n")
    out, rej = tmp_path / "out" / "manifest.csv", tmp_path / "out" / "rejects.csv"
    runner = CliRunner()
    failed = runner.invoke(app, ["data", "manifest", str(raw), str(out)])
    assert failed.exit_code == 1 and not out.exists()
    ok = runner.invoke(app, ["data", "manifest", str(raw), str(out), "--skip-bad", "--rejects", str(rej)])
    assert ok.exit_code == 0, ok.output
    df = pd.read_csv(out)
    assert list(df.columns) == list(MANIFEST_COLUMNS) and len(df) == 5
    assert pd.read_csv(rej)["item"].tolist() == [A]
    assert "2 recordings" in ok.output and "skipped 1 item" in ok.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["manifest.csv", "rejects.csv"]
