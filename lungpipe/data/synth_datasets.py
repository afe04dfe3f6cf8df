"""Small synthetic folders shaped like ESC-50, KAUH and ICBHI recordings (tests, fast default runs).

Each class gets its own signal (a class-specific tone with a harmonic and a class-specific
amplitude-modulation rate, plus a little noise), so a classifier can learn the task and a test can
check that it did. File names and metadata follow each dataset's real conventions, so the same
manifest builders read them as the real data. Draws, maths and WAV encoding go through
:mod:`lungpipe.data.portable`, so the files are the same bytes on any machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lungpipe.data import portable as pm
from lungpipe.data.esc50 import AUDIO_DIRNAME, ESC50_CATEGORIES, META_RELPATH
from lungpipe.util.atomic import write_bytes, write_csv, write_text

#: Which class signal each (normalised) diagnosis gets in the synthetic diagnosis data.
_DIAGNOSIS_TONE_INDEX = {"normal": 0, "healthy": 0, "n": 0, "asthma": 1, "copd": 2, "pneumonia": 3}


def class_signal(
    class_index: int, n_classes: int, sample_rate: int, n_samples: int, rng: pm.PortableRng
) -> np.ndarray:
    """A float32 clip in [-1, 1] whose spectrum identifies ``class_index`` among ``n_classes``.

    Tone frequency steps evenly from 5 % to 40 % of the sample rate; random phase, level and a
    small frequency jitter make every clip different.
    """
    t = np.arange(n_samples) / sample_rate
    lo, hi = 0.05 * sample_rate, 0.40 * sample_rate
    freq = lo + (hi - lo) * (class_index + 0.5) / max(n_classes, 1)
    freq *= 1.0 + rng.uniform(-0.01, 0.01)
    phase = rng.uniform(0, 2 * np.pi)
    tone = pm.sin(2 * np.pi * freq * t + phase)
    if 2 * freq < 0.45 * sample_rate:
        tone = tone + 0.3 * pm.sin(4 * np.pi * freq * t + phase)
    am_rate = 1.0 + (class_index % 5)
    envelope = 0.6 + 0.4 * pm.sin(2 * np.pi * am_rate * t)
    noise = rng.normal(0.0, 0.05, n_samples)
    clip = rng.uniform(0.3, 0.6) * envelope * tone + noise
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM WAV, encoded in memory (:func:`~lungpipe.data.portable.encode_wav`) and written
    atomically."""
    return write_bytes(path, pm.encode_wav(samples, sample_rate, "PCM_16"))


# --------------------------------------------------------------------------- ESC-50


def write_synthetic_esc50(
    out_dir: str | Path,
    *,
    n_per_class: int = 10,
    n_classes: int = 10,
    n_folds: int = 5,
    sample_rate: int = 16000,
    duration_s: float = 5.0,
    seed: int = 0,
) -> Path:
    """Write an ESC-50-shaped folder (``meta/esc50.csv`` + ``audio/*.wav``) and return it.

    Clips come in pairs cut from one fake source clip (takes A and B, same fold), folds are
    assigned round-robin per class, so every fold holds about n_per_class / n_folds clips of every
    class. Category names are ESC-50's for the first 50 targets.
    """
    if n_classes < 1 or n_per_class < 1 or n_folds < 1:
        raise ValueError("n_classes, n_per_class and n_folds must be positive")
    out_dir = Path(out_dir)
    rng = pm.PortableRng("esc50-synth", seed)
    n_samples = round(duration_s * sample_rate)
    rows = []
    for target in range(n_classes):
        category = ESC50_CATEGORIES[target] if target < len(ESC50_CATEGORIES) else f"class_{target}"
        for j in range(n_per_class):
            source_idx, take = divmod(j, 2)
            fold = source_idx % n_folds + 1
            src_file = str(100000 + 1000 * target + source_idx)
            take_letter = "AB"[take]
            filename = f"{fold}-{src_file}-{take_letter}-{target}.wav"
            write_wav(out_dir / AUDIO_DIRNAME / filename,
                      class_signal(target, n_classes, sample_rate, n_samples, rng), sample_rate)
            rows.append({"filename": filename, "fold": fold, "target": target, "category": category,
                         "esc10": False, "src_file": src_file, "take": take_letter})
    write_csv(out_dir / META_RELPATH, pd.DataFrame(rows).sort_values("filename"))
    return out_dir


# --------------------------------------------------------------------------- KAUH


def kauh_filename(filter_code: str, number: int, diagnosis: str, sound_type: str = "N",
                  location: str = "P L L", age: int = 50, sex: str = "M") -> str:
    """A file name in KAUH's convention ``{F}P{N}_{diagnosis},{sound},{location},{age},{sex}.wav``."""
    return f"{filter_code}P{number}_{diagnosis},{sound_type},{location},{age},{sex}.wav"


def write_synthetic_kauh(
    out_dir: str | Path,
    patients: Mapping[str, int] | None = None,
    *,
    filters: str = "BDE",
    first_number: int = 1,
    sample_rate: int = 4000,
    duration_s: float = 2.0,
    seed: int = 0,
    subdir: str = "Audio Files",
) -> list[Path]:
    """Write KAUH-named recordings: ``patients`` maps a diagnosis (as written in the names) to a
    number of subjects; each subject gets one file per filter mode. Returns the files written."""
    patients = dict(patients or {"N": 4, "Asthma": 4, "COPD": 4, "pneumonia": 3, "heart failure": 2})
    rng = pm.PortableRng("kauh-synth", seed)
    n_samples = round(duration_s * sample_rate)
    folder = Path(out_dir) / subdir if subdir else Path(out_dir)
    written, number = [], first_number
    for diagnosis, count in patients.items():
        tone = _DIAGNOSIS_TONE_INDEX.get(" ".join(diagnosis.lower().split()), 4)
        for _ in range(count):
            age, sex = int(rng.integers(18, 80)), str(rng.choice(["M", "F"]))
            for code in filters:
                name = kauh_filename(code, number, diagnosis, age=age, sex=sex)
                written.append(write_wav(folder / name, class_signal(tone, 5, sample_rate, n_samples, rng),
                                         sample_rate))
            number += 1
    return written


# --------------------------------------------------------------------------- ICBHI-named recordings


def write_icbhi_named_recordings(
    out_dir: str | Path,
    names: Sequence[str],
    diagnoses: Mapping[str, str],
    *,
    sample_rate: int = 4000,
    duration_s: float = 0.25,
    seed: int = 0,
) -> list[Path]:
    """Write one WAV per ICBHI recording name (``101_1b1_Al_sc_Meditron``), its signal chosen by
    the patient's diagnosis in ``diagnoses`` (patient id → diagnosis). No annotations: this is
    recording-level data for the diagnosis task, not a cycle dataset."""
    rng = pm.PortableRng("icbhi-named-synth", seed)
    n_samples = round(duration_s * sample_rate)
    out_dir = Path(out_dir)
    written = []
    for name in names:
        stem = Path(name).name.removesuffix(".wav")
        diagnosis = diagnoses.get(str(int(stem.split("_")[0])), "")
        tone = _DIAGNOSIS_TONE_INDEX.get(diagnosis.lower(), 4)
        written.append(write_wav(out_dir / f"{stem}.wav",
                                 class_signal(tone, 5, sample_rate, n_samples, rng), sample_rate))
    return written


def write_patient_diagnosis_csv(path: str | Path, diagnoses: Mapping[str, str]) -> Path:
    """ICBHI's ``patient_diagnosis.csv`` layout (``ID,CLASS``)."""
    lines = ["ID,CLASS", *(f"{pid},{dx}" for pid, dx in sorted(diagnoses.items(), key=lambda kv: int(kv[0])))]
    return write_text(path, "\n".join(lines) + "\n")


def write_synthetic_diagnosis(
    out_dir: str | Path,
    *,
    icbhi_patients: Mapping[str, int] | None = None,
    kauh_patients: Mapping[str, int] | None = None,
    recordings_per_patient: int = 2,
    sample_rate: int = 4000,
    duration_s: float = 2.0,
    seed: int = 0,
) -> Path:
    """A raw folder for the diagnosis task: ``icbhi/`` (ICBHI-named WAVs + patient_diagnosis.csv)
    and ``kauh/Audio Files/`` (KAUH-named WAVs). Patient counts are per raw diagnosis."""
    out_dir = Path(out_dir)
    icbhi_patients = dict(icbhi_patients or {"Healthy": 6, "COPD": 6, "Asthma": 2, "Pneumonia": 4, "URTI": 2})
    diagnoses: dict[str, str] = {}
    names: list[str] = []
    pid = 101
    locations = ("Al", "Ar", "Pl", "Pr", "Tc")
    for diagnosis, count in icbhi_patients.items():
        for _ in range(count):
            diagnoses[str(pid)] = diagnosis
            names += [f"{pid}_{k + 1}b1_{locations[k % len(locations)]}_sc_Meditron"
                      for k in range(recordings_per_patient)]
            pid += 1
    write_icbhi_named_recordings(out_dir / "icbhi", names, diagnoses, sample_rate=sample_rate,
                                 duration_s=duration_s, seed=seed)
    write_patient_diagnosis_csv(out_dir / "icbhi" / "patient_diagnosis.csv", diagnoses)
    write_synthetic_kauh(out_dir / "kauh", kauh_patients, sample_rate=sample_rate, duration_s=duration_s,
                         seed=seed + 1)
    return out_dir
