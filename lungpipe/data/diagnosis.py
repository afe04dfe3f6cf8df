"""A public 4-class respiratory *diagnosis* task: asthma / COPD / normal / pneumonia.

MRINet's diagnosis dataset is private; this is our public stand-in, one row per recording:

* ICBHI 2017 recordings labelled with their patient's diagnosis (``patient_diagnosis.csv``, or the
  organisers' ``ICBHI_Challenge_diagnosis.txt``: ``ID,CLASS`` / tab-separated, with or without a
  header). Diagnoses in the real file: URTI, Healthy, Asthma, COPD, LRTI, Bronchiectasis,
  Pneumonia, Bronchiolitis.
* KAUH recordings (Fraiwan et al.), diagnosis read from the file name (:mod:`lungpipe.data.kauh`).

Raw diagnoses go through a label map (case and spacing ignored) onto the class names; diagnoses
listed as excluded are dropped and counted; any other diagnosis is a DataError naming the file.
Patients are split into train/test with a seeded draw stratified by class (and by source), so no
patient is on both sides.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lungpipe.data.class_counts import class_count_table
from lungpipe.data.kauh import (
    KAUH_AUDIO_FILENAME,
    KAUH_AUDIO_SHA256,
    KAUH_AUDIO_URL,
    find_kauh_files,
    parse_kauh_filename,
)
from lungpipe.data.names import try_parse_name
from lungpipe.data.sources import (
    ICBHI_BASE_URL,
    BuiltDataset,
    DatasetSource,
    finalize_manifest,
    probe_audio,
    recording_row,
    relative_to,
    remote_file,
)
from lungpipe.data.synth_datasets import write_synthetic_diagnosis
from lungpipe.util.errors import DataError
from lungpipe.util.typed_config import ConfigError

logger = logging.getLogger(__name__)

DIAGNOSIS_CLASSES: tuple[str, ...] = ("asthma", "copd", "normal", "pneumonia")
DIAGNOSIS_SOURCES: tuple[str, ...] = ("icbhi", "kauh")
#: File names the ICBHI diagnosis table goes by (Kaggle copy, organisers' site).
ICBHI_DIAGNOSIS_FILENAMES: tuple[str, ...] = ("patient_diagnosis.csv", "ICBHI_Challenge_diagnosis.txt")


def _default_label_map() -> dict[str, str]:
    return {
        "Healthy": "normal", "N": "normal", "Normal": "normal",
        "Asthma": "asthma", "COPD": "copd", "Pneumonia": "pneumonia",
    }


def _default_excluded() -> list[str]:
    return [
        # ICBHI
        "URTI", "LRTI", "Bronchiectasis", "Bronchiolitis",
        # KAUH (spellings as they occur in its file names, case ignored)
        "heart failure", "Lung Fibrosis", "BRON", "Plueral Effusion", "Pleural Effusion",
        "Heart Failure + COPD", "Heart Failure + Lung Fibrosis", "Asthma and lung fibrosis",
    ]


@dataclass
class DiagnosisConfig:
    """Options of the combined ICBHI + KAUH diagnosis task."""

    class_names: list[str] = field(default_factory=lambda: list(DIAGNOSIS_CLASSES))
    label_map: dict[str, str] = field(default_factory=_default_label_map)  # raw diagnosis -> class
    excluded: list[str] = field(default_factory=_default_excluded)  # raw diagnoses dropped on purpose
    sources: list[str] = field(default_factory=lambda: list(DIAGNOSIS_SOURCES))
    icbhi_dir: str = ""  # folder under raw_dir searched for ICBHI wavs ("" = raw_dir)
    icbhi_diagnosis_file: str = ""  # relative to raw_dir; "" = find one of ICBHI_DIAGNOSIS_FILENAMES
    kauh_dir: str = ""  # folder under raw_dir searched for KAUH wavs ("" = raw_dir)
    kauh_filters: list[str] = field(default_factory=lambda: ["B", "D", "E"])  # stethoscope filter modes
    test_fraction: float = 0.3
    seed: int = 0
    stratify_by_source: bool = True  # strata = (class, source) instead of class only
    skip_bad: bool = False  # unparsable KAUH names / undiagnosed ICBHI patients: reject, don't fail
    icbhi_archive_url: str = f"{ICBHI_BASE_URL}/ICBHI_final_database.zip"
    icbhi_archive_sha256: str = ""  # none published
    icbhi_archive_filename: str = "ICBHI_final_database.zip"
    icbhi_diagnosis_url: str = f"{ICBHI_BASE_URL}/ICBHI_Challenge_diagnosis.txt"
    icbhi_diagnosis_sha256: str = ""  # none published
    kauh_archive_url: str = KAUH_AUDIO_URL
    kauh_archive_sha256: str = KAUH_AUDIO_SHA256
    kauh_archive_filename: str = KAUH_AUDIO_FILENAME


@dataclass
class DiagnosisDataset:
    """The manifest plus what was left out of it."""

    manifest: pd.DataFrame
    excluded: pd.DataFrame  # recordings whose diagnosis is on the excluded list
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) with skip_bad


def normalize_diagnosis(text: str) -> str:
    """The key a raw diagnosis is matched by: lower case, single spaces."""
    return " ".join(str(text).lower().split())


class LabelMapper:
    """Raw diagnosis → class name (or None when excluded), checked against the config."""

    def __init__(self, cfg: DiagnosisConfig):
        if len(set(cfg.class_names)) != len(cfg.class_names) or not cfg.class_names:
            raise ConfigError(f"diagnosis.class_names must be distinct and non-empty: {cfg.class_names}")
        self.class_names = list(cfg.class_names)
        self.mapping: dict[str, str] = {}
        for raw, target in cfg.label_map.items():
            if target not in self.class_names:
                raise ConfigError(f"diagnosis.label_map[{raw!r}] = {target!r} is not one of "
                                  f"class_names {self.class_names}")
            key = normalize_diagnosis(raw)
            if key in self.mapping and self.mapping[key] != target:
                raise ConfigError(f"diagnosis.label_map maps {raw!r} twice (case/spacing ignored)")
            self.mapping[key] = target
        self.excluded = {normalize_diagnosis(x) for x in cfg.excluded}
        both = sorted(self.excluded & set(self.mapping))
        if both:
            raise ConfigError(f"diagnosis {both} is both in label_map and excluded")

    def resolve(self, diagnosis: str, where: str) -> str | None:
        """The class of ``diagnosis``; None when it is excluded; DataError naming ``where`` else."""
        key = normalize_diagnosis(diagnosis)
        if key in self.mapping:
            return self.mapping[key]
        if key in self.excluded:
            return None
        raise DataError(f"{where}: diagnosis {diagnosis!r} is neither in diagnosis.label_map "
                        f"{sorted(self.mapping)} nor in diagnosis.excluded; add it to one of them")

    def label(self, class_name: str) -> int:
        return self.class_names.index(class_name)


# --------------------------------------------------------------------------- ICBHI diagnoses


def read_patient_diagnoses(path: str | Path) -> dict[str, str]:
    """Patient id → diagnosis from ICBHI's diagnosis table.

    Accepts ``ID,CLASS`` CSV and the organisers' tab-separated text, with or without a header line.
    A malformed line or a patient listed twice with different diagnoses is a DataError naming the
    file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the diagnosis table ({exc})") from exc
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t" if "\t" in line else ",")]
        fields = [f for f in fields if f]
        if len(fields) != 2 or not fields[1]:
            raise DataError(f"{path}:{lineno}: expected 'patient id, diagnosis', got {line!r}")
        patient, diagnosis = fields
        if not patient.isdigit():
            if lineno == 1 and not out:
                continue  # header such as "ID,CLASS"
            raise DataError(f"{path}:{lineno}: patient id {patient!r} is not a number")
        if patient in out and out[patient] != diagnosis:
            raise DataError(f"{path}:{lineno}: patient {patient} listed again with diagnosis {diagnosis!r} "
                            f"(first {out[patient]!r})")
        out[patient] = diagnosis
    if not out:
        raise DataError(f"{path}: no diagnoses found")
    return out


def find_icbhi_recordings(root: str | Path) -> list[tuple[Path, Any]]:
    """``(wav, parsed name)`` for every ICBHI-named ``*.wav`` under ``root``, sorted by path."""
    found = []
    for wav in sorted(Path(root).rglob("*.wav")):
        parsed = try_parse_name(wav.stem) if wav.is_file() else None
        if parsed is not None:
            found.append((wav, parsed))
    return found


def find_icbhi_diagnosis_file(root: Path) -> Path:
    """The ICBHI diagnosis table under ``root`` (names in :data:`ICBHI_DIAGNOSIS_FILENAMES`)."""
    wanted = {name.lower(): rank for rank, name in enumerate(ICBHI_DIAGNOSIS_FILENAMES)}
    found = sorted((wanted[p.name.lower()], str(p)) for p in root.rglob("*") if p.name.lower() in wanted)
    if not found:
        raise DataError(f"{root}: no ICBHI diagnosis table ({', '.join(ICBHI_DIAGNOSIS_FILENAMES)}) in it; "
                        "download it or set diagnosis.icbhi_diagnosis_file")
    return Path(found[0][1])


# --------------------------------------------------------------------------- collecting items


def _subdir(raw_dir: Path, sub: str, what: str) -> Path:
    folder = raw_dir / sub if sub else raw_dir
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} folder not found")
    return folder


def _icbhi_items(raw_dir: Path, cfg: DiagnosisConfig, rejects: list[tuple[str, str]]) -> list[dict[str, Any]]:
    root = _subdir(raw_dir, cfg.icbhi_dir, "ICBHI")
    table = raw_dir / cfg.icbhi_diagnosis_file if cfg.icbhi_diagnosis_file else find_icbhi_diagnosis_file(root)
    diagnoses = read_patient_diagnoses(table)
    wavs = find_icbhi_recordings(root)
    if not wavs:
        raise DataError(f"{root}: no ICBHI recordings (NNN_xxx_Loc_mode_Device.wav) found")
    items = []
    for wav, parsed in wavs:
        patient = str(parsed.patient)
        if patient not in diagnoses:
            reason = f"patient {patient} has no diagnosis in {table}"
            if cfg.skip_bad:
                rejects.append((str(wav), reason))
                continue
            raise DataError(f"{wav}: {reason}; fix the table or set diagnosis.skip_bad")
        items.append({
            "source": "icbhi", "file": wav, "recording": wav.stem, "patient": patient,
            "diagnosis": diagnoses[patient], "device": parsed.device, "location": parsed.location,
        })
    return items


def _kauh_items(raw_dir: Path, cfg: DiagnosisConfig, rejects: list[tuple[str, str]]) -> list[dict[str, Any]]:
    root = _subdir(raw_dir, cfg.kauh_dir, "KAUH")
    filters = {f.upper() for f in cfg.kauh_filters}
    unknown = sorted(filters - {"B", "D", "E"})
    if unknown or not filters:
        raise ConfigError(f"diagnosis.kauh_filters {cfg.kauh_filters} must be a non-empty subset of B, D, E")
    files = find_kauh_files(root)
    if not files:
        raise DataError(f"{root}: no KAUH recordings ({{F}}P{{N}}_....wav) found; extract '{KAUH_AUDIO_FILENAME}'")
    items, seen_ids = [], set()
    first_diagnosis: dict[str, tuple[str, Path]] = {}
    bad_patients: set[str] = set()
    for wav in files:
        try:
            info = parse_kauh_filename(wav)
        except DataError as exc:
            if cfg.skip_bad:
                rejects.append((str(wav), str(exc)))
                continue
            raise
        key = normalize_diagnosis(info.diagnosis)
        if info.patient in first_diagnosis and first_diagnosis[info.patient][0] != key:
            other = first_diagnosis[info.patient][1]
            reason = (f"subject {info.patient_number} has diagnosis {info.diagnosis!r} here but "
                      f"{first_diagnosis[info.patient][0]!r} in {other.name}")
            if not cfg.skip_bad:
                raise DataError(f"{wav}: {reason}; one subject needs one diagnosis")
            bad_patients.add(info.patient)
            rejects.append((str(wav), reason))
            continue
        first_diagnosis.setdefault(info.patient, (key, wav))
        if info.filter_code not in filters:
            continue
        recording, n = info.recording, 2
        while recording in seen_ids:  # a second file for the same subject and filter
            recording, n = f"{info.recording}_{n}", n + 1
        seen_ids.add(recording)
        items.append({
            "source": "kauh", "file": wav, "recording": recording, "patient": info.patient,
            "diagnosis": info.diagnosis, "device": f"kauh_{info.filter_mode}", "location": info.location,
            "filter_mode": info.filter_mode, "sound_type": info.sound_type, "age": info.age, "sex": info.sex,
        })
    return [it for it in items if it["patient"] not in bad_patients]


# --------------------------------------------------------------------------- patient split


def split_patients(
    patients: pd.DataFrame, *, test_fraction: float, seed: int, strata: list[str]
) -> dict[str, str]:
    """Patient → "train"/"test": within each stratum a seeded draw sends round(f·n) patients to test
    (at least one and at most n−1 when the stratum has two or more; a lone patient trains)."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"diagnosis.test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for _, group in patients.groupby(strata, sort=True):
        ids = sorted(group["patient"].astype(str).unique())
        n = len(ids)
        n_test = min(max(math.floor(test_fraction * n + 0.5), 1), n - 1) if n >= 2 else 0
        order = rng.permutation(n)
        test = {ids[i] for i in order[:n_test]}
        for pid in ids:
            assignment[pid] = "test" if pid in test else "train"
    return assignment


# --------------------------------------------------------------------------- the dataset


def build_diagnosis_dataset(raw_dir: str | Path, cfg: DiagnosisConfig | None = None) -> DiagnosisDataset:
    """Collect ICBHI and KAUH recordings, map diagnoses to classes, split by patient."""
    cfg = cfg or DiagnosisConfig()
    raw_dir = Path(raw_dir)
    unknown = sorted(set(cfg.sources) - set(DIAGNOSIS_SOURCES))
    if unknown or not cfg.sources:
        raise ConfigError(f"diagnosis.sources {cfg.sources} must be a non-empty subset of {list(DIAGNOSIS_SOURCES)}")
    mapper = LabelMapper(cfg)
    rejects: list[tuple[str, str]] = []
    items: list[dict[str, Any]] = []
    if "icbhi" in cfg.sources:
        items += _icbhi_items(raw_dir, cfg, rejects)
    if "kauh" in cfg.sources:
        items += _kauh_items(raw_dir, cfg, rejects)

    kept, excluded = [], []
    for item in items:
        class_name = mapper.resolve(item["diagnosis"], str(item["file"]))
        (excluded if class_name is None else kept).append({**item, "class_name": class_name})
    if not kept:
        raise DataError(f"{raw_dir}: no recording has a diagnosis mapped to {mapper.class_names}")

    patients = pd.DataFrame([{"patient": it["patient"], "class_name": it["class_name"], "source": it["source"]}
                             for it in kept]).drop_duplicates()
    strata = ["class_name", "source"] if cfg.stratify_by_source else ["class_name"]
    split = split_patients(patients, test_fraction=cfg.test_fraction, seed=cfg.seed, strata=strata)
    scheme = f"patient_seed{cfg.seed}"

    rows = []
    for item in kept:
        sample_rate, duration_s = probe_audio(item["file"])
        extra = {k: v for k, v in item.items() if k not in ("file", "recording", "patient", "device", "location")}
        rows.append(recording_row(
            recording=item["recording"], patient=item["patient"], label=mapper.label(item["class_name"]),
            path=relative_to(item["file"], raw_dir), sample_rate=sample_rate, duration_s=duration_s,
            device=item["device"], location=item["location"], split=split[item["patient"]],
            split_scheme=scheme, **extra,
        ))
    manifest = finalize_manifest(pd.DataFrame(rows), str(raw_dir))
    _check_patient_disjoint(manifest, str(raw_dir))
    excluded_frame = pd.DataFrame(
        [{"source": it["source"], "patient": it["patient"], "recording": it["recording"],
          "path": relative_to(it["file"], raw_dir), "diagnosis": it["diagnosis"]} for it in excluded],
        columns=["source", "patient", "recording", "path", "diagnosis"],
    )
    if not excluded_frame.empty:
        counts = excluded_frame.groupby(["source", "diagnosis"])["patient"].nunique()
        logger.info("excluded diagnoses (patients): %s",
                    ", ".join(f"{src}/{dx}: {n}" for (src, dx), n in counts.items()))
    if rejects:
        logger.warning("%d file(s) rejected (skip_bad); first: %s — %s", len(rejects), *rejects[0])
    return DiagnosisDataset(manifest=manifest, excluded=excluded_frame, rejects=rejects)


def _check_patient_disjoint(manifest: pd.DataFrame, where: str) -> None:
    sides = manifest.groupby("patient")["split"].nunique()
    if (sides > 1).any():  # would be a bug in split_patients, never bad input
        raise AssertionError(f"{where}: patients on both sides: {list(sides[sides > 1].index)}")


def excluded_counts(dataset: DiagnosisDataset) -> pd.DataFrame:
    """Patients and recordings per (source, diagnosis) left out as excluded diagnoses (diagnosis
    normalised: lower case, single spaces)."""
    columns = ["source", "diagnosis", "patients", "recordings"]
    if dataset.excluded.empty:
        return pd.DataFrame(columns=columns)
    frame = dataset.excluded.assign(diagnosis=dataset.excluded["diagnosis"].map(normalize_diagnosis))
    table = (frame.groupby(["source", "diagnosis"])
             .agg(patients=("patient", "nunique"), recordings=("patient", "size")).reset_index())
    return table[columns].sort_values(["source", "diagnosis"]).reset_index(drop=True)


class DiagnosisSource(DatasetSource):
    """ICBHI + KAUH recordings with asthma / COPD / normal / pneumonia labels, split by patient."""

    name = "diagnosis"
    task = "recording"
    metric_task = "multiclass"
    config_type = DiagnosisConfig
    description = "ICBHI + KAUH recording-level diagnosis (asthma / COPD / normal / pneumonia)"
    default_class_names = DIAGNOSIS_CLASSES

    def class_names_for(self, cfg: DiagnosisConfig, manifest: pd.DataFrame | None = None) -> list[str]:
        return list(cfg.class_names)  # labels are indices into the configured names

    def remote_files(self, cfg: DiagnosisConfig) -> list:
        files = []
        if "icbhi" in cfg.sources:
            files += [remote_file(cfg.icbhi_archive_url, cfg.icbhi_archive_sha256, cfg.icbhi_archive_filename),
                      remote_file(cfg.icbhi_diagnosis_url, cfg.icbhi_diagnosis_sha256,
                                  ICBHI_DIAGNOSIS_FILENAMES[1])]
        if "kauh" in cfg.sources:
            files.append(remote_file(cfg.kauh_archive_url, cfg.kauh_archive_sha256, cfg.kauh_archive_filename))
        return files

    def build_manifest(self, raw_dir: str | Path, cfg: DiagnosisConfig) -> pd.DataFrame:
        return build_diagnosis_dataset(raw_dir, cfg).manifest

    def build(self, raw_dir: str | Path, cfg: DiagnosisConfig) -> BuiltDataset:
        dataset = build_diagnosis_dataset(raw_dir, cfg)
        return BuiltDataset(dataset.manifest, excluded=excluded_counts(dataset),
                            rejects=pd.DataFrame(dataset.rejects, columns=["file", "reason"]))


@dataclass
class DiagnosisSynthConfig(DiagnosisConfig):
    """Diagnosis options plus the size of the synthetic ICBHI + KAUH folder (subject counts per raw
    diagnosis; empty mappings take the writer's defaults)."""

    icbhi_patients: dict[str, int] = field(default_factory=dict)
    kauh_patients: dict[str, int] = field(default_factory=dict)
    recordings_per_patient: int = 2
    sample_rate: int = 4000
    duration_s: float = 2.0
    synth_seed: int = 0


class DiagnosisSynthSource(DiagnosisSource):
    """A synthetic ICBHI + KAUH-shaped diagnosis folder (class-specific tones)."""

    name = "diagnosis_synth"
    description = "synthetic ICBHI + KAUH-shaped diagnosis recordings (`lungpipe data synth-diagnosis`)"
    config_type = DiagnosisSynthConfig
    synthetic = True

    def remote_files(self, cfg: DiagnosisConfig) -> list:
        return []

    def synthesize(self, raw_dir: str | Path, cfg: DiagnosisSynthConfig) -> Path:
        return write_synthetic_diagnosis(
            raw_dir, icbhi_patients=cfg.icbhi_patients or None, kauh_patients=cfg.kauh_patients or None,
            recordings_per_patient=cfg.recordings_per_patient, sample_rate=cfg.sample_rate,
            duration_s=cfg.duration_s, seed=cfg.synth_seed,
        )


__all__ = [
    "DIAGNOSIS_CLASSES", "DiagnosisConfig", "DiagnosisDataset", "DiagnosisSource", "DiagnosisSynthConfig",
    "DiagnosisSynthSource", "LabelMapper",
    "build_diagnosis_dataset", "class_count_table", "excluded_counts", "normalize_diagnosis",
    "read_patient_diagnoses", "split_patients",
]
