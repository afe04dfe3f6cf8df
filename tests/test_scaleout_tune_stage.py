"""The tune stage script end to end on a copy of the repository (stages/ + lungpipe/ + params.yaml,
features written by the test): tuned/<arch>.yaml names the study that produced it; editing the
search space starts a new study next to the old one in the same journal, and the tuned file
follows the new one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import yaml
from featuredir import write_feature_dir

from lungpipe.tuning import make_storage

REPO = Path(__file__).resolve().parents[1]


def _tiny_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for part in ("stages", "lungpipe"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["tuning"].update(architectures=["cnn6"], n_trials=1, epochs=1, pruner="none",
                            space={"cnn6": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}})
    params["train"]["defaults"].update(batch_size=16, num_workers=0, device="cpu")
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    frontend = params["arch"]["cnn6"]["frontend"]
    write_feature_dir(root / "data" / "features" / frontend, n_train=48, n_test=8)
    return root


def _tune(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LUNGPIPE_PARAMS", "PYTHONPATH")}
    out = subprocess.run([sys.executable, "stages/tune.py", "cnn6"], cwd=root, env={**env, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return yaml.safe_load((root / "tuned" / "cnn6.yaml").read_text())


def test_the_tune_stage_records_its_study_and_a_changed_space_starts_a_new_one(tmp_path):
    root = _tiny_repo(tmp_path)
    first = _tune(root)
    assert first["study"].startswith("lungpipe-synth-cnn6-") and first["storage"] == "optuna/cnn6/study.log"
    assert set(first["identity"]) >= {"space", "settings", "data", "metric", "study_hash"}
    assert first["study"].endswith(first["identity"]["study_hash"]) and first["trials"]["complete"] == 1
    assert 1e-3 <= first["best_params"]["train.lr"] <= 1e-2

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tuning"]["space"]["cnn6"]["train.lr"] = {"type": "float", "low": 0.1, "high": 0.5}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    second = _tune(root)
    assert second["study"] != first["study"] and second["identity"]["space"] != first["identity"]["space"]
    assert second["identity"]["data"] == first["identity"]["data"]
    assert 0.1 <= second["best_params"]["train.lr"] <= 0.5  # not the old study's best
    storage = make_storage(str(root / "optuna" / "cnn6" / "study.log"))
    assert set(optuna.get_all_study_names(storage)) == {first["study"], second["study"]}  # the old one is kept
