"""The retrain workflow (.github/workflows/retrain.yml) and the `lungpipe ci` logic it calls."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from lungpipe.ci import CommandResult, build_summary, pull_if_remote, resolve_base, write_step_summary

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"
INSTALL = 'pip install -e ".[dev]"'
PIPELINE_PATHS = {"lungpipe/**", "stages/**", "params.yaml", "dvc.yaml", "dvc.lock", "**/*.dvc", "pyproject.toml"}


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(job: dict) -> list[dict]:
    return job["steps"]


def _run_lines(workflow: dict):
    for job_name, job in workflow["jobs"].items():
        for step in _steps(job):
            for line in step.get("run", "").splitlines():
                if line.strip() and not line.strip().startswith("#"):
                    yield job_name, step, line.strip()


def test_triggers(workflow):
    on = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert set(on) == {"push", "pull_request", "workflow_dispatch"}
    for event in ("push", "pull_request"):
        assert on[event]["branches"] == ["main"]
        assert PIPELINE_PATHS <= set(on[event]["paths"]), event
    assert on["workflow_dispatch"]["inputs"]["paper"]["type"] == "boolean"


def _is_group(command) -> bool:
    # typer may ship its own click: test the interface, not the class
    return callable(getattr(command, "get_command", None)) and callable(getattr(command, "list_commands", None))


def test_every_lungpipe_command_exists_in_the_cli(workflow):
    from lungpipe.cli import app

    root = typer.main.get_command(app)
    used = []
    for job, _step, line in _run_lines(workflow):
        words = shlex.split(line)
        if not words or words[0] != "lungpipe":
            continue
        command, ctx, path = root, root.context_class(root), ["lungpipe"]
        for word in words[1:]:
            if not _is_group(command) or word.startswith("-"):
                break
            sub = command.get_command(ctx, word)
            assert sub is not None, f"{job}: `{line}`: {' '.join(path)} has no sub-command {word!r}"
            command, ctx, path = sub, sub.context_class(sub, parent=ctx), [*path, word]
        assert not _is_group(command), f"{job}: `{line}` names a group, not a command"
        options = {opt for p in command.params for opt in p.opts}
        for word in words[len(path):]:
            if word.startswith("--"):
                assert word.split("=")[0] in options, f"{job}: `{line}`: unknown option {word}"
        used.append(" ".join(path))
    assert {"lungpipe ci pull", "lungpipe ci summary"} <= set(used)


def test_install_step_is_the_readme_command(workflow):
    for job in workflow["jobs"].values():
        installs = [s for s in _steps(job) if s.get("name") == "Install"]
        assert len(installs) == 1 and installs[0]["run"].strip() == INSTALL


def test_readme_documents_the_install_command():
    readme = REPO / "README.md"
    if not readme.is_file():
        pytest.skip("README.md not written yet")
    assert INSTALL in readme.read_text()


def test_jobs(workflow):
    cpu, gpu = workflow["jobs"]["retrain"], workflow["jobs"]["gpu-paper"]
    assert cpu["runs-on"] == "ubuntu-latest"
    checkout = _steps(cpu)[0]
    assert checkout["uses"].startswith("actions/checkout@") and checkout["with"]["fetch-depth"] == 0
    setup = next(s for s in _steps(cpu) if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(setup["with"]["python-version"]) == "3.11"
    runs = [line for _, _, line in _run_lines({"jobs": {"cpu": cpu}})]
    assert runs.index("dvc repro") < next(i for i, r in enumerate(runs) if r.startswith("lungpipe ci summary"))
    uploads = [s for s in _steps(cpu) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads and {"report/", "mlflow.db"} <= set(uploads[0]["with"]["path"].split())
    assert set(gpu["runs-on"]) == {"self-hosted", "gpu"}
    assert "workflow_dispatch" in gpu["if"] and "inputs.paper" in gpu["if"]
    gpu_runs = [line for _, _, line in _run_lines({"jobs": {"gpu": gpu}})]
    assert "dvc exp run -S profile=paper" in gpu_runs  # DVC composes the profile over params/base.yaml


def test_the_tests_run_before_any_retraining(workflow):
    for name, job in workflow["jobs"].items():
        runs = [line for _, _, line in _run_lines({"jobs": {name: job}})]
        tests = [i for i, r in enumerate(runs) if r.startswith("python -m pytest")]
        assert tests, f"{name}: no test step"
        retrain = next(i for i, r in enumerate(runs) if r.startswith(("dvc repro", "dvc exp run")))
        assert tests[0] < retrain, name
        assert " -x" in runs[tests[0]], "stop at the first failure: no retraining on broken code"


# ------------------------------------------------------------------------------- ci summary logic
class FakeRunner:
    def __init__(self, outputs: dict[str, CommandResult]):
        self.outputs, self.calls = outputs, []

    def __call__(self, cmd):
        self.calls.append(list(cmd))
        key = " ".join(cmd[:4])
        if key in self.outputs:
            return self.outputs[key]
        return NO_JSON if "--json" in cmd else self.outputs[" ".join(cmd[:3])]


NO_JSON = CommandResult(0, "{}")


METRICS_MD = ("| Path | Metric | HEAD | workspace | Change |\n|---|---|---|---|---|\n"
              "| metrics/cnn6.json | score | 0.61 | 0.64 | 0.03 |")

PARAMS_MD = ("| Path | Param | HEAD | workspace |\n|---|---|---|---|\n"
             "| params.yaml | train.defaults.lr | 0.001 | 0.002 |\n")


def test_summary_assembles_both_diffs_and_the_report(tmp_path):
    report = tmp_path / "summary.md"
    report.write_text("## Architecture comparison\n| cnn6 | 64.00 |\n")
    runner = FakeRunner({"dvc metrics diff": CommandResult(0, METRICS_MD + "\n"),
                         "dvc params diff": CommandResult(0, "| Path | Param | HEAD | workspace |\n|---|---|---|---|\n")})
    text = build_summary("origin/main", runner=runner, report_md=report)
    assert runner.calls == [["dvc", "metrics", "diff", "--json", "--all", "origin/main"],
                            ["dvc", "metrics", "diff", "--md", "origin/main"],
                            ["dvc", "params", "diff", "--md", "origin/main"]]
    metrics_at, params_at, report_at = (text.index("### Metrics"), text.index("### Parameters"),
                                        text.index("## Architecture comparison"))
    assert metrics_at < text.index("| metrics/cnn6.json | score | 0.61 | 0.64 | 0.03 |") < params_at
    assert params_at < text.index("No parameter changed.") < report_at
    assert "`origin/main`" in text.splitlines()[0]


def test_a_failing_diff_is_reported_not_raised(tmp_path):
    runner = FakeRunner({"dvc metrics diff": CommandResult(255, "", "ERROR: unknown Git revision 'origin/main'"),
                         "dvc params diff": CommandResult(0, PARAMS_MD)})
    text = build_summary("origin/main", runner=runner, report_md=tmp_path / "missing.md")
    assert "failed (exit 255)" in text and "unknown Git revision 'origin/main'" in text
    assert "| params.yaml | train.defaults.lr | 0.001 | 0.002 |" in text and "no report summary at" in text


def test_step_summary_is_appended(tmp_path):
    target = tmp_path / "step_summary"
    target.write_text("earlier step")
    write_step_summary("## ours\n", target)
    assert target.read_text() == "earlier step\n## ours\n"


def test_base_revision_per_event(tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"before": "a" * 40}))
    assert resolve_base({"GITHUB_EVENT_NAME": "pull_request", "GITHUB_BASE_REF": "main"}) == "origin/main"
    assert resolve_base({"GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(event)}) == "a" * 40
    event.write_text(json.dumps({"before": "0" * 40}))  # a new branch
    assert resolve_base({"GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(event)}) == "HEAD~1"
    assert resolve_base({"GITHUB_EVENT_NAME": "workflow_dispatch"}) == "origin/main"


def test_pull_only_with_a_remote():
    none = FakeRunner({"dvc remote list": CommandResult(0, "")})
    assert pull_if_remote(none) is None and none.calls == [["dvc", "remote", "list"]]
    some = FakeRunner({"dvc remote list": CommandResult(0, "storage\ts3://bucket/lungpipe\n"),
                       "dvc pull --allow-missing": CommandResult(0, "2 files fetched\n")})
    assert pull_if_remote(some).stdout == "2 files fetched\n"
    assert some.calls[-1] == ["dvc", "pull", "--allow-missing"]


def test_ci_summary_command_writes_the_step_summary(tmp_path, monkeypatch):
    from lungpipe import ci
    from lungpipe.cli.ci import app

    fake = FakeRunner({"dvc metrics diff": CommandResult(0, METRICS_MD), "dvc params diff": CommandResult(0, "")})
    monkeypatch.setattr(ci, "run_command", fake)
    step = tmp_path / "step.md"
    result = CliRunner().invoke(app, ["summary", "--base", "HEAD~1", "--report", str(tmp_path / "none.md"),
                                      "--out", str(tmp_path / "body.md")], env={"GITHUB_STEP_SUMMARY": str(step)})
    assert result.exit_code == 0, result.output
    assert re.search(r"changes against `HEAD~1`", step.read_text())
    assert step.read_text() == (tmp_path / "body.md").read_text()
    assert fake.calls[1] == ["dvc", "metrics", "diff", "--md", "HEAD~1"]


def _git(repo, *args):
    import subprocess

    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_significance_is_judged_against_the_seed_spread_with_real_dvc(tmp_path):
    """Base and new metric files in a real git + DVC repository; `dvc metrics diff --json` feeds it."""
    import subprocess

    from lungpipe.ci import SIGNIFICANCE_RULE, run_command, significance_section

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True)
    (repo / "dvc.yaml").write_text("metrics:\n  - metrics/cnn6.json\n  - metrics/ast.json\n  - metrics/one.json\n")
    (repo / "metrics").mkdir()

    def write(name, mean, sd):
        (repo / "metrics" / f"{name}.json").write_text(json.dumps({"score": mean, "score_mean": mean, "score_sd": sd}))

    write("cnn6", 0.70, 0.02)
    write("ast", 0.60, 0.05)
    write("one", 0.50, None)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    write("cnn6", 0.75, 0.02)  # +0.05 > 2 × 0.02: beyond the seed spread
    write("ast", 0.66, 0.04)  # +0.06 ≤ 2 × 0.05: training noise
    write("one", 0.60, None)  # one seed: cannot be judged

    text = significance_section("HEAD", lambda cmd: run_command(cmd, cwd=repo))
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| metrics/")}
    assert "**significant** (> 2 × sd 0.020)" in rows["metrics/cnn6.json"]
    assert "| 0.700 ± 0.020 | 0.750 ± 0.020 | 0.050 |" in rows["metrics/cnn6.json"]
    assert "within seed spread (≤ 2 × sd 0.050)" in rows["metrics/ast.json"]
    assert "unknown: no seed spread (one seed)" in rows["metrics/one.json"]
    assert SIGNIFICANCE_RULE in text
