"""The official ICBHI train/test split file and matching its names to the archive's recordings.

``ICBHI_challenge_train_test.txt`` has one line per recording: ``<recording name> <train|test>``.
91 recordings carry a different device suffix in the archive than in the split file (the split
file calls them ``…_Meditron``). They are matched here by (patient, recording index, chest
location, acquisition mode), never dropped silently; a match that is not unique is an error.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from lungpipe.data.names import try_parse_name
from lungpipe.data.problems import Problem
from lungpipe.util.errors import DataError
from lungpipe.util.typed_config import ConfigError

SPLIT_FILE_NAME = "ICBHI_challenge_train_test.txt"
SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class SplitEntry:
    """One line of the split file."""

    name: str
    split: str
    line: int


def find_split_file(raw_dir: Path) -> Path:
    """The one ``ICBHI_challenge_train_test.txt`` under ``raw_dir`` (searched recursively)."""
    found = sorted(p for p in Path(raw_dir).rglob(SPLIT_FILE_NAME) if p.is_file())
    if not found:
        raise DataError(
            f"{raw_dir}: no {SPLIT_FILE_NAME} in the folder or its subfolders; put the official "
            "split file there or pass it explicitly (--split-file)"
        )
    if len(found) > 1:
        listed = ", ".join(str(p) for p in found)
        raise DataError(
            f"{raw_dir}: {len(found)} split files named {SPLIT_FILE_NAME} ({listed}); keep one or "
            "pass the one to use explicitly (--split-file)"
        )
    return found[0]


def read_split_file(path: Path) -> tuple[dict[str, SplitEntry], list[Problem]]:
    """Parse the split file: entries by recording name, and the problems found.

    Problems: a line that is not ``<name> <train|test>``, a name that is not an ICBHI recording
    name, and a name listed twice. ``train``/``test`` are accepted in any letter case.
    """
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a UTF-8 byte-order mark is stripped
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the split file ({exc})") from exc
    entries: dict[str, SplitEntry] = {}
    problems: list[Problem] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1].lower() not in SPLITS:
            problems.append(Problem(
                fields[0], file, lineno,
                f"malformed split line {raw.strip()!r}; each line must be '<recording name> "
                "train' or '<recording name> test'",
            ))
            continue
        name, split = fields[0], fields[1].lower()
        if try_parse_name(name) is None:
            problems.append(Problem(
                name, file, lineno,
                f"{name!r} is not an ICBHI recording name (e.g. '101_1b1_Al_sc_Meditron'); fix the line",
            ))
            continue
        if name in entries:
            problems.append(Problem(
                name, file, lineno,
                f"{name} is listed again (first on line {entries[name].line}); remove the duplicate",
            ))
            continue
        entries[name] = SplitEntry(name, split, lineno)
    return entries, problems


def match_split_names(
    recordings: list[str], entries: dict[str, SplitEntry], split_file: Path
) -> tuple[dict[str, SplitEntry], list[Problem]]:
    """Match archive recording names to split entries.

    An exact name match wins. Otherwise a recording matches the split entry with the same
    (patient, recording index, location, mode) among the entries no recording matched exactly —
    that is how the 91 renamed devices are reconciled. Returns the matches and the problems:
    a recording with no entry, a recording with several candidate entries or sharing its one
    candidate with another recording (ambiguous), and an entry that no recording matched.
    """
    file = str(split_file)
    matches: dict[str, SplitEntry] = {}
    problems: list[Problem] = []
    exact = {name for name in recordings if name in entries}
    by_key: dict[tuple, list[SplitEntry]] = defaultdict(list)
    for entry in entries.values():
        if entry.name not in exact:
            parsed = try_parse_name(entry.name)
            if parsed is not None:
                by_key[parsed.key].append(entry)
    claims: dict[str, list[str]] = defaultdict(list)
    for name in recordings:
        if name in exact:
            matches[name] = entries[name]
            continue
        parsed = try_parse_name(name)
        candidates = by_key.get(parsed.key, []) if parsed is not None else []
        if not candidates:
            problems.append(Problem(
                name, file, None,
                f"recording {name} is not in the split file (no entry with the same name or the "
                "same patient, recording index, location and mode); add it to the split file "
                "or remove the recording",
            ))
        elif len(candidates) > 1:
            listed = ", ".join(f"{c.name} (line {c.line})" for c in candidates)
            problems.append(Problem(
                name, file, None,
                f"recording {name} matches several split entries by patient, recording index, "
                f"location and mode: {listed}; make the split file unambiguous",
            ))
        else:
            claims[candidates[0].name].append(name)
    for entry_name, claimants in claims.items():
        entry = entries[entry_name]
        if len(claimants) == 1:
            matches[claimants[0]] = entry
            continue
        for name in claimants:
            problems.append(Problem(
                name, file, entry.line,
                f"split entry {entry.name} matches several recordings ({', '.join(claimants)}) by "
                "patient, recording index, location and mode; rename or remove the extra ones",
            ))
    matched = {entry.name for entry in matches.values()}
    ambiguous = {entry_name for entry_name, claimants in claims.items() if len(claimants) > 1}
    for entry in entries.values():
        if entry.name not in matched and entry.name not in ambiguous:
            problems.append(Problem(
                entry.name, file, entry.line,
                f"split entry {entry.name} has no recording (.wav + .txt) in the raw folder; "
                "add the recording or remove the line",
            ))
    return matches, problems


# --------------------------------------------------------------------------- split schemes

SPLIT_SCHEMES: tuple[str, ...] = ("official", "random_recording")
#: Fraction of recordings the released random split puts in train (int(0.6 · n) of them).
RELEASE_TRAIN_FRACTION = 0.6


@dataclass(frozen=True)
class SplitScheme:
    """Which recordings are train and which test (params ``split.scheme``, ``split.seed``).

    ``official``: the ICBHI split file (lungpipe's default; 2 patients of the real database are on
    both sides). ``random_recording``: the patch-mix CL / ADD4RSC release's split: the recording
    names (as the split file spells them) sorted, shuffled by Python's ``random`` seeded with
    ``seed`` (the release's ``1``), the first ``int(0.6 · n)`` to train, the rest to test. It
    ignores patients: on the real database 76 patients end up on both sides (4213 / 2685 cycles),
    so its scores are not patient-independent.
    """

    scheme: str = "official"
    seed: int = 1

    def __post_init__(self) -> None:
        if self.scheme not in SPLIT_SCHEMES:
            raise ConfigError(f"split.scheme: {self.scheme!r} is not one of {list(SPLIT_SCHEMES)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"split.seed: {self.seed!r} is not an integer")


def random_recording_split(names, seed: int, train_fraction: float = RELEASE_TRAIN_FRACTION) -> dict[str, str]:
    """``{name: "train" | "test"}``: sorted names, ``random.Random(seed).shuffle``, the first
    ``int(train_fraction · n)`` to train (the release's procedure, reproduced exactly)."""
    order = sorted(set(names))
    random.Random(seed).shuffle(order)
    n_train = int(train_fraction * len(order))
    return {name: ("train" if i < n_train else "test") for i, name in enumerate(order)}


def apply_split_scheme(manifest, scheme: SplitScheme, where: str = "manifest"):
    """The manifest with ``split`` set by ``scheme`` and a ``split_scheme`` column naming it
    (read downstream to label metrics, runs and the report). ``random_recording`` needs a cycle
    manifest with a ``split_name`` (or ``recording``) column."""
    out = manifest.copy()
    if scheme.scheme == "random_recording":
        column = "split_name" if "split_name" in out.columns else "recording"
        if column not in out.columns or "split" not in out.columns:
            raise DataError(
                f"{where}: split.scheme random_recording needs an ICBHI cycle manifest (columns "
                "recording/split_name and split); use split.scheme official for this dataset"
            )
        sides = random_recording_split(out[column].astype(str), scheme.seed)
        out["split"] = out[column].astype(str).map(sides)
    out["split_scheme"] = scheme.scheme
    return out


def patients_in_both_splits(manifest) -> list:
    """Patients with items in both train and test (sorted); empty without a ``patient`` column."""
    if "patient" not in manifest.columns or "split" not in manifest.columns:
        return []
    sides = manifest.groupby("patient")["split"].agg(lambda s: set(s))
    return sorted(p for p, s in sides.items() if {"train", "test"} <= s)


def shared_patients_warning(manifest) -> str | None:
    """A warning text when a patient is in both train and test, else None."""
    shared = patients_in_both_splits(manifest)
    if not shared:
        return None
    scheme = manifest["split_scheme"].iloc[0] if "split_scheme" in manifest.columns and len(manifest) else "?"
    listed = ", ".join(str(p) for p in shared[:8]) + (" …" if len(shared) > 8 else "")
    return (f"{len(shared)} patient(s) have cycles in both train and test under split.scheme {scheme} "
            f"({listed}): test scores are not patient-independent")
