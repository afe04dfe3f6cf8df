"""The released random split of recordings on request (issue 13 item 5), and the shared-patient
warning, on the real ICBHI annotations in ../shared/icbhi."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lungpipe.data.annotations import load_annotations
from lungpipe.data.split import (
    SplitScheme,
    apply_split_scheme,
    patients_in_both_splits,
    random_recording_split,
    read_split_file,
    shared_patients_warning,
)
from lungpipe.util.typed_config import ConfigError

ICBHI = Path(__file__).resolve().parents[1].parent / "shared" / "icbhi"


def real_cycle_manifest() -> pd.DataFrame:
    """One row per annotated cycle of the 920 real recordings, split by the official file."""
    if not (ICBHI / "annotations").is_dir():
        pytest.fail(f"{ICBHI}/annotations is missing: the real ICBHI annotations are part of the test setup")
    entries, problems = read_split_file(ICBHI / "official_split.txt")
    assert not problems
    rows = []
    for txt in sorted((ICBHI / "annotations").glob("*.txt")):
        for c in load_annotations(txt):
            rows.append({"recording": txt.stem, "split_name": txt.stem, "patient": int(txt.stem.split("_")[0]),
                         "split": entries[txt.stem].split, "start_s": c.start, "end_s": c.end})
    return pd.DataFrame(rows)


def test_random_recording_seed_1_reproduces_the_release_counts():
    manifest = real_cycle_manifest()
    assert len(manifest) == 6898 and manifest["recording"].nunique() == 920
    released = apply_split_scheme(manifest, SplitScheme("random_recording", seed=1))
    counts = released["split"].value_counts()
    assert (counts["train"], counts["test"]) == (4213, 2685)
    assert released.groupby("split")["recording"].nunique().to_dict() == {"train": 552, "test": 368}
    assert len(patients_in_both_splits(released)) == 76
    assert set(released["split_scheme"]) == {"random_recording"}
    warning = shared_patients_warning(released)
    assert warning is not None and warning.startswith("76 patient(s)") and "random_recording" in warning
    # another seed is another split
    other = apply_split_scheme(manifest, SplitScheme("random_recording", seed=2))["split"].value_counts()
    assert other["train"] != 4213


def test_official_scheme_keeps_the_split_file_and_still_warns_about_its_two_shared_patients():
    manifest = real_cycle_manifest()
    official = apply_split_scheme(manifest, SplitScheme())
    assert official["split"].tolist() == manifest["split"].tolist()
    assert official["split"].value_counts().to_dict() == {"train": 4142, "test": 2756}
    assert set(official["split_scheme"]) == {"official"}
    assert len(patients_in_both_splits(official)) == 2
    assert shared_patients_warning(official).startswith("2 patient(s)")


def test_random_split_ignores_input_order_and_takes_int_60_percent():
    names = [f"{100 + i}_1b1_Al_sc_Meditron" for i in range(10)]
    a = random_recording_split(names, 1)
    b = random_recording_split(list(reversed(names)), 1)
    assert a == b and sum(v == "train" for v in a.values()) == 6
    assert sum(v == "train" for v in random_recording_split(names[:7], 1).values()) == 4  # int(4.2)


def test_no_warning_when_patients_are_disjoint_and_bad_schemes_are_named():
    frame = pd.DataFrame({"patient": [1, 1, 2], "split": ["train", "train", "test"]})
    assert patients_in_both_splits(frame) == [] and shared_patients_warning(frame) is None
    with pytest.raises(ConfigError, match="split.scheme.*'leaky'"):
        SplitScheme("leaky")
    with pytest.raises(ConfigError, match="split.seed"):
        SplitScheme("random_recording", seed="one")
