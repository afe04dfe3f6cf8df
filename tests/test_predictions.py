"""The predictions CSV: round trip, unlabelled rows, and validation errors that name file and line."""

from __future__ import annotations

import numpy as np
import pytest

from lungpipe.evaluation.predictions import (
    Predictions,
    prediction_columns,
    read_predictions,
    write_predictions,
)
from lungpipe.util.errors import DataError

HEADER = "recording,cycle,patient,label,pred,prob_0,prob_1,prob_2,prob_3"


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sample(n=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    recordings = [f"1{i // 4:02d}_1b1_Al_sc_Meditron" for i in range(n)]
    cycles = [i % 4 for i in range(n)]
    patients = [str(101 + i // 4) for i in range(n)]
    labels = rng.integers(0, k, n)
    probs = softmax(rng.normal(size=(n, k)))
    return recordings, cycles, patients, labels, probs


def test_round_trip(tmp_path):
    recordings, cycles, patients, labels, probs = sample()
    path = write_predictions(tmp_path / "sub" / "preds.csv", recordings, cycles, patients, labels, probs)
    assert path.read_text().splitlines()[0] == HEADER
    assert prediction_columns(4) == HEADER.split(",")
    got = read_predictions(path)
    assert isinstance(got, Predictions) and len(got) == 12 and got.num_classes == 4
    assert got.recordings.tolist() == recordings
    assert got.cycles.tolist() == cycles
    assert got.patients.tolist() == patients
    assert got.labels.tolist() == labels.tolist()
    assert got.preds.tolist() == probs.argmax(axis=1).tolist()
    np.testing.assert_allclose(got.probs, probs, atol=1e-7)
    assert got.has_labels and got.path == path
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left behind


def test_unlabelled_rows_are_empty_cells_and_read_as_minus_one(tmp_path):
    recordings, cycles, patients, _, probs = sample(n=4)
    path = write_predictions(tmp_path / "p.csv", recordings, cycles, patients, None, probs)
    assert all(line.split(",")[3] == "" for line in path.read_text().splitlines()[1:])
    got = read_predictions(path)
    assert got.labels.tolist() == [-1] * 4 and not got.has_labels

    path = write_predictions(tmp_path / "q.csv", recordings, cycles, patients, [2, None, -1, 0], probs)
    got = read_predictions(path)
    assert got.labels.tolist() == [2, -1, -1, 0]
    assert got.labelled.tolist() == [True, False, False, True]


def test_minus_one_label_in_file_means_unlabelled(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(f"{HEADER}\nr1,0,7,-1,1,0.1,0.6,0.2,0.1\n")
    assert read_predictions(path).labels.tolist() == [-1]


def test_two_class_file(tmp_path):
    path = write_predictions(tmp_path / "b.csv", ["a", "b"], [0, 0], ["1", "2"], [1, 0],
                             np.array([[0.2, 0.8], [0.9, 0.1]]))
    got = read_predictions(path, num_classes=2)
    assert got.preds.tolist() == [1, 0]
    with pytest.raises(DataError, match="2 prob_ columns but 4 classes"):
        read_predictions(path, num_classes=4)


GOOD_ROW = "r1,0,101,1,1,0.1,0.6,0.2,0.1"
DUPLICATE_MESSAGE = "line 4: recording 'r1' cycle 0 repeats line 2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("recording,cycle,patient,pred,prob_0,prob_1\nr,0,1,0,0.5,0.5\n", "line 1: missing column(s) label"),
        ("recording,cycle,patient,label,pred\nr,0,1,0,0\n", "missing column(s) prob_0, prob_1"),
        (f"{HEADER},prob_5\n", "numbered 0..K-1 without gaps; found prob_0, prob_1, prob_2, prob_3, prob_5"),
        (f"{HEADER},prob_x\n", "unknown column(s) prob_x"),
        (f"{HEADER},split\n", "unknown column(s) split"),
        (f"{HEADER}\n", "no rows"),
        (f"{HEADER}\n{GOOD_ROW}\nr1,1,101,4,1,0.1,0.6,0.2,0.1\n", "line 3: label '4' is not a class index 0..3"),
        (f"{HEADER}\nr1,0,101,x,1,0.1,0.6,0.2,0.1\n", "line 2: label 'x'"),
        (f"{HEADER}\nr1,0,101,1,9,0.1,0.6,0.2,0.1\n", "line 2: pred '9'"),
        (f"{HEADER}\nr1,-2,101,1,1,0.1,0.6,0.2,0.1\n", "line 2: cycle '-2'"),
        (f"{HEADER}\nr1,1.5,101,1,1,0.1,0.6,0.2,0.1\n", "line 2: cycle '1.5'"),
        (f"{HEADER}\n{GOOD_ROW}\nr1,1,101,1,1,0.1,abc,0.2,0.1\n", "line 3: prob_1 'abc' is not a finite number"),
        (f"{HEADER}\nr1,0,101,1,1,0.1,0.6,0.2,0.5\n", "line 2: prob_0..prob_3: probabilities sum to 1.4"),
        (f"{HEADER}\nr1,0,101,1,1,-0.2,0.9,0.2,0.1\n", "line 2: prob_0..prob_3: probabilities outside [0, 1]"),
        (f"{HEADER}\n{GOOD_ROW}\nr2,0,101,1,1,0.1,0.6,0.2,0.1\n{GOOD_ROW}\n", DUPLICATE_MESSAGE),
        (f"{HEADER}\n,0,101,1,1,0.1,0.6,0.2,0.1\n", "line 2: empty recording"),
        (f"{HEADER}\nr1,0,,1,1,0.1,0.6,0.2,0.1\n", "line 2: empty patient"),
        ("", "file is empty"),
    ],
)
def test_validation_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad_preds.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_predictions(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_predictions(tmp_path / "nope.csv")


def test_write_rejects_inconsistent_input(tmp_path):
    recordings, cycles, patients, labels, probs = sample(n=3)
    target = tmp_path / "p.csv"
    with pytest.raises(ValueError, match="patient has 2 entries"):
        write_predictions(target, recordings, cycles, patients[:2], labels, probs)
    with pytest.raises(ValueError, match="sum to"):
        write_predictions(target, recordings, cycles, patients, labels, probs * 0.5)
    with pytest.raises(ValueError, match="outside 0..3"):
        write_predictions(target, recordings, cycles, patients, [0, 1, 4], probs)
    with pytest.raises(ValueError, match="shape"):
        write_predictions(target, recordings, cycles, patients, labels, probs[:, 0])
    assert not target.exists() and list(tmp_path.iterdir()) == []
