"""params.yaml and every profile in params/ build into checked typed configs, every architecture of
every profile builds and trains one step through the train stage's path, overrides are namespaced,
and no library module sees the raw params mapping."""

from __future__ import annotations

import ast
import builtins
import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lungpipe.features.frontend import n_frames
from lungpipe.models import create_model
from lungpipe.training.arch_settings import with_overrides
from lungpipe.util.typed_config import ConfigError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "stages"))
sys.path.insert(0, str(REPO / "tests"))
import _common
import _run
from stage_configs import build_all

PROFILES = [REPO / "params.yaml"]  # the paper profiles are overlays: tests/test_profiles.py composes them


@pytest.fixture(params=PROFILES, ids=lambda p: p.name)
def params(request) -> dict:
    return _common.load_params(request.param)


def _configs(params, tmp_path):
    """Every config the stages build at start-up, flattened for the checks below."""
    c = build_all(params, tmp_path / "absent.csv")
    return SimpleNamespace(**vars(c.run), frontends=c.frontends, tuning=c.tuning.config,
                           tuning_spaces=c.tuning.spaces, tuning_architectures=c.tuning.architectures)


def test_profiles_are_there():
    assert {p.stem for p in (REPO / "params" / "profile").glob("*.yaml")} >= {"default", "paper", "esc50", "diagnosis"}


def test_every_profile_builds_all_its_configs(params, tmp_path):
    run = _configs(params, tmp_path)
    assert run.architectures and set(run.architectures) <= set(run.archs)
    for arch in run.architectures:
        assert run.archs[arch].frontend in run.frontends
        assert run.archs[arch].model["preset"]  # always explicit
    assert set(run.tuning_spaces) == set(run.tuning_architectures)
    assert len(run.dataset.class_names) >= 2
    if run.dataset.metric_task == "multiclass":
        assert all(run.archs[a].train.selection_metric in ("accuracy", "balanced_accuracy", "macro_f1")
                   for a in run.architectures)


def _input_shape(run, arch: str) -> tuple[int, int]:
    pre = run.frontends[run.archs[arch].frontend]
    return n_frames(pre.frontend, pre.cycle.n_samples, pre.cycle.sample_rate), pre.frontend.n_mels


def _one_step(model: torch.nn.Module, frames: int, mels: int, num_classes: int) -> float:
    """One optimizer step on a batch of 2; returns how far the weights moved."""
    torch.manual_seed(0)
    model.train()
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(2, 1, frames, mels)
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else getattr(out, "logits", out)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, num_classes - 1]))
    loss.backward()
    opt.step()
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert logits.shape == (2, num_classes) and torch.isfinite(loss)
    return float(sum((a - b).abs().sum() for a, b in zip(after, before)))


def _model_config(run, arch: str, num_classes: int) -> dict:
    frames, mels = _input_shape(run, arch)
    # the same mapping the train stage's job builds (settings.model + the data's shape)
    return {**run.archs[arch].model, "num_classes": num_classes, "n_frames": frames, "n_mels": mels}


def test_every_small_architecture_of_the_default_profile_trains_one_step(tmp_path):
    run = _configs(_common.load_params(REPO / "params.yaml"), tmp_path)
    k = len(run.dataset.class_names)
    for arch in run.architectures:
        cfg = _model_config(run, arch, k)
        moved = _one_step(create_model(arch, cfg), cfg["n_frames"], cfg["n_mels"], k)
        assert moved > 0, arch


SIZE_KEYS = ("time_tokens",)  # model keys that pin a preset's size (dropped with it when shrinking)


def _shrunk(section: dict) -> dict:
    """The profile's model section at the small presets' depth (its other keys kept), for a step
    that takes seconds on CPU; pretrained weights left out (no network in tests)."""
    out = {k: v for k, v in section.items() if k not in SIZE_KEYS}
    out["preset"] = "small"
    if "pretrained" in out:
        out["pretrained"] = None
    if isinstance(out.get("backbone"), dict):
        out["backbone"] = {**out["backbone"], "preset": "small"}
    return out


def _profile_runs(tmp_path):
    from test_profiles import composed

    return [(name, _configs(composed(name), tmp_path)) for name in ("paper", "esc50", "diagnosis")]


def test_every_architecture_of_every_paper_profile_builds_at_full_size(tmp_path):
    """The released sizes are built once per architecture at the paper profile's input shape,
    through the train stage's path (typed settings -> create_model), pretrained weights left out."""
    run = _configs(__import__("test_profiles").composed("paper"), tmp_path)
    k = len(run.dataset.class_names)
    for arch in run.architectures:
        cfg = _model_config(run, arch, k)
        if "pretrained" in cfg:
            cfg["pretrained"] = None
        n_params = sum(p.numel() for p in create_model(arch, cfg).parameters() if p.requires_grad)
        small = create_model(arch, {"preset": "small", **{x: cfg[x] for x in ("num_classes", "n_frames", "n_mels")}})
        n_small = sum(p.numel() for p in small.parameters() if p.requires_grad)
        assert n_params > 2 * n_small, (arch, n_params, n_small)  # the paper sizes, not the small presets


def test_every_architecture_of_every_paper_profile_trains_one_step(tmp_path):
    """Each paper profile's model sections (loss, bias loss, backbone choice, ...) at the small depth
    and the profile's own input shape take one optimizer step."""
    for name, run in _profile_runs(tmp_path):
        k = len(run.dataset.class_names)
        for arch in run.architectures:
            cfg = {**_model_config(run, arch, k), **_shrunk(run.archs[arch].model)}
            assert _one_step(create_model(arch, cfg), cfg["n_frames"], cfg["n_mels"], k) > 0, (name, arch)


def test_namespaced_overrides_reach_their_own_config(tmp_path):
    """ADD4RSC has a label_smoothing of its own (the bias loss's ε) and the engine has one for the
    main loss: each namespaced key reaches only its config."""
    run = _configs(_common.load_params(REPO / "params.yaml"), tmp_path)
    base = run.archs["add4rsc_ast"]
    model_side = with_overrides(base, {"model.label_smoothing": 0.3})
    assert model_side.model["label_smoothing"] == 0.3 and model_side.train.label_smoothing == base.train.label_smoothing
    train_side = with_overrides(base, {"train.label_smoothing": 0.2})
    assert train_side.train.label_smoothing == 0.2 and "label_smoothing" not in train_side.model
    both = with_overrides(base, {"train.lr": 3e-4, "augment.time_mask_frac": 0.07, "model.preset": "small"})
    assert both.train.lr == 3e-4 and both.train.augment.time_mask_frac == 0.07
    assert both.tuned == {"train.lr": 3e-4, "augment.time_mask_frac": 0.07, "model.preset": "small"}
    from lungpipe.models import resolve_config

    assert resolve_config("add4rsc_ast", model_side.model).label_smoothing == 0.3


@pytest.mark.parametrize("overrides, fragment", [
    ({"lr": 0.1}, "unknown override key 'lr' for cnn6 (did you mean 'train.lr'?)"),
    ({"label_smoothing": 0.1}, "did you mean 'train.label_smoothing'?"),
    ({"model.label_smoothing": 0.1}, "unknown override key 'model.label_smoothing' for cnn6"),
    ({"train.epochs": "ten"}, "tuned/x.yaml: train.epochs: expected an integer, got 'ten'"),
    ({"train.lr": -1.0}, "tuned/x.yaml: train.lr: must be > 0, got -1.0"),
    ({"augment.fill": "noise"}, "tuned/x.yaml: augment.fill: must be one of mean, zero"),
    ({"model.preset": "huge"}, "'huge' is not a cnn6 preset"),
])
def test_bad_overrides_name_the_key(tmp_path, overrides, fragment):
    base = _configs(_common.load_params(REPO / "params.yaml"), tmp_path).archs["cnn6"]
    with pytest.raises(ConfigError) as err:
        with_overrides(base, overrides, source="tuned/x.yaml")
    assert fragment in str(err.value)


def test_an_unknown_search_space_key_is_refused_at_start_up(tmp_path):
    params = _common.load_params(REPO / "params.yaml")
    params["tuning"]["space"]["cnn6"]["learning_rate"] = {"type": "float", "low": 0.1, "high": 0.2}
    with pytest.raises(ConfigError, match="tuning.space.cnn6: unknown override key 'learning_rate'"):
        _configs(params, tmp_path)


def test_tuned_values_are_applied_and_an_overridden_explicit_value_is_logged(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(_run, "tuned_file", lambda arch: tmp_path / "tuned" / f"{arch}.yaml")
    (tmp_path / "tuned").mkdir()
    (tmp_path / "tuned" / "cnn6.yaml").write_text("best_params: {train.lr: 0.0042, model.dropout: 0.25}\n")
    monkeypatch.setattr(_run, "ROOT", tmp_path)
    params = _common.load_params(REPO / "params.yaml")
    with caplog.at_level("WARNING", logger="lungpipe.stages"):
        run = _run.build_run_config(params, tmp_path / "absent.csv", announce_tuned=True)
    assert run.archs["cnn6"].train.lr == 0.0042 and run.archs["cnn6"].model["dropout"] == 0.25
    assert "train.lr=0.0042" in caplog.text and "arch.cnn6.train.lr=0.001" in caplog.text
    params["train"]["use_tuned"] = False
    assert _run.build_run_config(params, tmp_path / "absent.csv").archs["cnn6"].train.lr == 0.001


def test_train_defaults_has_no_dead_lr():
    """Every architecture sets its own lr, so a train.defaults.lr would never be used."""
    from test_profiles import PROFILES as NAMES
    from test_profiles import composed

    for name in NAMES:
        params = composed(name)
        assert "lr" not in params["train"]["defaults"], name
        assert all("lr" in (section.get("train") or {}) for section in params["arch"].values()), name


def test_evaluation_defaults_live_in_one_place(tmp_path):
    """The train stage scores test predictions with the evaluation config's n_boot (no second default)."""
    params = _common.load_params(REPO / "params.yaml")
    del params["evaluate"]["n_boot"]
    from lungpipe.evaluation.scoring import EvaluationConfig

    assert _configs(params, tmp_path).evaluation.n_boot == EvaluationConfig().n_boot
    assert "n_boot=run.evaluation.n_boot" in (REPO / "stages" / "train.py").read_text()


# --- the library never sees the raw params mapping ---------------------------------------------

LIBRARY = REPO / "lungpipe"
ENTRY_POINTS = (LIBRARY / "cli",)  # CLIs, like stages, may read user files


def _library_modules():
    for file in sorted(LIBRARY.rglob("*.py")):
        if not any(file.is_relative_to(p) for p in ENTRY_POINTS):
            yield file


SECTIONS = frozenset(_common.load_params(REPO / "params.yaml"))  # data, frontends, train, arch, tuning, ...


def _is_params(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "params") or (
        isinstance(node, ast.Attribute) and node.attr == "params")


def test_no_library_function_takes_or_reads_the_params_mapping():
    """Flags: indexing a `params` / `x.params` mapping by a params.yaml section (`params["train"]`,
    `job.params.get("tuning")`), calling the stage helpers that read it, or opening params.yaml."""
    offenders = []
    for file in _library_modules():
        tree = ast.parse(file.read_text(encoding="utf-8"))
        rel = file.relative_to(REPO)
        for node in ast.walk(tree):
            key = None
            if isinstance(node, ast.Subscript) and _is_params(node.value):
                key = node.slice
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                  and _is_params(node.func.value) and node.args):
                key = node.args[0]
            if isinstance(key, ast.Constant) and key.value in SECTIONS:
                offenders.append(f"{rel}:{node.lineno} reads the params section {key.value!r}")
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in ("load_params", "arch_settings", "build_run_config", "load_run_config"):
                    offenders.append(f"{rel}:{node.lineno} calls the stage helper {name}()")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith("params.yaml") \
                    and not _in_docstring_or_message(tree, node):
                offenders.append(f"{rel}:{node.lineno} names the file params.yaml")
    assert not offenders, "library code sees the raw params mapping:\n" + "\n".join(offenders)


def _in_docstring_or_message(tree: ast.AST, target: ast.Constant) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, (ast.JoinedStr, ast.Expr)) and target in ast.walk(node):
            return True
    return False


def test_stages_pass_no_whole_params_mapping_to_the_library():
    """Stage scripts call the library with typed configs or sections, never the whole mapping
    (only the stages' own helpers in stages/ receive it)."""
    common_funcs = {n.name for f in (REPO / "stages").glob("*.py") for n in ast.parse(f.read_text()).body
                    if isinstance(n, ast.FunctionDef)}  # the stages' own helpers may read the mapping
    offenders = []
    for file in sorted((REPO / "stages").glob("*.py")):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            passes_params = any(isinstance(a, ast.Name) and a.id == "params" for a in node.args) or any(
                isinstance(k.value, ast.Name) and k.value.id == "params" for k in node.keywords)
            if passes_params and func not in common_funcs and func not in dir(builtins):
                offenders.append(f"{file.name}:{node.lineno} {func}(params)")
    assert not offenders, offenders


def test_the_scan_catches_an_offender(tmp_path, monkeypatch):
    """The scan is not vacuous: a module with a `params` argument is reported."""
    fake = tmp_path / "lungpipe"
    fake.mkdir()
    (fake / "bad.py").write_text("def build(job):\n    return job.params.get('tuning')\n")
    monkeypatch.setattr(sys.modules[__name__], "LIBRARY", fake)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    with pytest.raises(AssertionError, match=r"bad.py:2 reads the params section 'tuning'"):
        test_no_library_function_takes_or_reads_the_params_mapping()


def test_typed_settings_round_trip_through_plain_data(tmp_path):
    """A study stores the settings as plain data; rebuilt, they equal the original."""
    from lungpipe.training.arch_settings import ArchSettings
    from lungpipe.util.typed_config import from_dict, to_dict

    s = _configs(_common.load_params(REPO / "params.yaml"), tmp_path).archs["mrinet"]
    assert from_dict(ArchSettings, json.loads(json.dumps(to_dict(s)))) == s
    assert dataclasses.replace(s) == s
