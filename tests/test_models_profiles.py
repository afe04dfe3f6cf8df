"""Every architecture of every params profile builds the way the train stage builds it.

The stage path: ``arch_settings`` → the model mapping plus ``num_classes`` and the feature shape
(frames from the profile's frontend and cycle length) → ``create_model``. Paper-size models are built
on PyTorch's ``meta`` device (shapes only, seconds). Pretrained weights cannot be fetched here: the
top-level ``pretrained`` setting is checked to be where the model reads it and then set to ``none``;
one misplaced under ``backbone`` is a ConfigError, as the train stage would raise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lungpipe.features.config import CycleConfig, FrontendConfig
from lungpipe.features.frontend import n_frames
from lungpipe.models import create_model, resolve_config
from lungpipe.util.typed_config import from_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))
import _common  # noqa: E402
import _run  # noqa: E402
from test_profiles import PROFILES, composed  # noqa: E402  (profiles are overlays composed over params/base.yaml)


def _cases():
    for profile in PROFILES:
        for arch in composed(profile)["train"]["architectures"]:
            yield pytest.param(profile, arch, id=f"{profile}-{arch}")


@pytest.mark.parametrize("profile, arch", list(_cases()))
def test_profile_architecture_builds_as_the_train_stage_builds_it(profile, arch):
    params = composed(profile)
    s = _run.arch_settings(params, arch)
    frontend = params["frontends"][s.frontend]
    cycle = from_dict(CycleConfig, frontend.get("cycle") or {})
    fe = from_dict(FrontendConfig, frontend.get("frontend") or {})
    mapping = {**s.model, "num_classes": 4, "n_frames": n_frames(fe, cycle.n_samples, cycle.sample_rate),
               "n_mels": fe.n_mels}
    cfg = resolve_config(arch, mapping)
    if getattr(cfg, "pretrained", None) is not None:
        mapping["pretrained"] = "none"  # hub ids cannot be fetched here; the key's place is what counts
    with torch.device("meta"):
        model = create_model(arch, mapping)
    assert sum(p.numel() for p in model.parameters()) > 0
