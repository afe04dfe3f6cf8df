"""The synthetic ICBHI dataset: layout, determinism, and that each class sounds like itself.

Crackles are measured as short bursts of high-passed energy (2 ms frames standing out 4× from
the local level, for less than 20 ms); wheezes as a spectral peak between 100 and 1000 Hz (well
above the neighbouring bins) held at about the same frequency for more than 80 ms.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy import ndimage, signal
from typer.testing import CliRunner

from lungpipe.data.icbhi import build_manifest
from lungpipe.data.portable import PortableRng
from lungpipe.data.synth import SynthConfig, render_from_annotations, write_synthetic_icbhi
from lungpipe.data.synth_audio import SynthAudioConfig, render_recording
from lungpipe.util.errors import DataError

# ----------------------------------------------------------------------------- measures


def short_transients(x: np.ndarray, sr: int, ratio: float = 4.0) -> np.ndarray:
    """Durations (s) of bursts whose 2 ms high-passed RMS exceeds ``ratio`` × the local median
    (over 100 ms); heart sounds (< 100 Hz) are filtered out first."""
    y = signal.sosfiltfilt(signal.butter(4, 150, "highpass", fs=sr, output="sos"), x)
    f = max(1, int(0.002 * sr))
    nf = len(y) // f
    rms = np.sqrt((y[: nf * f].reshape(nf, f) ** 2).mean(axis=1)) + 1e-12
    local = ndimage.median_filter(rms, size=51, mode="nearest")
    above = np.concatenate([[0], (rms > ratio * local).astype(int), [0]])
    edges = np.diff(above)
    return (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)) * f / sr


def longest_tone_s(x: np.ndarray, sr: int, prominence: float = 10.0, low: float = 150.0,
                   high: float = 1000.0) -> float:
    """Longest time (s) a spectral peak in [low, high] Hz stands ``prominence``× above the median
    of its neighbouring bins while moving at most 2 bins (50 Hz) per 10 ms hop (40 ms window;
    a single missing frame does not end it).
    The band starts at 150 Hz: heart sounds' leakage reaches ~100 Hz."""
    x, sr = downsampled(x, sr)
    win, hop = int(0.04 * sr), int(0.01 * sr)
    f, _, spec = signal.stft(x, sr, nperseg=win, noverlap=win - hop, boundary=None, padded=False)
    power = np.abs(spec) ** 2
    ratio = power / (ndimage.median_filter(power, size=(15, 1), mode="nearest") + 1e-20)
    band = ratio[(f >= low) & (f <= high)]
    peak_bin, peak = band.argmax(axis=0), band.max(axis=0)
    best = run = 0
    last = -10  # frame of the run's last peak; one frame may be missed (a crackle on top)
    for i in range(len(peak)):
        if peak[i] <= prominence:
            if i - last > 1:
                run = 0
            continue
        if run and i - last <= 2 and abs(int(peak_bin[i]) - int(peak_bin[last])) <= 2:
            run += i - last
        else:
            run = 1
        last = i
        best = max(best, run)
    return best * hop / sr


def downsampled(x: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """44.1 kHz → 11.025 kHz (everything measured here lies below 2 kHz): keeps tests fast."""
    factor = sr // 10000
    return (signal.resample_poly(x, 1, factor), sr // factor) if factor > 1 else (x, sr)


def cycle_audio(raw: Path, row) -> np.ndarray:
    x, sr = sf.read(raw / row.path, dtype="float64")
    return x[int(row.start_s * sr): int(row.end_s * sr)]


# ----------------------------------------------------------------------------- fixtures

# small, with mostly diseased patients so that every class has enough cycles to measure
SMALL = {
    "n_patients": 8, "recordings_per_patient": (2, 4), "cycles_per_recording": (5, 10),
    "device_probs": {"AKGC417L": 0.4, "Meditron": 0.3, "LittC2SE": 0.15, "Litt3200": 0.15},
    "diagnosis_probs": {"COPD": 0.6, "Asthma": 0.2, "Pneumonia": 0.2},
}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> tuple[Path, SynthConfig, object]:
    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(seed=7, **SMALL)
    return out, cfg, write_synthetic_icbhi(out, cfg)


# ----------------------------------------------------------------------------- layout


def test_layout_round_trips_through_build_manifest(small_set):
    out, cfg, summary = small_set
    result = build_manifest(out)
    df = result.cycles
    assert len(result.rejects) == 0
    assert df["recording"].nunique() == summary.n_recordings
    assert len(df) == summary.n_cycles
    assert df["patient"].nunique() == cfg.n_patients == summary.n_patients
    per_patient = df.drop_duplicates("recording").groupby("patient").size()
    assert per_patient.between(*cfg.recordings_per_patient).all()
    per_recording = df.groupby("recording").size()
    assert per_recording.between(*cfg.cycles_per_recording).all()
    durations = df["end_s"] - df["start_s"]
    assert durations.between(cfg.cycle_duration_s[0] - 0.002, cfg.cycle_duration_s[1] + 0.002).all()
    assert (df["end_s"] <= df["duration_s"]).all()
    # split by patient, about the configured fraction of patients in test
    sides = df.groupby("patient")["split"].nunique()
    assert (sides == 1).all()
    n_test = df.loc[df["split"] == "test", "patient"].nunique()
    assert n_test == round(cfg.test_fraction * cfg.n_patients)
    assert df["split"].value_counts().to_dict() == summary.cycles_per_split
    labels = Counter(df["label"].map({0: "normal", 1: "crackle", 2: "wheeze", 3: "both"}))
    assert {k: labels.get(k, 0) for k in summary.cycles_per_label} == summary.cycles_per_label
    # the renamed devices come back reconciled, listed in filename_differences.txt
    recs = df.drop_duplicates("recording")
    renamed = recs[recs["recording"] != recs["split_name"]]
    assert len(renamed) == summary.renamed > 0
    assert renamed["split_name"].str.endswith("_Meditron").all()
    listed = {n.strip().strip("'") for n in (out / "filename_differences.txt").read_text().split()}
    assert listed == set(renamed["recording"])
    diagnoses = pd.read_csv(out / "patient_diagnosis.csv")
    assert list(diagnoses.columns) == ["ID", "CLASS"]
    assert set(diagnoses["ID"]) == set(df["patient"])
    assert set(diagnoses["CLASS"]) <= set(cfg.diagnosis_probs)


def test_several_sample_rates_and_bit_depths(small_set):
    out, _, summary = small_set
    infos = [sf.info(str(p)) for p in sorted(out.glob("*.wav"))]
    rates = Counter(i.samplerate for i in infos)
    subtypes = Counter(i.subtype for i in infos)
    assert len(rates) >= 2 and set(rates) <= {4000, 10000, 44100}
    assert set(subtypes) == {"PCM_16", "PCM_24"}
    assert dict(rates) == summary.sample_rates and dict(subtypes) == summary.subtypes


def test_same_config_gives_identical_bytes_other_seed_does_not(tmp_path: Path):
    tiny = {"n_patients": 3, "recordings_per_patient": (1, 2), "cycles_per_recording": (2, 4)}
    write_synthetic_icbhi(tmp_path / "a", SynthConfig(seed=1, **tiny))
    write_synthetic_icbhi(tmp_path / "b", SynthConfig(seed=1, **tiny), workers=2)
    write_synthetic_icbhi(tmp_path / "c", SynthConfig(seed=2, **tiny))
    files_a = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files_a == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert len([f for f in files_a if f.endswith(".wav")]) >= 3
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    wav_a = {p.name: p.read_bytes() for p in (tmp_path / "a").glob("*.wav")}
    wav_c = {p.name: p.read_bytes() for p in (tmp_path / "c").glob("*.wav")}
    assert all(wav_c.get(name) != data for name, data in wav_a.items())


def test_refuses_a_folder_with_other_recordings(tmp_path: Path):
    (tmp_path / "999_1b1_Al_sc_Meditron.wav").write_bytes(b"")
    with pytest.raises(DataError, match="empty the folder"):
        write_synthetic_icbhi(tmp_path, SynthConfig(n_patients=2))


def test_bad_config_is_named():
    with pytest.raises(DataError, match="test_fraction"):
        SynthConfig(test_fraction=1.5).validate()


# ----------------------------------------------------------------------------- sound of each class

STRONG = SynthAudioConfig(crackle_peak_ratio=(8.0, 12.0), wheeze_amp_ratio=(1.0, 1.5), polyphonic_prob=0.0)
PATTERN = [0, 1, 2, 3, 0, 1, 2, 3, 0, 0]


@pytest.mark.parametrize("sr", [4000, 10000, 44100])
def test_each_cycle_contains_what_its_label_says(sr: int):
    """At a clear SNR every cycle of 4 recordings (40 cycles) is checked: crackle-only cycles hold
    ≥ 2 short (< 20 ms) transients, wheeze cycles a > 80 ms tone in 100–1000 Hz, normal cycles
    neither. The detectors are simple, so a few random draws fool them (about 1 cycle in 50, the
    same before and after the portable synthesiser): at most 3 of the 40 cycles may fail a check.
    (Under a loud wheeze the burst detector misses crackles more often, so 'both' cycles are
    counted together.)"""
    durations = np.array([2.0, 2.5, 3.0, 1.8, 2.2, 3.5, 2.0, 2.8, 1.6, 2.4])
    starts = 0.3 + np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    labels = np.array(PATTERN)
    cycles = np.column_stack([starts, starts + durations, labels % 2, labels // 2])
    failed = []
    for seed in range(4):
        x = render_recording(cycles, float(cycles[-1, 1] + 0.4), sr, PortableRng("cycle-content", sr, seed), STRONG)
        assert x.dtype == np.float32 and np.abs(x).max() <= 1.0
        bursts_in_both = []
        for label, (start, end, _, _) in zip(labels, cycles):
            seg = x[int(start * sr): int(end * sr)].astype(np.float64)
            bursts = short_transients(seg, sr)
            tone = longest_tone_s(seg, sr)
            if label == 1:
                ok = (bursts < 0.02).sum() >= 2 and (bursts >= 0.02).sum() == 0
            elif label == 3:
                bursts_in_both.append((bursts < 0.02).sum())
                ok = True
            else:
                ok = len(bursts) == 0
            ok = ok and (tone > 0.08 if label >= 2 else tone < 0.08)
            if not ok:
                failed.append((seed, label, start, bursts.round(3).tolist(), tone))
        assert sum(bursts_in_both) >= 2 * len(bursts_in_both), seed
    assert len(failed) <= 3, failed


def test_default_levels_separate_classes_on_average(small_set):
    """With the default (varied, sometimes weak) levels most abnormal cycles are still found by
    the simple measures and normal cycles almost never trip them."""
    out, _, _ = small_set
    df = build_manifest(out).cycles
    found_crackle, found_wheeze = [], []
    for row in df.itertuples():
        seg = cycle_audio(out, row)
        sr = row.sample_rate
        found_crackle.append((short_transients(seg, sr) < 0.02).sum() >= 2)
        found_wheeze.append(longest_tone_s(seg, sr) > 0.08)
    df = df.assign(found_crackle=found_crackle, found_wheeze=found_wheeze)
    by_label = df.groupby("label")[["found_crackle", "found_wheeze"]].mean()
    assert set(by_label.index) == {0, 1, 2, 3}
    assert by_label.loc[1, "found_crackle"] >= 0.8 and by_label.loc[3, "found_crackle"] >= 0.6
    assert by_label.loc[2, "found_wheeze"] >= 0.75 and by_label.loc[3, "found_wheeze"] >= 0.6
    assert by_label.loc[0, "found_crackle"] <= 0.03 and by_label.loc[0, "found_wheeze"] <= 0.03
    assert by_label.loc[2, "found_crackle"] <= 0.05 and by_label.loc[1, "found_wheeze"] <= 0.05


# ----------------------------------------------------------------------------- real annotations


def test_render_from_real_annotations(shared_icbhi: Path, tmp_path: Path):
    """A few real annotation files, two of them among the archive renames."""
    picked = ["101_1b1_Al_sc_Meditron", "105_1b1_Tc_sc_Meditron", "104_1b1_Al_sc_Litt3200",
              "103_2b2_Ar_mc_LittC2SE"]
    ann = tmp_path / "ann"
    ann.mkdir()
    split = dict(line.split() for line in (shared_icbhi / "official_split.txt").read_text().splitlines()
                 if line.strip())
    for name in picked:
        (ann / f"{name}.txt").write_text((shared_icbhi / "annotations" / f"{name}.txt").read_text())
    split_file = tmp_path / "split.txt"
    split_file.write_text("".join(f"{n}\t{split[n]}\n" for n in picked))
    out = tmp_path / "raw"
    summary = render_from_annotations(ann, out, split_file, seed=3,
                                      filename_differences=shared_icbhi / "filename_differences.txt")
    assert summary.renamed == 2 and summary.n_recordings == 4
    df = build_manifest(out).cycles
    recs = df.drop_duplicates("recording").set_index("split_name")
    assert recs.loc["101_1b1_Al_sc_Meditron", "recording"] == "101_1b1_Al_sc_AKGC417L"
    assert recs.loc["105_1b1_Tc_sc_Meditron", "recording"] == "105_1b1_Tc_sc_LittC2SE"
    assert recs["sample_rate"].to_dict() == {"101_1b1_Al_sc_Meditron": 44100, "105_1b1_Tc_sc_Meditron": 44100,
                                             "104_1b1_Al_sc_Litt3200": 4000, "103_2b2_Ar_mc_LittC2SE": 44100}
    for name in picked:
        rows = [line.split() for line in (ann / f"{name}.txt").read_text().splitlines() if line.strip()]
        got = df[df["split_name"] == name]
        assert got["start_s"].tolist() == [float(r[0]) for r in rows]
        assert got["label"].tolist() == [int(r[2]) + 2 * int(r[3]) for r in rows]
        assert (got["split"] == split[name]).all()
        assert (got["duration_s"] >= got["end_s"].max()).all()


def test_cli_synth(tmp_path: Path):
    from lungpipe.cli import app

    result = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "s"), "--seed", "4", "--n-patients", "2"])
    assert result.exit_code == 0, result.output
    assert build_manifest(tmp_path / "s").cycles["patient"].nunique() == 2
    bad = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "t"), "--from-annotations", str(tmp_path)])
    assert bad.exit_code == 1 and "--split-file" in bad.output
