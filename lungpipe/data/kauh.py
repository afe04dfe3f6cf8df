"""The KAUH lung-sound dataset (Fraiwan et al., King Abdullah University Hospital, Jordan).

Published on Mendeley Data ("A dataset of lung sounds recorded from the chest wall using an
electronic stethoscope", DOI 10.17632/jwyy9np4gv.3, CC BY 4.0): 112 subjects, 336 recordings
(each chest recording exported through the stethoscope's three filter modes), mono WAV at 4 kHz.
The labels live in the file names (``Audio Files.zip``):

    {F}P{N}_{diagnosis},{sound type},{location},{age},{sex}.wav
    e.g.  BP1_Asthma,I E W,P L L,70,M.wav

* ``F``: stethoscope filter mode, ``B`` = bell, ``D`` = diaphragm, ``E`` = extended;
* ``N``: subject number; the same subject appears once per filter mode;
* diagnosis: free text with inconsistent case (``N`` = normal, ``Asthma``/``asthma``, ``COPD``,
  ``pneumonia``, ``heart failure``, ``Lung Fibrosis``, ``BRON``, compounds such as
  ``Heart Failure + COPD``); it may itself contain commas, so the last four comma-separated
  fields are read from the right;
* sound type (e.g. ``N``, ``E W``, ``I C``, ``Crep``), chest location (e.g. ``P L L``), age, sex.

Patient ids are prefixed (``kauh_<N>``) so they never collide with ICBHI's 101–226.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lungpipe.util.errors import DataError

#: Mendeley Data landing page and the direct link of ``Audio Files.zip`` (version 3).
KAUH_DATASET_PAGE = "https://data.mendeley.com/datasets/jwyy9np4gv/3"
KAUH_AUDIO_URL = (
    "https://data.mendeley.com/public-files/datasets/jwyy9np4gv/files/"
    "99d7bd63-eb5d-4000-9c2a-a8dd31168cbc/file_downloaded"
)
#: SHA-256 of ``Audio Files.zip`` as listed by Mendeley's file API for version 3 (quoted by public
#: download scripts; not verified here — the download stage checks it).
KAUH_AUDIO_SHA256 = "8093b608584c631b016086e1f2df38f89db5eae0234a42fe9ab5cdaac7121d7c"
KAUH_AUDIO_FILENAME = "Audio Files.zip"
FILTER_MODES: dict[str, str] = {"B": "bell", "D": "diaphragm", "E": "extended"}
PATIENT_PREFIX = "kauh_"
_PREFIX = re.compile(r"^(?P<filter>[A-Za-z])P(?P<number>\d+)_(?P<rest>.*)$")


@dataclass(frozen=True)
class KauhRecordingInfo:
    """What one KAUH file name says."""

    filename: str
    filter_code: str  # B / D / E
    patient_number: int
    diagnosis: str  # as written (whitespace trimmed)
    sound_type: str
    location: str
    age: int
    sex: str

    @property
    def filter_mode(self) -> str:
        return FILTER_MODES[self.filter_code]

    @property
    def patient(self) -> str:
        return kauh_patient_id(self.patient_number)

    @property
    def recording(self) -> str:
        """A file-system-friendly recording id, e.g. ``kauh_BP1``."""
        return f"{PATIENT_PREFIX}{self.filter_code}P{self.patient_number}"


def kauh_patient_id(number: int) -> str:
    """The manifest's patient id of KAUH subject ``number``."""
    return f"{PATIENT_PREFIX}{int(number)}"


def is_kauh_name(name: str) -> bool:
    """Whether a file name starts like a KAUH recording (``BP1_…``, ``DP12_…``)."""
    match = _PREFIX.match(Path(name).name)
    return bool(match) and match["filter"].upper() in FILTER_MODES and Path(name).suffix.lower() == ".wav"


def parse_kauh_filename(name: str | Path) -> KauhRecordingInfo:
    """Parse ``{F}P{N}_{diagnosis},{sound},{location},{age},{sex}.wav``; DataError names the file."""
    path = Path(name)
    fname = path.name
    convention = "expected {F}P{N}_{diagnosis},{sound type},{location},{age},{sex}.wav"
    if path.suffix.lower() != ".wav":
        raise DataError(f"{path}: not a .wav file; {convention}")
    match = _PREFIX.match(path.stem)
    if match is None:
        raise DataError(f"{path}: name does not start with {{F}}P{{N}}_; {convention}")
    code = match["filter"].upper()
    if code not in FILTER_MODES:
        raise DataError(f"{path}: filter mode {match['filter']!r} is not one of {sorted(FILTER_MODES)} "
                        f"(bell/diaphragm/extended); {convention}")
    parts = match["rest"].split(",")
    if len(parts) < 5:
        raise DataError(f"{path}: {len(parts)} comma-separated field(s) after the prefix, need 5; {convention}")
    diagnosis = ",".join(parts[:-4]).strip()  # the diagnosis may hold commas: read the rest from the right
    sound_type, location, age_text, sex = (f.strip() for f in parts[-4:])
    if not diagnosis:
        raise DataError(f"{path}: empty diagnosis; {convention}")
    try:
        age = int(age_text)
    except ValueError:
        raise DataError(f"{path}: age {age_text!r} is not an integer; {convention}") from None
    if sex.upper() not in ("M", "F"):
        raise DataError(f"{path}: sex {sex!r} is not M or F; {convention}")
    return KauhRecordingInfo(
        filename=fname, filter_code=code, patient_number=int(match["number"]), diagnosis=diagnosis,
        sound_type=sound_type, location=location, age=age, sex=sex.upper(),
    )


def find_kauh_files(root: str | Path) -> list[Path]:
    """All ``*.wav`` files under ``root`` whose names start like KAUH recordings, sorted."""
    root = Path(root)
    return sorted(p for p in root.rglob("*.wav") if p.is_file() and is_kauh_name(p.name))
