"""lungpipe.util.yaml_load: the C parser gives the values PyYAML's pure-Python safe loader gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lungpipe.util import yaml_load

REPO = Path(__file__).resolve().parents[1]
FILES = ["params.yaml", "dvc.yaml", "dvc.lock", *(p.relative_to(REPO).as_posix() for p in (REPO / "params").rglob("*.yaml"))]


def test_uses_libyaml_when_pyyaml_has_it():
    assert yaml_load.SafeLoader is (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)


@pytest.mark.parametrize("name", FILES)
def test_project_yaml_loads_to_the_same_values(name):
    text = (REPO / name).read_text(encoding="utf-8")
    assert yaml_load.safe_load(text) == yaml.safe_load(text)


def test_tricky_scalars_and_errors_match_safe_load():
    text = "a: 1e-6\nb: 0.000001\nc: [yes, no, on, 'N', null, ~, 010, 0x1f, 2024-01-02]\nd: {e: .inf, f: -.nan}\n"
    ours, theirs = yaml_load.safe_load(text), yaml.safe_load(text)
    assert repr(ours) == repr(theirs)  # repr: nan != nan
    with pytest.raises(yaml.YAMLError):
        yaml_load.safe_load("a: [1, 2\nb: 3")
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml_load.safe_load("!!python/object:os.system {}")
