"""ICBHI recording names: ``<patient>_<recording index>_<chest location>_<mode>_<device>``.

Example: ``101_1b1_Al_sc_Meditron`` is patient 101, recording index ``1b1``, anterior-left chest
location, single-channel acquisition, WelchAllyn Meditron stethoscope.

Also the facts about the four ICBHI devices that the synthetic data needs (their sample rates).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lungpipe.util.errors import DataError

#: Chest locations used in the ICBHI names (trachea, anterior/posterior/lateral left/right).
LOCATIONS: tuple[str, ...] = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")
#: Acquisition modes: single channel, multichannel.
MODES: tuple[str, ...] = ("sc", "mc")
#: The four recording devices named in ICBHI file names.
DEVICES: tuple[str, ...] = ("AKGC417L", "LittC2SE", "Litt3200", "Meditron")
#: Sample rate (Hz) of each device's recordings in the archive (the database has recordings at
#: 4 kHz, 10 kHz and 44.1 kHz; a few Meditron recordings are at 10 kHz).
DEVICE_SAMPLE_RATES: dict[str, int] = {
    "AKGC417L": 44100,
    "LittC2SE": 44100,
    "Litt3200": 4000,
    "Meditron": 4000,
}

_NAME_RE = re.compile(r"^(\d+)_([0-9A-Za-z]+)_([A-Za-z]+)_([A-Za-z]+)_([0-9A-Za-z]+)$")


@dataclass(frozen=True)
class RecordingName:
    """The five fields of an ICBHI recording name."""

    patient: int
    index: str
    location: str
    mode: str
    device: str

    @property
    def name(self) -> str:
        return f"{self.patient}_{self.index}_{self.location}_{self.mode}_{self.device}"

    @property
    def key(self) -> tuple[int, str, str, str]:
        """Everything but the device: what identifies a recording across the split file and the
        archive (91 archive names carry a different device suffix than the split file)."""
        return (self.patient, self.index, self.location, self.mode)


def try_parse_name(name: str) -> RecordingName | None:
    """Parse ``name`` (no extension); None when it is not an ICBHI recording name."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    patient, index, location, mode, device = match.groups()
    return RecordingName(int(patient), index, location, mode, device)


def parse_name(name: str, where: str | Path | None = None) -> RecordingName:
    """Parse ``name``; a :class:`DataError` naming ``where`` when it does not fit the pattern."""
    parsed = try_parse_name(name)
    if parsed is None:
        place = f"{where}: " if where is not None else ""
        raise DataError(
            f"{place}{name!r} is not an ICBHI recording name "
            "'<patient>_<recording index>_<chest location>_<acquisition mode>_<device>' "
            "(e.g. '101_1b1_Al_sc_Meditron'); rename the file or remove it from the folder"
        )
    return parsed


def read_filename_differences(path: Path) -> list[str]:
    """The archive names listed in ICBHI's ``filename_differences.txt`` (one per line, quoted
    like ``'101_1b1_Al_sc_AKGC417L'``); each is checked to be a recording name."""
    path = Path(path)
    names: list[str] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        text = raw.strip().strip("'\"").strip()
        if not text:
            continue
        if try_parse_name(text) is None:
            raise DataError(
                f"{path}, line {lineno}: {raw.strip()!r} is not a quoted ICBHI recording name; "
                "expected e.g. '101_1b1_Al_sc_AKGC417L'"
            )
        names.append(text)
    return names
