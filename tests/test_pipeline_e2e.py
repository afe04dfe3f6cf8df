"""The stage scripts under test: download → manifest → preprocess → tune → train → evaluate →
report through a real `dvc repro` on the tiny profile (tests/tiny_project.py)."""

from __future__ import annotations

import json

import pytest
import yaml
from tiny_project import ARCH, make_tiny_project, run


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = make_tiny_project(tmp_path_factory.mktemp("tiny") / "proj")
    run(project, "dvc", "repro", timeout=900)
    return project


def _stale_stages(project) -> set[str]:
    status = json.loads(run(project, "dvc", "status", "--json").stdout or "{}")
    return set(status)


def test_repro_runs_every_stage_and_leaves_the_pipeline_up_to_date(project):
    for stage in ("download", "manifest", "preprocess@small", f"tune@{ARCH}", f"train@{ARCH}", f"evaluate@{ARCH}",
                  "report"):
        assert f"{stage}:" in (project / "dvc.lock").read_text(), stage
    assert _stale_stages(project) == set()
    assert (project / "report" / "index.html").is_file()
    assert sorted(p.name for p in (project / "models" / ARCH / "official").iterdir()) == ["seed0", "seed1"]


def test_tuned_values_reach_the_trained_config(project):
    tuned = yaml.safe_load((project / "tuned" / f"{ARCH}.yaml").read_text())
    assert tuned["trials"]["complete"] == 2 and set(tuned["best_params"]) == {"train.lr"}
    for seed in (0, 1):
        config = json.loads((project / "models" / ARCH / "official" / f"seed{seed}" / "config.json").read_text())
        assert config["tuned"] == tuned["best_params"]
        assert config["train"]["lr"] == tuned["best_params"]["train.lr"] != 0.001
        assert config["display_name"].startswith(f"{ARCH} (small preset: ")


def test_report_numbers_are_what_dvc_metrics_show_prints(project):
    shown = json.loads(run(project, "dvc", "metrics", "show", "--json").stdout)
    (entry,) = shown.values()
    metrics = entry["data"][f"metrics/{ARCH}.json"]["data"]
    assert metrics == json.loads((project / "metrics" / f"{ARCH}.json").read_text())
    summary = json.loads((project / "report" / "summary.json").read_text())
    assert summary["architectures"][ARCH]["metrics"] == metrics
    assert all(v is None or isinstance(v, float) for v in metrics.values())
    assert metrics["score_sd"] is not None  # two seeds: a spread
    runs = summary["architectures"][ARCH]["runs"]
    assert [r["seed"] for r in runs] == ["0", "1"] and all(r["epochs_run"] == 1 for r in runs)
    curves = (project / "plots" / "validation_curves.csv").read_text().splitlines()
    assert curves[0] == "architecture,epoch,value,n_runs" and len(curves) == 2


def test_dvc_draws_the_validation_curve_overlay(project):
    shown = json.loads(run(project, "dvc", "plots", "show", "--json").stdout)
    assert not shown.get("errors"), shown.get("errors")
    (plot,) = shown["data"]["plots/validation_curves.csv"]
    spec = plot["content"]
    assert spec["encoding"]["color"]["field"] == "architecture"  # one line per architecture
    assert {row["architecture"] for row in spec["data"]["values"]} == {
        json.loads((project / "metrics" / "details" / f"{ARCH}.json").read_text())["display_name"]}


def test_editing_code_the_train_stage_imports_makes_only_its_dependants_stale(project):
    augment = project / "lungpipe" / "training" / "augment_config.py"
    original = augment.read_text()
    try:
        augment.write_text(original + "\n# an edit of SpecAugment's settings\n")
        # train and tune run SpecAugment; the report reads TrainConfig's defaults (which import
        # augment_config.py, not the torch code of augment.py); the data stages and evaluate do not
        assert _stale_stages(project) == {f"tune@{ARCH}", f"train@{ARCH}", "report"}
    finally:
        augment.write_text(original)
    render = project / "lungpipe" / "report" / "render.py"
    original = render.read_text()
    try:
        render.write_text(original + "\n# a report edit\n")
        assert _stale_stages(project) == {"report"}
    finally:
        render.write_text(original)
    assert _stale_stages(project) == set()


def test_an_untuned_architecture_gets_an_empty_tuned_file(tmp_path):
    """tune@<arch> runs for every architecture (train@<arch> depends on its own tuned file)."""
    project = make_tiny_project(tmp_path / "proj")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tuning"]["architectures"] = []
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    run(project, "python", "stages/tune.py", ARCH)
    tuned = yaml.safe_load((project / "tuned" / f"{ARCH}.yaml").read_text())
    assert tuned["best_params"] == {} and tuned["study"] is None and "not tuned" in tuned["note"]
    assert (project / "optuna" / ARCH).is_dir()


def test_mlflow_runs_name_the_preset(project):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
            if r.data.tags.get("dvc_stage") == f"train@{ARCH}"]
    assert sorted(r.info.run_name for r in runs) == [f"{ARCH}[small]-official-seed0", f"{ARCH}[small]-official-seed1"]
    assert all(r.data.tags["model_summary"].startswith(f"{ARCH} (small preset: ") for r in runs)


def test_train_registers_the_best_validation_run_as_champion(project):
    """The train stage registers lungpipe-<dataset>-<arch>@champion (the evaluate stage reads files only)."""
    from mlflow import MlflowClient

    from lungpipe.serving.champion import registered_name

    seeds = [project / "models" / ARCH / "official" / f"seed{seed}" for seed in (0, 1)]
    scores = [json.loads((d / "val_metrics.json").read_text())["score"] for d in seeds]
    best = seeds[scores.index(max(scores))]  # ties: the first listed
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias(registered_name("icbhi_synth", ARCH), "champion")
    assert version.run_id == json.loads((best / "mlflow_run.json").read_text())["run_id"]
    assert version.tags["run_dir"] == f"official/{best.name}"
