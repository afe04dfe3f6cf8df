"""params.yaml and every profile in params/ must build into valid typed configs (catches typos early)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lungpipe.config import ConfigError, from_dict
from lungpipe.models import resolve_config
from lungpipe.settings import arch_settings
from lungpipe.tuning import TuningConfig, parse_space

REPO = Path(__file__).resolve().parents[1]
PROFILES = [REPO / "params.yaml", *sorted((REPO / "params").glob("*.yaml"))]


@pytest.fixture(params=PROFILES, ids=lambda p: p.name)
def params(request) -> dict:
    return yaml.safe_load(request.param.read_text())


def test_every_architecture_resolves(params):
    for arch in params["train"]["architectures"]:
        s = arch_settings(params, arch)
        assert s.frontend in params["frontends"]
        cfg = resolve_config(arch, {**s.model, "num_classes": 4, "n_frames": 400, "n_mels": 64})
        assert cfg.num_classes == 4


def test_frontends_build(params):
    from lungpipe.features import PreprocessConfig

    for name, section in params["frontends"].items():
        from_dict(PreprocessConfig, section, where=f"frontends.{name}")


def test_tuning_section_builds(params):
    tuning = params["tuning"]
    from_dict(TuningConfig, {k: v for k, v in tuning.items() if k not in ("architectures", "space")})
    for arch in tuning["architectures"]:
        s = arch_settings(params, arch)
        assert parse_space(arch, tuning["space"][arch], s)


def test_typo_in_an_architecture_section_is_an_error():
    params = yaml.safe_load(PROFILES[0].read_text())
    params["arch"]["cnn6"]["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match="learning_rate"):
        arch_settings(params, "cnn6")


def test_tuned_values_route_to_train_augment_and_model():
    params = yaml.safe_load(PROFILES[0].read_text())
    s = arch_settings(params, "cnn6", tuned={"lr": 0.123, "time_mask_frac": 0.07, "dropout": 0.3})
    assert s.train.lr == 0.123 and s.train.augment.time_mask_frac == 0.07 and s.model["dropout"] == 0.3


def test_profiles_are_there():
    assert {p.name for p in PROFILES} >= {"params.yaml", "paper.yaml", "esc50.yaml", "diagnosis.yaml"}


def _dvc_param_keys() -> set[str]:
    """Every literal (untemplated) params key the stages of dvc.yaml list."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    keys = set()
    for stage in stages.values():
        for entry in (stage.get("do") or stage).get("params") or []:
            if isinstance(entry, str) and "${" not in entry:
                keys.add(entry)
    return keys


def test_every_param_dvc_reads_is_defined(params):
    """dvc repro fails on a params key missing from params.yaml, so every profile defines them all."""
    for key in sorted(_dvc_param_keys()):
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{key} missing"
            node = node[part]


def test_data_section_builds(params, monkeypatch, tmp_path):
    """The data source, its options, data.folds and the selection metric fit together."""
    import sys

    from lungpipe.data.sources import cv_folds, source_from_params

    source, cfg = source_from_params(params["data"])
    folds = cv_folds(params["data"].get("folds"), source, cfg)
    monkeypatch.syspath_prepend(str(REPO / "stages"))
    sys.modules.pop("_common", None)
    import _common

    info = _common.dataset_info(params, manifest_csv=tmp_path / "absent.csv")
    assert info["folds"] == folds and len(info["class_names"]) >= 2
    if info["metric_task"] == "multiclass":
        s = arch_settings(params, params["train"]["architectures"][0])
        assert s.train.selection_metric in ("accuracy", "balanced_accuracy", "macro_f1")
