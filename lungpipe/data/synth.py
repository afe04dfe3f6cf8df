"""The embedded synthetic dataset, written in exactly the raw ICBHI layout.

:func:`write_synthetic_icbhi` invents patients, recordings and cycles from a :class:`SynthConfig`
and writes, flat in one folder, what the ICBHI archive holds:

- ``<patient>_<index>_<location>_<mode>_<device>.wav`` + ``.txt`` per recording (annotation lines
  ``start<TAB>end<TAB>crackle<TAB>wheeze``), PCM_16 or PCM_24 at the device's sample rate;
- ``ICBHI_challenge_train_test.txt``: the split, by patient (all of a patient's recordings on one
  side), naming a fraction of the non-Meditron recordings ``…_Meditron`` as the real split file
  does (listed, quoted, in ``filename_differences.txt``) so the reconciliation is exercised;
- ``patient_diagnosis.csv`` (``ID,CLASS``), the diagnosis steering each patient's cycle classes.

:func:`render_from_annotations` renders synthetic audio for given (real) annotation files, with
the same cycle times and labels, for benchmarks at the real database's size.

Everything is seeded per recording (seed + recording name), so the same config gives
byte-identical files whatever the number of worker processes; every draw and every sample is
computed by :mod:`lungpipe.data.portable` (a specified counter-based generator, exactly rounded
maths, our own PCM encoder), so the bytes are also the same on any machine and library version.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungpipe.data.annotations import cycle_label, load_annotations
from lungpipe.data.names import (
    DEVICE_SAMPLE_RATES,
    LOCATIONS,
    RecordingName,
    parse_name,
    read_filename_differences,
    try_parse_name,
)
from lungpipe.data.portable import PortableRng, encode_wav
from lungpipe.data.split import SPLIT_FILE_NAME, read_split_file
from lungpipe.data.synth_audio import SynthAudioConfig, render_recording
from lungpipe.labels import ICBHI_CLASS_NAMES
from lungpipe.util.atomic import write_bytes, write_text
from lungpipe.util.errors import DataError
from lungpipe.util.progress import make_progress

DIAGNOSIS_FILE_NAME = "patient_diagnosis.csv"
DIFFERENCES_FILE_NAME = "filename_differences.txt"


def _default_diagnosis_probs() -> dict[str, float]:
    return {"COPD": 0.35, "Healthy": 0.25, "URTI": 0.14, "Asthma": 0.13, "Pneumonia": 0.13}


def _default_diagnosis_class_probs() -> dict[str, list[float]]:
    # P(normal, crackle, wheeze, both) per diagnosis; overall about the real ICBHI mix
    # (53 % normal, 27 % crackle, 13 % wheeze, 7 % both).
    return {
        "Healthy": [0.90, 0.05, 0.04, 0.01],
        "URTI": [0.75, 0.15, 0.07, 0.03],
        "COPD": [0.35, 0.35, 0.15, 0.15],
        "Asthma": [0.40, 0.10, 0.40, 0.10],
        "Pneumonia": [0.40, 0.45, 0.10, 0.05],
    }


def _default_device_probs() -> dict[str, float]:
    return {"AKGC417L": 0.5, "Meditron": 0.2, "LittC2SE": 0.15, "Litt3200": 0.15}


def _default_device_sample_rates() -> dict[str, list[int]]:
    return {"AKGC417L": [44100], "LittC2SE": [44100], "Litt3200": [4000], "Meditron": [4000, 10000]}


@dataclass
class SynthConfig:
    """Size and make-up of the synthetic dataset (the default: ~24 patients, ~70 recordings,
    ~800 cycles of 1.5–4 s, ~60 % of patients in train)."""

    seed: int = 0
    n_patients: int = 24
    first_patient_id: int = 101
    recordings_per_patient: tuple[int, int] = (1, 5)
    cycles_per_recording: tuple[int, int] = (6, 16)
    cycle_duration_s: tuple[float, float] = (1.5, 4.0)
    lead_in_s: tuple[float, float] = (0.0, 0.6)
    tail_s: tuple[float, float] = (0.1, 0.8)
    diagnosis_probs: dict[str, float] = field(default_factory=_default_diagnosis_probs)
    diagnosis_class_probs: dict[str, list[float]] = field(default_factory=_default_diagnosis_class_probs)
    device_probs: dict[str, float] = field(default_factory=_default_device_probs)
    device_sample_rates: dict[str, list[int]] = field(default_factory=_default_device_sample_rates)
    subtypes: list[str] = field(default_factory=lambda: ["PCM_16", "PCM_24"])
    multichannel_prob: float = 0.5
    test_fraction: float = 0.4
    renamed_fraction: float = 0.15
    audio: SynthAudioConfig = field(default_factory=SynthAudioConfig)

    def validate(self) -> None:
        """A :class:`DataError` naming the field when the config cannot produce a dataset."""
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise DataError(f"SynthConfig: {what}")

        need(self.n_patients >= 2, f"n_patients must be >= 2 (train and test), got {self.n_patients}")
        for name in ("recordings_per_patient", "cycles_per_recording"):
            low, high = getattr(self, name)
            need(1 <= low <= high, f"{name} must be (low, high) with 1 <= low <= high")
        low, high = self.cycle_duration_s
        need(0.2 <= low <= high, "cycle_duration_s must be (low, high) with 0.2 <= low <= high")
        need(0.0 < self.test_fraction < 1.0, "test_fraction must be between 0 and 1")
        need(0.0 <= self.renamed_fraction <= 1.0, "renamed_fraction must be between 0 and 1")
        need(set(self.diagnosis_probs) <= set(self.diagnosis_class_probs),
             f"diagnoses without class probabilities: "
             f"{sorted(set(self.diagnosis_probs) - set(self.diagnosis_class_probs))}")
        for diag, probs in self.diagnosis_class_probs.items():
            need(len(probs) == 4 and min(probs) >= 0 and sum(probs) > 0,
                 f"diagnosis_class_probs[{diag!r}] must be 4 non-negative numbers "
                 "(normal, crackle, wheeze, both)")
        need(set(self.device_probs) <= set(self.device_sample_rates),
             f"devices without sample rates: {sorted(set(self.device_probs) - set(self.device_sample_rates))}")
        for sub in self.subtypes:
            need(sub in ("PCM_16", "PCM_24"), f"subtype {sub!r} is not PCM_16 or PCM_24")


@dataclass
class SynthSummary:
    """What was written."""

    out_dir: Path
    n_patients: int
    n_recordings: int
    n_cycles: int
    recordings_per_split: dict[str, int]
    cycles_per_split: dict[str, int]
    cycles_per_label: dict[str, int]
    sample_rates: dict[int, int]
    subtypes: dict[str, int]
    total_duration_s: float
    renamed: int


@dataclass(frozen=True)
class RecordingPlan:
    """One recording to render: its archive name, split-file name, audio format and cycles
    (an (n, 4) array ``start, end, crackle, wheeze``)."""

    name: str
    split_name: str
    split: str
    sample_rate: int
    subtype: str
    duration_s: float
    cycles: np.ndarray
    annotation_text: str


def recording_rng(seed: int, name: str) -> PortableRng:
    """The generator for one recording's audio: independent of the order recordings are rendered in."""
    return PortableRng("icbhi-synth-audio", seed, name)


def _render_and_write(plan: RecordingPlan, out_dir: Path, seed: int,
                      audio: SynthAudioConfig) -> tuple[str, float]:
    rng = recording_rng(seed, plan.name)
    wave = render_recording(plan.cycles, plan.duration_s, plan.sample_rate, rng, audio)
    write_bytes(out_dir / f"{plan.name}.wav", encode_wav(wave, plan.sample_rate, plan.subtype))
    write_text(out_dir / f"{plan.name}.txt", plan.annotation_text)
    return plan.name, len(wave) / plan.sample_rate


def _render_chunk(args: tuple[list[RecordingPlan], Path, int, SynthAudioConfig]) -> list[tuple[str, float]]:
    plans, out_dir, seed, audio = args
    return [_render_and_write(p, out_dir, seed, audio) for p in plans]


def _render_all(plans: list[RecordingPlan], out_dir: Path, seed: int, audio: SynthAudioConfig,
                workers: int, description: str) -> float:
    """Render every plan (in ``workers`` processes when > 1); returns the total duration (s)."""
    total = 0.0
    with make_progress() as progress:
        task = progress.add_task(description, total=len(plans))
        if workers <= 1:
            for plan in plans:
                total += _render_and_write(plan, out_dir, seed, audio)[1]
                progress.advance(task)
            return total
        chunks = [plans[i:i + 8] for i in range(0, len(plans), 8)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for done in pool.map(_render_chunk, [(c, out_dir, seed, audio) for c in chunks]):
                total += sum(d for _, d in done)
                progress.advance(task, len(done))
    return total


def _format_annotation(cycles: np.ndarray) -> str:
    return "".join(f"{s:.3f}\t{e:.3f}\t{int(c)}\t{int(w)}\n" for s, e, c, w in cycles)


def _choose(rng: PortableRng, probs: dict) -> str:
    keys = list(probs)
    p = np.asarray([probs[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _assign_test_patients(patients: list[int], diagnoses: dict[int, str], fraction: float,
                          rng: PortableRng) -> set[int]:
    """A stratified draw: patients ordered by diagnosis (shuffled within), every k-th one to test
    so each diagnosis is split in about the same proportion; at least one patient per side."""
    order = sorted(patients, key=lambda p: (diagnoses[p], rng.random()))
    n_test = min(max(1, round(fraction * len(order))), len(order) - 1)
    test: set[int] = set()
    for k, patient in enumerate(order):
        if len(test) < round(n_test * (k + 1) / len(order)):
            test.add(patient)
    return test


def plan_synthetic_dataset(cfg: SynthConfig) -> tuple[list[RecordingPlan], dict[int, str], set[str]]:
    """Decide every patient, recording and cycle (no audio yet).

    Returns the recording plans, the diagnosis per patient and the archive names whose split-file
    name was changed to ``…_Meditron``.
    """
    cfg.validate()
    rng = PortableRng("icbhi-synth-plan", cfg.seed)
    patients = [cfg.first_patient_id + i for i in range(cfg.n_patients)]
    diagnoses = {p: _choose(rng, cfg.diagnosis_probs) for p in patients}
    test = _assign_test_patients(patients, diagnoses, cfg.test_fraction, rng)
    plans: list[RecordingPlan] = []
    renamed: set[str] = set()
    for patient in patients:
        device = _choose(rng, cfg.device_probs)
        multichannel = rng.random() < cfg.multichannel_prob
        n_rec = int(rng.integers(cfg.recordings_per_patient[0], cfg.recordings_per_patient[1] + 1))
        locations = rng.permutation(len(LOCATIONS))
        class_p = np.asarray(cfg.diagnosis_class_probs[diagnoses[patient]], dtype=float)
        for j in range(n_rec):
            if multichannel:
                session = j // len(LOCATIONS) + 1
                index, mode = f"{session}b{session}", "mc"
                location = LOCATIONS[locations[j % len(LOCATIONS)]]
            else:
                index, mode = f"{j + 1}b1", "sc"
                location = LOCATIONS[int(rng.integers(len(LOCATIONS)))]
            name = RecordingName(patient, index, location, mode, device)
            split_name = name.name
            if device != "Meditron" and rng.random() < cfg.renamed_fraction:
                split_name = RecordingName(patient, index, location, mode, "Meditron").name
                renamed.add(name.name)
            n_cyc = int(rng.integers(cfg.cycles_per_recording[0], cfg.cycles_per_recording[1] + 1))
            durations = rng.uniform(*cfg.cycle_duration_s, n_cyc)
            gaps = np.where(rng.random(n_cyc) < 0.15, rng.uniform(0.05, 0.4, n_cyc), 0.0)
            starts = rng.uniform(*cfg.lead_in_s) + np.concatenate([[0.0], np.cumsum(durations + gaps)[:-1]])
            ends = starts + durations
            labels = rng.choice(4, n_cyc, p=class_p / class_p.sum())
            cycles = np.column_stack([np.round(starts, 3), np.round(ends, 3), labels % 2, labels // 2])
            duration = round(float(cycles[-1, 1] + rng.uniform(*cfg.tail_s)), 3)
            plans.append(RecordingPlan(
                name=name.name, split_name=split_name,
                split="test" if patient in test else "train",
                sample_rate=int(rng.choice(cfg.device_sample_rates[device])),
                subtype=str(rng.choice(cfg.subtypes)),
                duration_s=duration, cycles=cycles, annotation_text=_format_annotation(cycles),
            ))
    return plans, diagnoses, renamed


def _check_out_dir(out_dir: Path, expected: set[str]) -> None:
    """Refuse to mix with recordings from something else (they would enter the manifest)."""
    if not out_dir.exists():
        return
    stray = sorted(p.name for p in out_dir.iterdir()
                   if p.suffix in (".wav", ".txt") and p.name not in expected)
    if stray:
        raise DataError(
            f"{out_dir}: holds {len(stray)} file(s) this dataset does not write (e.g. {stray[:3]}); "
            "empty the folder or choose another output folder"
        )


def _summary(out_dir: Path, plans: list[RecordingPlan], n_patients: int, total_s: float,
             renamed: int) -> SynthSummary:
    labels = Counter()
    cycles_split = Counter()
    for plan in plans:
        for _, _, c, w in plan.cycles:
            labels[ICBHI_CLASS_NAMES[cycle_label(int(c), int(w))]] += 1
        cycles_split[plan.split] += len(plan.cycles)
    return SynthSummary(
        out_dir=out_dir,
        n_patients=n_patients,
        n_recordings=len(plans),
        n_cycles=sum(len(p.cycles) for p in plans),
        recordings_per_split=dict(sorted(Counter(p.split for p in plans).items())),
        cycles_per_split=dict(sorted(cycles_split.items())),
        cycles_per_label={name: labels.get(name, 0) for name in ICBHI_CLASS_NAMES},
        sample_rates=dict(sorted(Counter(p.sample_rate for p in plans).items())),
        subtypes=dict(sorted(Counter(p.subtype for p in plans).items())),
        total_duration_s=round(total_s, 3),
        renamed=renamed,
    )


def write_synthetic_icbhi(out_dir: Path, cfg: SynthConfig | None = None, *, workers: int = 1) -> SynthSummary:
    """Write a synthetic dataset in the raw ICBHI layout into ``out_dir`` (see module doc)."""
    cfg = cfg or SynthConfig()
    out_dir = Path(out_dir)
    plans, diagnoses, renamed = plan_synthetic_dataset(cfg)
    expected = {f"{p.name}{ext}" for p in plans for ext in (".wav", ".txt")}
    expected |= {SPLIT_FILE_NAME, DIFFERENCES_FILE_NAME}
    _check_out_dir(out_dir, expected)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = _render_all(plans, out_dir, cfg.seed, cfg.audio, workers, "synthetic ICBHI")
    write_text(out_dir / SPLIT_FILE_NAME, "".join(f"{p.split_name}\t{p.split}\n" for p in plans))
    write_text(out_dir / DIAGNOSIS_FILE_NAME,
               "ID,CLASS\n" + "".join(f"{p},{d}\n" for p, d in sorted(diagnoses.items())))
    write_text(out_dir / DIFFERENCES_FILE_NAME, "".join(f"'{n}'\n" for n in sorted(renamed)))
    return _summary(out_dir, plans, len(diagnoses), total, len(renamed))


def _archive_names(split_names: list[str], differences: list[str], source: Path) -> dict[str, str]:
    """Archive name per split-file name: the split name, or the difference with the same
    (patient, recording index, location, mode). A difference matching several names is an error;
    one matching none is ignored (the annotations may be a subset of the database)."""
    by_key: dict[tuple, list[str]] = {}
    for name in split_names:
        by_key.setdefault(parse_name(name).key, []).append(name)
    mapping = {name: name for name in split_names}
    for archive in differences:
        matched = by_key.get(parse_name(archive).key, [])
        if len(matched) > 1:
            raise DataError(
                f"{source}: {archive} matches {len(matched)} annotation files by patient, recording "
                "index, location and mode (expected at most 1); fix the differences file"
            )
        if matched:  # a difference without annotation file: not part of this (sub)set
            mapping[matched[0]] = archive
    return mapping


def render_from_annotations(
    annotations_dir: Path,
    out_dir: Path,
    split_file: Path,
    seed: int = 0,
    filename_differences: Path | None = None,
    *,
    audio: SynthAudioConfig | None = None,
    workers: int = 1,
) -> SynthSummary:
    """Synthetic audio for existing annotation files, in the raw ICBHI layout.

    Each ``<name>.txt`` in ``annotations_dir`` (named as the split file names them) becomes
    ``<archive name>.wav`` + ``.txt`` in ``out_dir`` with the same cycle times and labels; the
    wav lasts until the last cycle's end plus 0.1–0.5 s, at the sample rate of the (archive)
    device (:data:`DEVICE_SAMPLE_RATES`), PCM_16 (a quarter PCM_24). The split file is copied
    unchanged; with ``filename_differences`` the listed archive names are applied.
    """
    annotations_dir, out_dir, split_file = Path(annotations_dir), Path(out_dir), Path(split_file)
    audio = audio or SynthAudioConfig()
    entries, problems = read_split_file(split_file)
    if problems:
        raise DataError("\n".join(p.describe() for p in problems))
    txts = sorted(p for p in annotations_dir.glob("*.txt") if try_parse_name(p.stem) is not None)
    if not txts:
        raise DataError(f"{annotations_dir}: no annotation files named like '101_1b1_Al_sc_Meditron.txt'")
    split_names = [p.stem for p in txts]
    differences = read_filename_differences(filename_differences) if filename_differences else []
    archive = _archive_names(split_names, differences, filename_differences or annotations_dir)
    plans: list[RecordingPlan] = []
    for path in txts:
        if path.stem not in entries:
            raise DataError(f"{path}: {path.stem} is not in the split file {split_file}; add it there")
        name = archive[path.stem]
        device = parse_name(name).device
        if device not in DEVICE_SAMPLE_RATES:
            raise DataError(f"{path}: unknown device {device!r}; known: {sorted(DEVICE_SAMPLE_RATES)}")
        cycles = np.array([(c.start, c.end, c.crackle, c.wheeze) for c in load_annotations(path)])
        rng = PortableRng("icbhi-synth-format", seed, name)
        plans.append(RecordingPlan(
            name=name, split_name=path.stem, split=entries[path.stem].split,
            sample_rate=DEVICE_SAMPLE_RATES[device],
            subtype="PCM_24" if rng.random() < 0.25 else "PCM_16",
            duration_s=round(float(cycles[:, 1].max() + rng.uniform(0.1, 0.5)), 3), cycles=cycles,
            annotation_text=path.read_text(encoding="utf-8"),
        ))
    out_dir.mkdir(parents=True, exist_ok=True)
    total = _render_all(plans, out_dir, seed, audio, workers, "synthetic audio for annotations")
    write_text(out_dir / SPLIT_FILE_NAME, split_file.read_text(encoding="utf-8"))
    patients = {parse_name(p.name).patient for p in plans}
    return _summary(out_dir, plans, len(patients), total, sum(k != v for k, v in archive.items()))
