"""ESC-50 (environmental sound classification): 2000 five-second clips, 50 classes, 5 folds.

Layout of the public repository (and of its GitHub archive, extracted as ``ESC-50-master/``):

* ``meta/esc50.csv`` with the columns ``filename, fold, target, category, esc10, src_file, take``;
* ``audio/*.wav``: 44.1 kHz mono, 5 s, named ``{fold}-{src_file}-{take}-{target}.wav`` where
  ``src_file`` is the Freesound clip the fragment was cut from and ``take`` a letter telling the
  fragments of one clip apart. Fragments of one Freesound clip sit in a single fold.

The manifest has one row per clip: ``label = target``, ``class_name = category``,
``patient = src_file`` (the grouping unit for any validation split), ``fold`` 1..5, and
``split`` = test for the held-out fold (:func:`split_for_fold`, which also sets
``split_scheme`` = ``fold{k}``). Results are reported as the mean
accuracy over the five held-out folds.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lungpipe.data.sources import (
    FOLD_COLUMN,
    DatasetSource,
    class_names_from_manifest,
    finalize_manifest,
    probe_audio,
    recording_row,
    relative_to,
    remote_file,
)
from lungpipe.util.errors import DataError

META_RELPATH = Path("meta") / "esc50.csv"
AUDIO_DIRNAME = "audio"
META_COLUMNS: tuple[str, ...] = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
#: ``{fold}-{src_file}-{take}-{target}.wav`` (the repository README's naming convention).
FILENAME_PATTERN = re.compile(r"^(?P<fold>\d+)-(?P<src_file>[^-]+)-(?P<take>[A-Za-z]+)-(?P<target>\d+)\.wav$")
#: The dataset's own download link (README "Download" section; the README spells the owner
#: ``karoldvl``, the repository now lives under ``karolpiczak``). The archive is built from the
#: moving ``master`` branch, so no checksum is published; pin one after a verified download.
ESC50_ARCHIVE_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
N_FOLDS = 5
N_CLASSES = 50
#: ``category`` of each ``target`` 0..49 in ``meta/esc50.csv`` (the data stays the authority:
#: manifests carry the names read from the file).
ESC50_CATEGORIES: tuple[str, ...] = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm",
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing",
    "brushing_teeth", "snoring", "drinking_sipping",
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening",
    "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane",
    "fireworks", "hand_saw",
)


@dataclass
class Esc50Config:
    """Options of the ESC-50 source."""

    archive_url: str = ESC50_ARCHIVE_URL
    archive_sha256: str = ""  # unknown (see ESC50_ARCHIVE_URL)
    archive_filename: str = "ESC-50-master.zip"
    root: str = ""  # folder (relative to raw_dir) holding meta/ and audio/; "" finds it
    test_fold: int = 1  # the held-out fold of this manifest (1..n_folds)
    n_folds: int = N_FOLDS
    n_classes: int = N_CLASSES  # targets must lie in 0..n_classes-1


def find_esc50_root(raw_dir: str | Path, root: str = "") -> Path:
    """The folder holding ``meta/esc50.csv``: ``raw_dir/root`` when given, else ``raw_dir`` itself
    or the one folder below it (e.g. ``ESC-50-master``) that has it."""
    raw_dir = Path(raw_dir)
    if root:
        candidate = raw_dir / root
        if not (candidate / META_RELPATH).is_file():
            raise DataError(f"{candidate / META_RELPATH}: not found; set esc50.root to the folder that "
                            "holds meta/esc50.csv and audio/")
        return candidate
    if (raw_dir / META_RELPATH).is_file():
        return raw_dir
    found = sorted(p.parent.parent for p in raw_dir.glob(f"*/{META_RELPATH.as_posix()}"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"{raw_dir}: no {META_RELPATH.as_posix()} in it or in a folder below it; "
                        "extract the ESC-50 archive there (or run `lungpipe data synth-esc50`)")
    raise DataError(f"{raw_dir}: several ESC-50 copies {[str(p) for p in found]}; set esc50.root")


def read_esc50_meta(meta_csv: str | Path, *, n_folds: int = N_FOLDS, n_classes: int = N_CLASSES) -> pd.DataFrame:
    """Read and check ``meta/esc50.csv``.

    Every row must have a fold in 1..n_folds, a target in 0..n_classes-1, a file name that follows
    ``{fold}-{src_file}-{take}-{target}.wav`` and agrees with the row, one category per target,
    and no file twice. Errors name the file and the CSV line.
    """
    meta_csv = Path(meta_csv)
    try:
        meta = pd.read_csv(meta_csv, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{meta_csv}: cannot read the ESC-50 metadata ({exc})") from exc
    missing = [c for c in META_COLUMNS if c not in meta.columns]
    if missing:
        raise DataError(f"{meta_csv}: missing column(s) {missing}; expected {list(META_COLUMNS)}")
    if meta.empty:
        raise DataError(f"{meta_csv}: no rows")
    folds, targets = [], []
    for i, row in enumerate(meta.itertuples(index=False)):
        where = f"{meta_csv}:{i + 2} ({row.filename})"
        fold = _parse_int(row.fold, "fold", where)
        target = _parse_int(row.target, "target", where)
        if not 1 <= fold <= n_folds:
            raise DataError(f"{where}: fold {fold} is outside 1..{n_folds}")
        if not 0 <= target < n_classes:
            raise DataError(f"{where}: target {target} is outside 0..{n_classes - 1}")
        match = FILENAME_PATTERN.match(row.filename)
        if match is None:
            raise DataError(f"{where}: file name does not follow the ESC-50 convention "
                            "{fold}-{src_file}-{take}-{target}.wav")
        named = {"fold": int(match["fold"]), "src_file": match["src_file"], "take": match["take"],
                 "target": int(match["target"])}
        actual = {"fold": fold, "src_file": row.src_file, "take": row.take, "target": target}
        differ = [k for k in named if named[k] != actual[k]]
        if differ:
            detail = ", ".join(f"{k}: name says {named[k]!r}, row says {actual[k]!r}" for k in differ)
            raise DataError(f"{where}: file name disagrees with its row ({detail})")
        folds.append(fold)
        targets.append(target)
    meta = meta.assign(fold=folds, target=targets)
    dup = meta["filename"][meta["filename"].duplicated()]
    if not dup.empty:
        line = int(dup.index[0]) + 2
        raise DataError(f"{meta_csv}:{line}: file {dup.iloc[0]} is listed twice")
    per_target = meta.groupby("target")["category"].nunique()
    if (per_target > 1).any():
        target = int(per_target[per_target > 1].index[0])
        names = sorted(meta.loc[meta["target"] == target, "category"].unique())
        raise DataError(f"{meta_csv}: target {target} carries several categories {names}")
    present = sorted(meta["target"].unique())
    if present != list(range(len(present))):
        raise DataError(f"{meta_csv}: targets must be 0..K-1 without gaps (labels are targets); "
                        f"found {present}")
    src_folds = meta.groupby("src_file")["fold"].nunique()
    if (src_folds > 1).any():
        warnings.warn(f"{meta_csv}: fragments of source clip(s) {list(src_folds[src_folds > 1].index[:5])} "
                      "sit in more than one fold", stacklevel=2)
    return meta


def _parse_int(value: str, column: str, where: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise DataError(f"{where}: {column} {value!r} is not an integer") from None


def build_esc50_manifest(raw_dir: str | Path, cfg: Esc50Config | None = None) -> pd.DataFrame:
    """One manifest row per ESC-50 clip; ``split`` = test for ``cfg.test_fold``, train otherwise.

    A clip listed in the metadata but missing from ``audio/`` is a DataError naming it.
    """
    cfg = cfg or Esc50Config()
    raw_dir = Path(raw_dir)
    root = find_esc50_root(raw_dir, cfg.root)
    meta_csv = root / META_RELPATH
    meta = read_esc50_meta(meta_csv, n_folds=cfg.n_folds, n_classes=cfg.n_classes)
    audio_dir = root / AUDIO_DIRNAME
    absent = [f for f in meta["filename"] if not (audio_dir / f).is_file()]
    if absent:
        more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
        raise DataError(f"{audio_dir / absent[0]}: listed in {meta_csv} but missing{more}; "
                        "re-extract the ESC-50 archive")
    rows = []
    for rec in meta.itertuples(index=False):
        wav = audio_dir / rec.filename
        sample_rate, duration_s = probe_audio(wav)
        rows.append(recording_row(
            recording=Path(rec.filename).stem, patient=str(rec.src_file), label=int(rec.target),
            path=relative_to(wav, raw_dir), sample_rate=sample_rate, duration_s=duration_s,
            device="freesound", location="na", fold=int(rec.fold), class_name=rec.category,
            take=rec.take, esc10=str(rec.esc10).strip().lower() == "true", source="esc50",
        ))
    manifest = pd.DataFrame(rows)
    return split_for_fold(finalize_manifest(manifest, str(meta_csv)), cfg.test_fold, n_folds=cfg.n_folds)


def split_for_fold(manifest: pd.DataFrame, test_fold: int, *, n_folds: int = N_FOLDS) -> pd.DataFrame:
    """A copy of ``manifest`` with ``split`` = test for rows of ``test_fold``, train otherwise,
    and ``split_scheme`` = ``fold{k}``."""
    if not 1 <= int(test_fold) <= n_folds:
        raise DataError(f"test fold {test_fold} is outside 1..{n_folds}")
    if FOLD_COLUMN not in manifest.columns or manifest[FOLD_COLUMN].isna().any():
        raise DataError("manifest has no complete 'fold' column; build it with the ESC-50 source")
    out = manifest.copy()
    is_test = out[FOLD_COLUMN].astype(int) == int(test_fold)
    if not is_test.any():
        raise DataError(f"manifest has no row in fold {test_fold}")
    out["split"] = ["test" if t else "train" for t in is_test]
    out["split_scheme"] = f"fold{int(test_fold)}"
    return out


class Esc50Source(DatasetSource):
    """ESC-50, one row per clip; 5-fold cross-validation by the metadata's ``fold``."""

    name = "esc50"
    task = "recording"
    metric_task = "multiclass"
    config_type = Esc50Config
    description = "ESC-50 environmental sounds: 50 classes, 5 folds (report the mean over folds)"
    default_class_names = ESC50_CATEGORIES

    @property
    def n_folds(self) -> int:
        return N_FOLDS

    def class_names_for(self, cfg: Esc50Config, manifest: pd.DataFrame | None = None) -> list[str]:
        if manifest is not None:
            return class_names_from_manifest(manifest, "ESC-50 manifest")
        return list(ESC50_CATEGORIES[: cfg.n_classes])

    def remote_files(self, cfg: Esc50Config) -> list:
        return [remote_file(cfg.archive_url, cfg.archive_sha256, cfg.archive_filename)]

    def build_manifest(self, raw_dir: str | Path, cfg: Esc50Config) -> pd.DataFrame:
        return build_esc50_manifest(raw_dir, cfg)


@dataclass
class Esc50SynthConfig(Esc50Config):
    """ESC-50 options plus the size of the synthetic ESC-50-shaped folder."""

    n_classes: int = 10
    n_per_class: int = 10
    sample_rate: int = 16000
    duration_s: float = 5.0
    seed: int = 0


class Esc50SynthSource(Esc50Source):
    """A synthetic ESC-50-shaped folder (class-specific tones), for a fast default ESC-50 run."""

    name = "esc50_synth"
    description = "synthetic ESC-50-shaped clips (5 folds; written by `lungpipe data synth-esc50`)"
    config_type = Esc50SynthConfig
    synthetic = True
    default_class_names = ESC50_CATEGORIES[: Esc50SynthConfig.n_classes]

    def remote_files(self, cfg: Esc50Config) -> list:
        return []

    def synthesize(self, raw_dir: str | Path, cfg: Esc50SynthConfig) -> Path:
        # circular: synth_datasets imports this module's layout constants
        from lungpipe.data.synth_datasets import write_synthetic_esc50

        return write_synthetic_esc50(raw_dir, n_per_class=cfg.n_per_class, n_classes=cfg.n_classes,
                                     n_folds=cfg.n_folds, sample_rate=cfg.sample_rate,
                                     duration_s=cfg.duration_s, seed=cfg.seed)
