"""`lungpipe models list`: one row per registered architecture with its parameter counts."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from lungpipe.cli import app
from lungpipe.cli.models import parameter_count
from lungpipe.models import get_spec, model_names


def test_parameter_count_builds_without_pretrained_weights_on_meta():
    # AST-base at 798 × 128 with a 4-class head (derivation in test_models_ast.py).
    assert parameter_count("ast", "paper") == 85_989_124
    assert parameter_count("resnet50", "paper") == 23_509_956
    assert parameter_count("cnn6", "paper") == 4_306_372  # patch-mix CL's CNN6 (no bn0, no fc1)
    assert parameter_count("cnn6", "panns") == 4_569_284
    assert parameter_count("mrinet", "paper") == 119_733_980


def test_models_list_shows_every_registered_architecture():
    result = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.count("│") >= 5]
    rows = {line.split("│")[1].strip(): line for line in lines}
    assert set(model_names()) <= set(rows)
    for name in model_names():
        row = rows[name]
        assert "error" not in row, row
        assert get_spec(name).description[:40] in row
    for name in ("ast", "resnet50", "cnn6"):
        counts = re.findall(r"[\d,]{5,} \(", rows[name])
        assert counts == [f"{parameter_count(name, 'paper'):,} (", f"{parameter_count(name, 'small'):,} ("]
