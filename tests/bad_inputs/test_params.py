"""Bad params stop the pipeline at start-up, naming the params key, what was found and what is
allowed. Each row: a params edit (dotted key -> value, or DELETE) and the message fragment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lungpipe.util.errors import print_error, report_errors
from lungpipe.util.typed_config import ConfigError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "stages"))
import _common

sys.path.insert(0, str(REPO / "tests"))
from stage_configs import build_all

DELETE = object()

BAD_PARAMS = [
    # (edit, expected fragment of the error)
    ({"arch.cnn6.train.epochs": "ten"}, "arch.cnn6.train.epochs: expected an integer, got 'ten'"),
    ({"train.defaults.epochs": 2.5}, "train.defaults.epochs: expected an integer, got 2.5"),
    ({"train.defaults.batch_size": 0}, "train.defaults.batch_size: must be >= 1, got 0"),
    ({"arch.ast.train.lr": -0.001}, "arch.ast.train.lr: must be > 0, got -0.001"),
    ({"arch.cnn6.train.lr": [float("nan"), float("nan")]}, "arch.cnn6.train.lr: expected a number, got [nan, nan]"),
    ({"split.val_fraction": 1.5}, "split.val_fraction: must be between 0 and 1 (exclusive), got 1.5"),
    ({"split.val_fraction": 0}, "split.val_fraction: must be between 0 and 1 (exclusive), got 0.0"),
    ({"split.selection": "val"}, "split.selection: must be one of validation, test, got 'val'"),
    ({"train.defaults.optimizer": "adamm"}, "train.defaults.optimizer: must be one of adam, adamw, sgd, got 'adamm'"),
    ({"train.defaults.amp": "fp8"}, "train.defaults.amp: must be one of auto, bf16, fp16, off, got 'fp8'"),
    ({"train.defaults.schedule": "linear"}, "train.defaults.schedule: must be one of warmup_cosine, cosine_per_epoch"),
    ({"train.defaults.ma_beta": 1.0}, "train.defaults.ma_beta: must be in [0, 1), got 1.0"),
    ({"train.defaults.class_weighted": "yes"}, "train.defaults.class_weighted: expected true or false, got 'yes'"),
    ({"train.defaults.augment.mixup_alpha": -1}, "train.defaults.augment.mixup_alpha: must be >= 0"),
    ({"arch.mrinet.train.augment": {"fill": "noise"}}, "arch.mrinet.train.augment.fill: must be one of mean, zero"),
    ({"arch.cnn6.train.learning_rate": 0.1}, "unknown key(s) ['learning_rate'] for TrainConfig"),
    ({"arch.cnn6.model.preset": "huge"}, "arch.cnn6.model.preset: 'huge' is not a cnn6 preset; use one of panns, paper, small"),
    ({"arch.cnn6.model.preset": DELETE}, "arch.cnn6.model.preset: missing; name one of the cnn6 presets"),
    ({"arch.cnn6.model.dropout": "high"}, "arch.cnn6.model: model cnn6.dropout: expected a number, got 'high'"),
    ({"arch.cnn6.frontend": "big"}, "arch.cnn6.frontend: 'big' is not a frontend; name one of frontends: small"),
    ({"train.architectures": []}, "train.architectures is empty: nothing would run"),
    ({"train.architectures": ["cnn7"]}, "train.architectures: ['cnn7'] have no section in params.yaml"),
    ({"train.seeds": ["a"]}, "train.seeds: expected a non-empty list of integers, got ['a']"),
    ({"tuning.n_trials": "two"}, "tuning.n_trials: expected an integer, got 'two'"),
    ({"tuning.n_trials": 0}, "tuning.n_trials: must be >= 1, got 0"),
    ({"tuning.pruner": "random"}, "tuning.pruner: must be one of median, hyperband, none, got 'random'"),
    ({"tuning.space.cnn6": {}}, "tuning.space.cnn6: empty or missing, but cnn6 is in tuning.architectures"),
    ({"tuning.space.cnn6.lr": {"type": "float", "low": 1e-4, "high": 1e-2}},
     "tuning.space.cnn6: unknown override key 'lr' for cnn6 (did you mean 'train.lr'?)"),
    ({"evaluate.n_boot": 0}, "evaluate.n_boot: must be >= 1 (bootstrap resamples), got 0"),
    ({"frontends.small.frontend.n_mels": "64"}, "frontends.small.frontend.n_mels: expected an integer, got '64'"),
    ({"data.source": "icbhi2"}, "unknown dataset source 'icbhi2'"),
]


def _edited(edit: dict) -> dict:
    params = _common.load_params(REPO / "params.yaml")
    for key, value in edit.items():
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return params


@pytest.mark.parametrize("edit, fragment", BAD_PARAMS, ids=[next(iter(e)) for e, _ in BAD_PARAMS])
def test_a_bad_param_is_refused_at_start_up_naming_its_key(edit, fragment, tmp_path):
    with pytest.raises(ConfigError) as err:
        build_all(_edited(edit), tmp_path / "absent.csv")
    assert fragment in str(err.value)


def test_the_committed_params_pass():
    """The table's rows fail because of their edit, not because the base is broken."""
    assert build_all(_edited({}), REPO / "absent.csv").run.architectures


def _stage(script: str, *args: str, params: dict, tmp_path: Path, debug: bool = False) -> subprocess.CompletedProcess:
    file = tmp_path / "params.yaml"
    file.write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(REPO), "LUNGPIPE_PARAMS": str(file)}
    env.pop("LUNGPIPE_DEBUG", None)
    if debug:
        env["LUNGPIPE_DEBUG"] = "1"
    return subprocess.run(check=False, args=[sys.executable, str(REPO / "stages" / script), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script, args, edit, message, check_debug", [
    ("train.py", ("cnn6",), {"arch.cnn6.train.lr": [float("nan"), float("nan")]},
     "error: arch.cnn6.train.lr: expected a number, got [nan, nan] (list)", False),
    ("download.py", (), {"data.folds": ["official", 1]},
     "error: data.folds ['official', 1] mixes 'official' with fold numbers", True),
])
def test_a_stage_with_a_bad_param_prints_one_error_line_and_no_traceback(script, args, edit, message, check_debug,
                                                                         tmp_path):
    """What `dvc repro` shows: the stage exits 1 before any work with `error: <key>: …`; brackets
    in the message survive (no rich markup); LUNGPIPE_DEBUG=1 shows the traceback (run for one
    stage: every stage's main is the same report_errors wrapper, and a second start of the train
    stage, which imports torch and MLflow, cost ~10 s for the same assertion)."""
    params = _edited(edit)
    done = _stage(script, *args, params=params, tmp_path=tmp_path)
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr
    assert message in done.stderr
    assert not (tmp_path / "data").exists()
    if check_debug:
        debug = _stage(script, *args, params=params, tmp_path=tmp_path, debug=True)
        assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_the_error_printer_keeps_brackets(capsys):
    print_error("probabilities outside [0, 1]: [nan, nan] in [bold]x.csv[/bold]")
    assert capsys.readouterr().err.strip() == "error: probabilities outside [0, 1]: [nan, nan] in [bold]x.csv[/bold]"


def test_the_wrapper_exits_1_for_user_errors_and_labels_internal_ones(capsys, monkeypatch):
    monkeypatch.delenv("LUNGPIPE_DEBUG", raising=False)

    @report_errors
    def user_error():
        raise ConfigError("train.defaults.epochs: expected an integer, got 'ten'")

    @report_errors
    def internal_error():
        return {}["missing"]

    with pytest.raises(SystemExit) as exit_:
        user_error()
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "error: train.defaults.epochs: expected an integer, got 'ten'\n"
    with pytest.raises(SystemExit):
        internal_error()
    err = capsys.readouterr().err
    assert err.startswith("error: KeyError: 'missing' (an internal error") and "LUNGPIPE_DEBUG=1" in err
    monkeypatch.setenv("LUNGPIPE_DEBUG", "1")
    with pytest.raises(ConfigError):
        user_error()


def test_the_lungpipe_cli_reports_through_the_same_wrapper(tmp_path):
    bad = tmp_path / "predictions.csv"
    bad.write_text("label,pred\n0,[nan]\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("LUNGPIPE_DEBUG", None)
    done = subprocess.run(check=False, args=[sys.executable, "-m", "lungpipe.cli", "evaluate", str(bad)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and str(bad) in done.stderr
