"""Bad input: audio and annotations at the door (issue 17 item 3). Each row: how a small
synthetic ICBHI folder is damaged, the manifest options, and the fragment the error must contain
(besides the file's name). A reader can scan the table."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lungpipe.data.icbhi import build_manifest
from lungpipe.data.synth import SynthConfig, write_synthetic_icbhi
from lungpipe.features.audio import read_audio
from lungpipe.features.config import NormConfig
from lungpipe.features.stats import ValueSums, combine, norm_constants
from lungpipe.util.errors import DataError


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "raw"
    write_synthetic_icbhi(out, SynthConfig(seed=5, n_patients=3, recordings_per_patient=(1, 1),
                                           cycles_per_recording=(3, 3), cycle_duration_s=(1.0, 1.5)))
    return out


def _victim(raw: Path) -> Path:
    return min(raw.glob("*.wav"))


def _float_wav(raw: Path, change) -> None:
    wav = _victim(raw)
    data, sr = sf.read(wav, dtype="float64")
    change(data)
    sf.write(wav, data, sr, subtype="FLOAT")


def _set_inf(x):
    x[1234] = np.inf


def _set_nan(x):
    x[777] = np.nan


def _times_1000(x):
    x *= 1000.0


def _dangle(raw: Path) -> None:
    wav = _victim(raw)
    wav.unlink()
    os.symlink(raw / "gone" / wav.name, wav)


def _duplicate_line(raw: Path) -> None:
    txt = _victim(raw).with_suffix(".txt")
    lines = txt.read_text().splitlines(keepends=True)
    txt.write_text("".join(lines + lines[:1]))


def _overlap(raw: Path) -> None:
    txt = _victim(raw).with_suffix(".txt")
    first = txt.read_text().splitlines()[0].split("\t")
    start, end = float(first[0]), float(first[1])
    txt.write_text(txt.read_text() + f"{(start + end) / 2:.3f}\t{end:.3f}\t0\t0\n")


#       case                          damage                                     options                 expected fragment
CASES = [
    ("inf sample in float audio",     lambda r: _float_wav(r, _set_inf),         {},                     "non-finite sample inf at sample offset 1234"),
    ("nan sample in float audio",     lambda r: _float_wav(r, _set_nan),         {},                     "non-finite sample nan at sample offset 777"),
    ("float audio scaled x1000",      lambda r: _float_wav(r, _times_1000),      {},                     "is beyond ±1 (limit ±1.01; the file peaks at"),
    ("dangling wav symlink",          _dangle,                                   {},                     "dangling symbolic link"),
    ("duplicated cycle, strict",      _duplicate_line,                           {"strict_cycles": True}, "repeats an earlier line"),
    ("overlapping cycle, strict",     _overlap,                                  {"strict_cycles": True}, "starts before the previous cycle ends"),
    ("any error: the params key hint", lambda r: _float_wav(r, _set_inf),        {},                     "data.manifest.skip_bad: true"),
]


@pytest.mark.parametrize("case,damage,options,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(tmp_path: Path, pristine: Path, case, damage, options, fragment):
    raw = tmp_path / "raw"
    shutil.copytree(pristine, raw, symlinks=True)
    damage(raw)
    with pytest.raises(DataError) as err:
        build_manifest(raw, **options)
    message = str(err.value)
    assert fragment in message and _victim(raw).stem in message  # the .wav or its .txt
    if case == "dangling wav symlink":
        assert "annotation file without wav" not in message and "unreadable" not in message


@pytest.mark.parametrize("case,damage,options,fragment", CASES[:4], ids=[c[0] for c in CASES[:4]])
def test_skip_bad_lists_the_recording_as_a_reject(tmp_path: Path, pristine: Path, case, damage, options, fragment):
    raw = tmp_path / "raw"
    shutil.copytree(pristine, raw, symlinks=True)
    damage(raw)
    result = build_manifest(raw, skip_bad=True, **options)
    victim = _victim(raw).stem
    assert victim not in set(result.cycles["recording"])
    assert result.n_recordings == 2
    reasons = result.rejects[result.rejects["item"] == victim]["reason"].tolist()
    assert any(fragment in r for r in reasons), reasons


def test_duplicated_and_overlapping_cycles_are_a_counted_warning_by_default(tmp_path, pristine, caplog):
    raw = tmp_path / "raw"
    shutil.copytree(pristine, raw)
    _duplicate_line(raw)
    _overlap(raw)
    with caplog.at_level(logging.WARNING):
        result = build_manifest(raw)
    assert len(result.cycles) == 9 + 2
    assert "1 duplicated and 1 overlapping cycle(s) kept" in caplog.text
    assert "data.manifest.strict_cycles: true" in caplog.text


def test_utf8_bom_in_annotation_and_split_files_is_stripped(tmp_path, pristine):
    raw = tmp_path / "raw"
    shutil.copytree(pristine, raw)
    for path in [_victim(raw).with_suffix(".txt"), raw / "ICBHI_challenge_train_test.txt"]:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(build_manifest(raw).cycles) == 9


def test_preprocess_door_refuses_non_finite_audio_naming_file_and_offset(tmp_path):
    x = np.zeros(4000)
    x[2500] = -np.inf
    path = tmp_path / "rec.wav"
    sf.write(path, x, 4000, subtype="DOUBLE")
    with pytest.raises(DataError, match=r"rec\.wav: non-finite sample -inf at sample offset 2500"):
        read_audio(path)


def test_constant_training_features_are_refused_by_the_two_pass_check():
    """One-pass E[x²] − E[x]² gave std 0.0072 on constant log-mel values; two-pass gives ~0."""
    block = np.full((40, 398, 64), -13.815511, dtype=np.float32)
    sums = combine([ValueSums.of(block), ValueSums.of(block[:7]), ValueSums.of(block[:1])])
    assert sums.count == 48 * 398 * 64 and sums.m2 < 1e-9
    with pytest.raises(DataError, match="training features are constant"):
        norm_constants(NormConfig(mode="train_stats"), sums)


def test_cli_strict_cycles_flag_fails_on_a_duplicated_cycle(tmp_path, pristine):
    from typer.testing import CliRunner

    from lungpipe.cli import app

    raw = tmp_path / "raw"
    shutil.copytree(pristine, raw)
    _duplicate_line(raw)
    runner = CliRunner()
    ok = runner.invoke(app, ["data", "manifest", str(raw), str(tmp_path / "m.csv")])
    assert ok.exit_code == 0, ok.output
    strict = runner.invoke(app, ["data", "manifest", str(raw), str(tmp_path / "s.csv"), "--strict-cycles"])
    assert strict.exit_code != 0 and "repeats an earlier line" in strict.output
    assert not (tmp_path / "s.csv").exists()
