"""Every typed config the stages build at start-up, from one params mapping (for tests)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "stages") not in sys.path:
    sys.path.insert(0, str(REPO / "stages"))

import _common
import _run
import _tuning
import preprocess


@dataclass
class StageConfigs:
    data: Any
    run: Any
    tuning: Any
    frontends: dict


def build_all(params: dict, manifest_csv: Path) -> StageConfigs:
    """What download/manifest, preprocess, train, tune and evaluate would each build at start-up."""
    data = _common.data_config(params, manifest_csv)
    frontends = preprocess.frontend_configs(params)
    run = _run.build_run_config(params, manifest_csv)
    return StageConfigs(data=data, run=run, tuning=_tuning.build_tuning(params, run), frontends=frontends)
