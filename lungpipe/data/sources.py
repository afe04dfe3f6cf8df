"""Datasets as plug-ins that all emit the same manifest.

Every dataset the pipeline knows is a :class:`DatasetSource`: it says what to download
(:meth:`~DatasetSource.remote_files`), how to turn a raw folder into the manifest
(:meth:`~DatasetSource.build_manifest`), what its classes are called and which metric family
scores it. Preprocess, training and evaluation only ever see the manifest, so a new dataset is
a new source, not a new code path.

The manifest has one row per item (a respiratory cycle for ICBHI, a whole recording for ESC-50
and the diagnosis task) and at least the columns in :data:`MANIFEST_COLUMNS` plus ``fold``
(1..5 for ESC-50, empty otherwise). Recording-level rows have ``cycle = 0``, ``start_s = 0``,
``end_s = duration_s`` and ``crackle = wheeze = 0``; ``label`` is the class index 0..K-1,
``path`` is the audio file relative to the raw folder and ``split_name`` the recording's name in
the split definition. Extra columns are allowed; recording-level sources add ``source``,
``class_name`` and ``split_scheme`` (which split the ``split`` column holds, e.g. ``fold3``).

    source = get_source("esc50")
    cfg = source.config({"test_fold": 3})
    manifest = source.build_manifest(raw_dir, cfg)

Stages pick the source and its options from params.yaml's ``data`` section with
:func:`source_from_params` (``data.source`` names the source, ``data.<section>`` holds its
options) and check ``data.folds`` with :func:`cv_folds`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
import soundfile as sf

from lungpipe.data.download import RemoteFile
from lungpipe.data.icbhi import build_manifest as build_icbhi_manifest
from lungpipe.data.synth import SynthConfig, write_synthetic_icbhi
from lungpipe.labels import ICBHI_CLASS_NAMES
from lungpipe.util.errors import DataError
from lungpipe.util.typed_config import ConfigError, from_dict

if TYPE_CHECKING:  # the download module belongs to another part of the package
    from lungpipe.data.download import RemoteFile

#: Columns every manifest carries (preprocess and training rely on them).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "recording", "patient", "split", "cycle", "start_s", "end_s", "crackle", "wheeze", "label",
    "device", "location", "sample_rate", "path", "duration_s", "split_name",
)
#: The cross-validation fold column: 1..n for ESC-50, empty (<NA>) for fixed splits.
FOLD_COLUMN = "fold"
#: What one manifest row is.
TASKS: tuple[str, ...] = ("cycle", "recording")
#: How predictions are scored: ICBHI Sp/Se/Score, or plain multiclass accuracy / macro metrics.
METRIC_TASKS: tuple[str, ...] = ("icbhi", "multiclass")
#: Values allowed in the ``split`` column.
SPLITS: tuple[str, ...] = ("train", "test")


@dataclass
class BuiltDataset:
    """A manifest plus what its builder left out: ``excluded`` lists items dropped by a rule (the
    diagnosis task's excluded diagnoses: one row per source × diagnosis with ``patients`` and
    ``recordings``), ``rejects`` items skipped as bad input with ``skip_bad`` (``item``/``file`` and
    ``reason`` columns). Both are empty frames when nothing was left out."""

    manifest: pd.DataFrame
    excluded: pd.DataFrame = field(default_factory=pd.DataFrame)
    rejects: pd.DataFrame = field(default_factory=pd.DataFrame)


class DatasetSource(ABC):
    """One dataset: its options, its download list and its manifest builder.

    Subclasses set the class attributes and implement the two abstract methods. Sources are
    stateless; every option lives in the config dataclass (``config_type``) so that stages can
    build it from params.yaml with :meth:`config`.
    """

    name: ClassVar[str]
    task: ClassVar[str]  # "cycle" | "recording"
    metric_task: ClassVar[str]  # "icbhi" | "multiclass"
    config_type: ClassVar[type]
    description: ClassVar[str] = ""

    #: Class names (indexed by label) under the default config.
    default_class_names: ClassVar[tuple[str, ...]] = ()
    #: True when the raw folder is generated (:meth:`synthesize`) instead of downloaded.
    synthetic: ClassVar[bool] = False
    #: Key of the ``data`` section in params.yaml holding this source's options (None: the name).
    params_section: ClassVar[str | None] = None

    @property
    def section(self) -> str:
        """The ``data.<section>`` of params.yaml this source reads its options from."""
        return self.params_section or self.name

    @property
    def n_folds(self) -> int | None:
        """Number of cross-validation folds the source defines (None: fixed train/test split)."""
        return None

    @property
    def class_names(self) -> list[str]:
        """Class names indexed by label under the default config (see :meth:`class_names_for`)."""
        return list(self.default_class_names)

    def config(self, mapping: Mapping[str, Any] | None = None, *, where: str | None = None) -> Any:
        """This source's config dataclass from a params mapping (unknown keys → ConfigError naming
        ``where``, by default ``dataset[<name>]``)."""
        return from_dict(self.config_type, mapping, where=where or f"dataset[{self.name}]")

    def class_names_for(self, cfg: Any, manifest: pd.DataFrame | None = None) -> list[str]:
        """Class names indexed by label for this config; with a manifest that has a
        ``class_name`` column the names are read from it (the data is the authority)."""
        if manifest is not None and "class_name" in manifest.columns:
            return class_names_from_manifest(manifest, f"{self.name} manifest")
        return self.class_names

    @abstractmethod
    def remote_files(self, cfg: Any) -> list[RemoteFile]:
        """What the download stage fetches (empty for synthetic sources)."""

    @abstractmethod
    def build_manifest(self, raw_dir: str | Path, cfg: Any) -> pd.DataFrame:
        """The manifest of the raw folder ``raw_dir`` (validated, columns ordered)."""

    def build(self, raw_dir: str | Path, cfg: Any) -> BuiltDataset:
        """The manifest plus what was left out of it (sources that exclude or skip items override)."""
        return BuiltDataset(self.build_manifest(raw_dir, cfg))

    def synthesize(self, raw_dir: str | Path, cfg: Any) -> Path:
        """Write the synthetic raw folder (only sources with ``synthetic = True``)."""
        raise NotImplementedError(f"dataset source {self.name!r} has no synthetic writer here")

    def __repr__(self) -> str:
        return f"<DatasetSource {self.name} task={self.task} metric={self.metric_task}>"


# --------------------------------------------------------------------------- manifest helpers


def finalize_manifest(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Check the contract columns, add an empty ``fold`` where missing, fix dtypes, order columns.

    ``where`` names the data the manifest came from (used in error messages).
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: manifest lacks column(s) {missing}; every source must emit {list(MANIFEST_COLUMNS)}"
        )
    out = frame.copy()
    if FOLD_COLUMN not in out.columns:
        out[FOLD_COLUMN] = pd.NA
    out[FOLD_COLUMN] = out[FOLD_COLUMN].astype("Int64")
    bad_split = sorted(set(out["split"].dropna().astype(str)) - set(SPLITS))
    if bad_split or out["split"].isna().any():
        raise DataError(f"{where}: split values must be one of {list(SPLITS)}; found {bad_split or ['<empty>']}")
    for col in ("cycle", "crackle", "wheeze", "label", "sample_rate"):
        out[col] = out[col].astype("int64")
    for col in ("start_s", "end_s", "duration_s"):
        out[col] = out[col].astype("float64")
    for col in ("recording", "split", "device", "location", "path", "split_name"):
        out[col] = out[col].astype(str)  # patient keeps its type (ICBHI: int; others: str)
    ordered = [*MANIFEST_COLUMNS, FOLD_COLUMN]
    extras = [c for c in out.columns if c not in ordered]
    return out[ordered + extras].reset_index(drop=True)


def recording_row(
    *,
    recording: str,
    patient: str,
    label: int,
    path: str,
    sample_rate: int,
    duration_s: float,
    device: str,
    location: str,
    split: str = "train",
    split_name: str | None = None,
    fold: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One manifest row for a recording-level item (the whole file is the item).

    ``split_name`` is the recording's name in the split definition (ICBHI's split file may spell
    it differently from the archive); it defaults to ``recording``.
    """
    row: dict[str, Any] = {
        "recording": recording, "patient": patient, "split": split, "cycle": 0,
        "start_s": 0.0, "end_s": float(duration_s), "crackle": 0, "wheeze": 0, "label": int(label),
        "device": device, "location": location, "sample_rate": int(sample_rate), "path": path,
        "duration_s": float(duration_s), "split_name": recording if split_name is None else split_name,
        FOLD_COLUMN: pd.NA if fold is None else int(fold),
    }
    row.update(extra)
    return row


def probe_audio(path: Path) -> tuple[int, float]:
    """Sample rate and duration (s) from the file header; a DataError names an unreadable file."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError for broken files
        raise DataError(f"{path}: cannot read audio header ({exc}); re-extract the archive") from exc
    if info.samplerate <= 0 or info.frames <= 0:
        raise DataError(f"{path}: audio file is empty (frames={info.frames}); re-extract the archive")
    return int(info.samplerate), info.frames / float(info.samplerate)


def class_names_from_manifest(manifest: pd.DataFrame, where: str = "manifest") -> list[str]:
    """Class names indexed by label, from the manifest's ``class_name`` column.

    Raises DataError when a label carries two names or the labels are not 0..K-1.
    """
    if "class_name" not in manifest.columns:
        raise DataError(f"{where}: no 'class_name' column to read class names from")
    pairs = manifest[["label", "class_name"]].drop_duplicates()
    clash = pairs[pairs["label"].duplicated(keep=False)]
    if not clash.empty:
        raise DataError(f"{where}: a label carries several class names: {clash.to_dict('records')}")
    labels = sorted(int(v) for v in pairs["label"])
    if labels != list(range(len(labels))):
        raise DataError(f"{where}: labels must be 0..K-1 without gaps; found {labels}")
    by_label = dict(zip(pairs["label"].astype(int), pairs["class_name"].astype(str)))
    return [by_label[i] for i in range(len(labels))]


def relative_to(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a POSIX string (manifests store portable paths)."""
    return path.resolve().relative_to(root.resolve()).as_posix()


def remote_file(url: str, sha256: str, filename: str) -> RemoteFile:
    """A :class:`lungpipe.data.download.RemoteFile`; an empty checksum is passed as ``None``
    (unknown: the download module then cannot verify it)."""
    return RemoteFile(url=url, sha256=sha256 or None, filename=filename)


# --------------------------------------------------------------------------- ICBHI (cycle level)

ICBHI_BASE_URL = "https://bhichallenge.med.auth.gr/sites/default/files/ICBHI_final_database"


@dataclass
class IcbhiSourceConfig:
    """Options of the ICBHI cycle dataset. Checksums: none published by the organisers (empty =
    unknown; pin them once a verified copy exists)."""

    archive_url: str = f"{ICBHI_BASE_URL}/ICBHI_final_database.zip"
    archive_sha256: str = ""
    archive_filename: str = "ICBHI_final_database.zip"
    split_url: str = f"{ICBHI_BASE_URL}/ICBHI_challenge_train_test.txt"
    split_sha256: str = ""
    split_filename: str = "ICBHI_challenge_train_test.txt"
    split_file: str | None = None  # relative to raw_dir (or absolute); None: the builder's default
    skip_bad: bool = False
    strict_cycles: bool = False  # duplicated / overlapping cycles: errors (True) or a warning (False)


class IcbhiSource(DatasetSource):
    """ICBHI 2017, one row per respiratory cycle (wraps the ICBHI manifest builder)."""

    name = "icbhi"
    task = "cycle"
    metric_task = "icbhi"
    config_type = IcbhiSourceConfig
    description = "ICBHI 2017 respiratory cycles: normal / crackle / wheeze / both (official split)"
    default_class_names = ICBHI_CLASS_NAMES

    def class_names_for(self, cfg: Any, manifest: pd.DataFrame | None = None) -> list[str]:
        return list(ICBHI_CLASS_NAMES)  # fixed by the crackle/wheeze annotation

    def remote_files(self, cfg: IcbhiSourceConfig) -> list[RemoteFile]:
        return [
            remote_file(cfg.archive_url, cfg.archive_sha256, cfg.archive_filename),
            remote_file(cfg.split_url, cfg.split_sha256, cfg.split_filename),
        ]

    def build_manifest(self, raw_dir: str | Path, cfg: IcbhiSourceConfig) -> pd.DataFrame:
        return self.build(raw_dir, cfg).manifest

    def build(self, raw_dir: str | Path, cfg: IcbhiSourceConfig) -> BuiltDataset:
        raw_dir = Path(raw_dir)
        split_file = None
        if cfg.split_file:
            split_file = Path(cfg.split_file)
            if not split_file.is_absolute():
                split_file = raw_dir / split_file
        result = build_icbhi_manifest(raw_dir, split_file, skip_bad=cfg.skip_bad, strict_cycles=cfg.strict_cycles)
        cycles = result.cycles.copy()
        if "source" not in cycles.columns:
            cycles["source"] = "icbhi"
        return BuiltDataset(finalize_manifest(cycles, str(raw_dir)), rejects=result.rejects)


@dataclass
class IcbhiSynthSourceConfig(IcbhiSourceConfig):
    """ICBHI manifest options plus ``synth``: the :class:`lungpipe.data.synth.SynthConfig` of the
    generated folder (None: its defaults)."""

    synth: Any = None


class IcbhiSynthSource(IcbhiSource):
    """The synthetic ICBHI-shaped folder written by ``lungpipe data synth`` (nothing to download).

    Its params section is ``data.synth``: the keys of :class:`IcbhiSourceConfig` (e.g. ``skip_bad``)
    configure the manifest, every other key the synthetic generator (``SynthConfig``)."""

    name = "icbhi_synth"
    description = "synthetic ICBHI-shaped cycles (embedded default; written by `lungpipe data synth`)"
    synthetic = True
    params_section = "synth"
    config_type = IcbhiSynthSourceConfig

    def config(self, mapping: Mapping[str, Any] | None = None, *, where: str | None = None) -> IcbhiSynthSourceConfig:
        where = where or f"dataset[{self.name}]"
        options = dict(mapping or {})
        manifest_keys = {f.name for f in fields(IcbhiSourceConfig)}
        base = from_dict(IcbhiSourceConfig, {k: v for k, v in options.items() if k in manifest_keys}, where=where)
        synth = from_dict(SynthConfig, {k: v for k, v in options.items() if k not in manifest_keys}, where=where)
        return IcbhiSynthSourceConfig(**{f.name: getattr(base, f.name) for f in fields(IcbhiSourceConfig)},
                                      synth=synth)

    def remote_files(self, cfg: IcbhiSourceConfig) -> list[RemoteFile]:
        return []

    def synthesize(self, raw_dir: str | Path, cfg: IcbhiSynthSourceConfig) -> Path:
        write_synthetic_icbhi(Path(raw_dir), cfg.synth if cfg.synth is not None else SynthConfig(), workers=2)
        return Path(raw_dir)


# --------------------------------------------------------------------------- registry

# name -> "module:ClassName"; modules are imported when the source is asked for.
_SOURCES: dict[str, str] = {
    "icbhi": "lungpipe.data.sources:IcbhiSource",
    "icbhi_synth": "lungpipe.data.sources:IcbhiSynthSource",
    "synth": "lungpipe.data.sources:IcbhiSynthSource",  # params.yaml's name for the embedded default
    "esc50": "lungpipe.data.esc50:Esc50Source",
    "esc50_synth": "lungpipe.data.esc50:Esc50SynthSource",
    "diagnosis": "lungpipe.data.diagnosis:DiagnosisSource",
    "diagnosis_synth": "lungpipe.data.diagnosis:DiagnosisSynthSource",
}


def source_names() -> list[str]:
    """Names :func:`get_source` accepts."""
    return sorted(_SOURCES)


def source_from_params(data: Mapping[str, Any]) -> tuple[DatasetSource, Any]:
    """The source named by ``data["source"]`` and its config from ``data[<section>]``.

    ``data`` is params.yaml's ``data`` mapping. ``data.manifest.skip_bad: true`` (and
    ``data.manifest.strict_cycles: true``) switch on that option of every source that has it. Unknown keys are a ConfigError naming
    ``data.<section>``.
    """
    if "source" not in data:
        raise ConfigError(f"params data section has no 'source'; valid sources: {source_names()}")
    source = get_source(str(data["source"]))
    section = data.get(source.section)
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError(f"data.{source.section} must be a mapping of options, got {section!r}")
    options = dict(section or {})
    manifest = data.get("manifest") or {}
    for flag in ("skip_bad", "strict_cycles"):  # data.manifest.<flag>: true switches it on for the source
        if manifest.get(flag) and flag in {f.name for f in fields(source.config_type)}:
            options[flag] = True
    return source, source.config(options, where=f"data.{source.section}")


def cv_folds(folds: Sequence[Any] | None, source: DatasetSource, cfg: Any) -> list[int]:
    """The cross-validation folds listed in ``data.folds`` (``[]`` for ``[official]``).

    ``official`` (the source's fixed split) cannot be mixed with fold numbers; fold numbers need a
    source with folds and must lie in 1..n_folds. Errors are ConfigErrors naming ``data.folds``.
    """
    items = list(folds if folds is not None else ["official"])
    if not items:
        raise ConfigError("data.folds is empty; use [official] or a list of fold numbers")
    if all(str(f) == "official" for f in items):
        if len(items) > 1:
            raise ConfigError(f"data.folds lists 'official' {len(items)} times; list it once")
        return []
    if any(str(f) == "official" for f in items):
        raise ConfigError(f"data.folds {items} mixes 'official' with fold numbers; use one or the other")
    n_folds = getattr(cfg, "n_folds", None) or source.n_folds
    if not n_folds:
        raise ConfigError(f"data.folds {items}: data.source {source.name!r} has a fixed train/test split "
                          "and no cross-validation folds; use data.folds: [official]")
    out = []
    for f in items:
        if isinstance(f, bool) or not (isinstance(f, int) or str(f).isdigit()):
            raise ConfigError(f"data.folds entry {f!r} is not a fold number (1..{n_folds}) or 'official'")
        if not 1 <= int(f) <= n_folds:
            raise ConfigError(f"data.folds entry {f} is outside 1..{n_folds} (folds of data.source {source.name!r})")
        out.append(int(f))
    if len(set(out)) != len(out):
        raise ConfigError(f"data.folds {items} lists a fold twice")
    return out


def get_source(name: str) -> DatasetSource:
    """The dataset source called ``name``; an unknown name is a ConfigError listing the valid ones."""
    if name not in _SOURCES:
        raise ConfigError(f"unknown dataset source {name!r}; valid sources: {source_names()}")
    module_name, class_name = _SOURCES[name].split(":")
    source = getattr(importlib.import_module(module_name), class_name)()
    if source.task not in TASKS or source.metric_task not in METRIC_TASKS:
        raise ConfigError(f"dataset source {name!r} declares task={source.task!r}, "
                          f"metric_task={source.metric_task!r}; allowed {TASKS} / {METRIC_TASKS}")
    return source

