"""dvc.yaml's dependencies are complete: each stage depends on its script and on every lungpipe
module the script imports, transitively (imports inside functions, and modules named in strings
such as the model registry's ``"lungpipe.models.ast"`` or a source's ``"lungpipe.data.esc50:Cls"``,
count); per-architecture stages depend on their own tuned file and feature folder only."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
_MODULE_STRING = re.compile(r"^(lungpipe(?:\.\w+)*)(?::\w+)?$")


def module_file(root: Path, dotted: str) -> Path | None:
    """The file that defines module ``dotted`` under ``root`` (package ``__init__`` or ``.py``)."""
    base = root.joinpath(*dotted.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(root: Path, path: Path) -> set[str]:
    """Every dotted name ``path`` may import: ``import a.b``, ``from a import b`` (a, a.b),
    relative imports, anywhere in the file (functions included), and module-name strings."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = list(path.relative_to(root).parent.parts)  # a module's or __init__'s package
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _MODULE_STRING.match(node.value)
            if match:
                names.add(match.group(1))
    return names


def code_closure(root: Path, script: Path) -> set[Path]:
    """The script and every file of lungpipe (and of stages/, e.g. _common.py) it imports, transitively;
    importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imported_names(root, current):
            if (root / "stages" / f"{name}.py").is_file():  # a stage helper (_common, _run, _tuning, ...)
                todo.append(root / "stages" / f"{name}.py")
                continue
            parts = name.split(".")
            if parts[0] != "lungpipe":
                continue
            for i in range(1, len(parts) + 1):
                found = module_file(root, ".".join(parts[:i]))
                if found is not None:
                    todo.append(found)
    return seen


def resolved_stages(root: Path) -> dict[str, dict]:
    """dvc.yaml as DVC resolves it (templating applied): {stage name: definition}."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        out = {}
        for stage in repo.index.stages:
            out[stage.addressing] = {
                "cmd": stage.cmd,
                "deps": [str(Path(d.def_path)) for d in stage.deps if not d.def_path.endswith("params.yaml")],
                "params": sorted(k for d in stage.deps if hasattr(d, "params") for k in (d.params or [])),
                "outs": [str(Path(o.def_path)) for o in stage.outs],
            }
        return out


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.fixture(scope="module")
def stages() -> dict[str, dict]:
    return resolved_stages(REPO)


def _script(cmd: str) -> Path:
    words = shlex.split(cmd)
    assert words[:2] == ["python", words[1]] and words[1].startswith("stages/"), cmd
    return REPO / words[1]


def test_walker_finds_imports_inside_functions_and_registry_strings():
    files = {str(p.relative_to(REPO)) for p in code_closure(REPO, REPO / "stages" / "train.py")}
    # imported inside main(): lungpipe.training.job, and through it the model registry
    assert "lungpipe/training/job.py" in files
    # only named in the registry's string tuple, imported with importlib
    assert "lungpipe/models/ast.py" in files
    assert "lungpipe/models/mrinet/model.py" in files
    # a package's __init__ runs on import
    assert "lungpipe/__init__.py" in files and "stages/_common.py" in files
    assert "lungpipe/report/build.py" not in files


@pytest.fixture(scope="module")
def closures(stages) -> dict[str, set[str]]:
    """{stage name: the repository-relative files its script imports}, walked once per script
    (the stages of one foreach share it) for the two tests below, which only read it."""
    by_script: dict[Path, set[str]] = {}
    for stage in stages.values():
        script = _script(stage["cmd"])
        if script not in by_script:
            by_script[script] = {str(p.relative_to(REPO)) for p in code_closure(REPO, script)}
    return {name: by_script[_script(stage["cmd"])] for name, stage in stages.items()}


def test_every_stage_depends_on_all_the_code_it_imports(stages, closures):
    missing = {}
    for name, stage in stages.items():
        needed = sorted(closures[name])
        lacking = [p for p in needed if not covered(p, stage["deps"])]
        if lacking:
            missing[name] = lacking
    assert not missing, f"dvc.yaml misses code dependencies (stage: files): {missing}"


def test_no_stage_depends_on_code_it_does_not_import(stages, closures):
    """Extra code deps rerun a stage for nothing (e.g. a report change retraining every model)."""
    extra = {}
    for name, stage in stages.items():
        needed = closures[name]
        code_deps = [d for d in stage["deps"] if d.startswith(("lungpipe", "stages"))]
        unused = [d for d in code_deps if not any(n == d or n.startswith(d + "/") for n in needed)]
        if unused:
            extra[name] = unused
    assert not extra, f"code dependencies no import needs (stage: deps): {extra}"


def test_train_depends_on_its_own_tuned_file_and_frontend_only(stages):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    archs = params["arch"]
    assert len({a["frontend"] for a in archs.values()}) >= 1
    for arch, section in archs.items():
        deps = stages[f"train@{arch}"]["deps"]
        assert f"tuned/{arch}.yaml" in deps
        assert f"data/features/{section['frontend']}" in deps
        assert not any(d in ("tuned", "data/features") for d in deps), deps
        others = [d for d in deps if d.startswith("tuned/") and d != f"tuned/{arch}.yaml"]
        assert not others, others


def test_params_are_listed_at_leaf_level_where_a_section_is_not_needed(stages):
    for name, stage in stages.items():
        # whole top-level sections re-run a stage on any change in them (the report reads only
        # the keys of `arch`: which architectures to report)
        allowed = {"arch"} if name == "report" else set()
        assert not ({"data", "train", "arch", "frontends"} - allowed) & set(stage["params"]), (name, stage["params"])
    # the data stages read only the active source's section
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    source = params["data"]["source"]
    section = {"synth": "synth"}.get(source, source)
    assert f"data.{section}" in stages["download"]["params"]
    assert not [p for p in stages["download"]["params"] if p.startswith("data.icbhi")] or source == "icbhi"


@pytest.mark.parametrize("profile", ["params.yaml", *sorted(p.name for p in (REPO / "params").glob("*.yaml"))])
def test_the_trained_architectures_are_the_arch_sections(profile):
    """dvc.yaml iterates over `arch`; train.architectures (where a profile has it) must agree."""
    path = REPO / profile if profile == "params.yaml" else REPO / "params" / profile
    params = yaml.safe_load(path.read_text())
    listed = (params.get("train") or {}).get("architectures")
    if listed is not None:
        assert sorted(listed) == sorted(params["arch"]), profile
    for arch in (params.get("tuning") or {}).get("architectures") or []:
        assert arch in params["arch"], (profile, arch)


def test_data_raw_dir_is_honoured(stages):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())["data"]["raw_dir"]
    assert raw in stages["download"]["outs"]
    assert raw in stages["manifest"]["deps"] and raw in stages["preprocess@small"]["deps"]
