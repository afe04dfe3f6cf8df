"""What the CI workflow runs, as testable functions (the workflow YAML only calls ``lungpipe ci …``).

- :func:`resolve_base`: the git revision a CI run compares against (the pull request's base
  branch, the commit before a push, else ``origin/main``).
- :func:`build_summary`: ``dvc metrics diff`` and ``dvc params diff`` against that base, as
  Markdown, each architecture's headline change judged against the seed spread
  (:func:`significance_section`), with the report's ``summary.md`` appended; a command that fails becomes a visible
  note in the summary instead of a crash.
- :func:`write_step_summary`: append Markdown to ``$GITHUB_STEP_SUMMARY`` (or any file).
- :func:`pull_if_remote`: ``dvc pull`` only when a DVC remote is configured.

Commands are run through an injectable ``runner`` so tests can feed fake outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lungpipe.util import atomic

DEFAULT_BASE = "origin/main"
_NULL_SHA = "0" * 40
_STDERR_TAIL = 1500


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str = ""


Runner = Callable[[Sequence[str]], CommandResult]


def run_command(cmd: Sequence[str], cwd: str | os.PathLike | None = None, timeout: float = 600) -> CommandResult:
    """Run ``cmd`` and capture its output (a missing program is return code 127)."""
    try:
        done = subprocess.run(list(cmd), check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        return CommandResult(127, "", f"{cmd[0]}: not found ({exc})")
    except subprocess.TimeoutExpired:
        return CommandResult(124, "", f"{' '.join(cmd)}: timed out after {timeout:g} s")
    return CommandResult(done.returncode, done.stdout, done.stderr)


# ----------------------------------------------------------------------------------------- base
def resolve_base(env: Mapping[str, str] | None = None) -> str:
    """The revision to diff against in a GitHub Actions run (``env`` defaults to os.environ).

    pull_request → ``origin/<GITHUB_BASE_REF>``; push → the event's ``before`` commit (``HEAD~1``
    for a new branch, whose ``before`` is all zeros); anything else → ``origin/main``.
    """
    env = os.environ if env is None else env
    event = env.get("GITHUB_EVENT_NAME", "")
    if event in ("pull_request", "pull_request_target") and env.get("GITHUB_BASE_REF"):
        return f"origin/{env['GITHUB_BASE_REF']}"
    if event == "push":
        before = _event_field(env.get("GITHUB_EVENT_PATH"), "before")
        if before and before != _NULL_SHA:
            return before
        return "HEAD~1"
    return DEFAULT_BASE


def _event_field(path: str | None, key: str) -> str | None:
    if not path:
        return None
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


# -------------------------------------------------------------------------------------- summary
def diff_section(title: str, cmd: Sequence[str], runner: Runner, empty_note: str) -> str:
    """One Markdown section from a ``dvc … diff --md`` command."""
    result = runner(cmd)
    shown = " ".join(cmd)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-_STDERR_TAIL:] or "(no output)"
        return f"### {title}\n\n> ⚠ `{shown}` failed (exit {result.returncode}):\n\n```\n{tail}\n```\n"
    body = result.stdout.strip()
    return f"### {title}\n\n{body if has_rows(body) else empty_note}\n"


def has_rows(markdown_table: str) -> bool:
    """Whether DVC's ``--md`` output holds a change: with none it prints only the header and the
    separator line (or nothing)."""
    lines = [line for line in markdown_table.splitlines() if line.strip()]
    return len(lines) > 2 or (bool(lines) and not all(line.lstrip().startswith("|") for line in lines))


#: Headline metrics whose change is judged against the seed spread (``<m>_mean``/``<m>_sd`` in
#: the metric files), per task: ICBHI Score, else macro-F1.
SPREAD_METRICS = ("score", "macro_f1")
#: A change of a mean over seeds is significant when it exceeds this many seed sds.
SPREAD_FACTOR = 2.0
SIGNIFICANCE_RULE = (f"A change of the mean over seeds counts as significant only when it exceeds {SPREAD_FACTOR:g}× "
                     "the seed spread (the larger sample sd over seeds of the base and the new run); a smaller change "
                     "is within the training variance. Without a spread (one seed) no change can be judged.")


@dataclass(frozen=True)
class SpreadVerdict:
    path: str
    metric: str
    old_mean: float | None
    new_mean: float | None
    old_sd: float | None
    new_sd: float | None

    @property
    def change(self) -> float | None:
        return None if self.old_mean is None or self.new_mean is None else self.new_mean - self.old_mean

    @property
    def spread(self) -> float | None:
        sds = [sd for sd in (self.old_sd, self.new_sd) if sd is not None]
        return max(sds) if sds else None

    @property
    def verdict(self) -> str:
        if self.change is None:
            return "new" if self.old_mean is None else "removed"
        if self.spread is None:
            return "unknown: no seed spread (one seed)"
        if abs(self.change) > SPREAD_FACTOR * self.spread:
            return f"**significant** (> {SPREAD_FACTOR:g} × sd {self.spread:.3f})"
        return f"within seed spread (≤ {SPREAD_FACTOR:g} × sd {self.spread:.3f})"


def spread_verdicts(diff: Mapping[str, Mapping[str, Mapping[str, float | None]]]) -> list[SpreadVerdict]:
    """Verdicts from ``dvc metrics diff --json --all`` output: {path: {key: {old, new, diff}}}."""
    out = []
    for path, keys in sorted(diff.items()):
        for metric in SPREAD_METRICS:
            mean, sd = keys.get(f"{metric}_mean"), keys.get(f"{metric}_sd")
            if mean is None:
                continue
            sd = sd or {}
            out.append(SpreadVerdict(path, metric, mean.get("old"), mean.get("new"), sd.get("old"), sd.get("new")))
    return out


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def significance_section(base: str, runner: Runner) -> str:
    """Markdown: each architecture's headline mean over seeds, base vs now, judged against the
    seed spread (:data:`SIGNIFICANCE_RULE`)."""
    cmd = ["dvc", "metrics", "diff", "--json", "--all", base]
    result = runner(cmd)
    title = "### Significance against the seed spread"
    try:
        diff = json.loads(result.stdout or "{}") if result.returncode == 0 else None
    except ValueError:
        diff = None
    if not isinstance(diff, Mapping):
        tail = (result.stderr or result.stdout).strip()[-_STDERR_TAIL:] or "(no output)"
        return f"{title}\n\n> ⚠ `{' '.join(cmd)}` gave no JSON (exit {result.returncode}):\n\n```\n{tail}\n```\n"
    verdicts = spread_verdicts(diff)
    if not verdicts:
        return f"{title}\n\nNo metric file with a mean over seeds (`score_mean`/`macro_f1_mean`).\n"
    rows = ["| metrics file | metric | base mean ± sd | new mean ± sd | change | verdict |", "|---|---|---|---|---|---|"]
    for v in verdicts:
        rows.append(f"| {v.path} | {v.metric} | {_num(v.old_mean)} ± {_num(v.old_sd)} | {_num(v.new_mean)} ± "
                    f"{_num(v.new_sd)} | {_num(v.change)} | {v.verdict} |")
    return f"{title}\n\n" + "\n".join(rows) + f"\n\n{SIGNIFICANCE_RULE}\n"


def build_summary(base: str, *, runner: Runner | None = None, report_md: str | os.PathLike | None = None,
                  title: str = "lungpipe pipeline") -> str:
    """Markdown: metric changes against ``base`` (judged against the seed spread) and parameter
    changes, then the report's summary."""
    runner = runner or run_command
    parts = [
        f"## {title}: changes against `{base}`\n",
        significance_section(base, runner),
        diff_section("Metrics (dvc metrics diff)", ["dvc", "metrics", "diff", "--md", base], runner,
                     "No metric changed."),
        diff_section("Parameters (dvc params diff)", ["dvc", "params", "diff", "--md", base], runner,
                     "No parameter changed."),
    ]
    if report_md is not None:
        path = Path(report_md)
        if path.is_file():
            parts.append(path.read_text(encoding="utf-8").strip() + "\n")
        else:
            parts.append(f"> ⚠ no report summary at `{path}` (did `lungpipe report` run?)\n")
    return "\n".join(parts)


def write_step_summary(text: str, path: str | os.PathLike) -> Path:
    """Append ``text`` to ``path`` (GitHub's step summary file collects every step's Markdown)."""
    path = Path(path)
    before = path.read_text(encoding="utf-8") if path.is_file() else ""
    separator = "\n" if before and not before.endswith("\n") else ""
    return atomic.write_text(path, before + separator + text)


# ----------------------------------------------------------------------------------------- pull
def configured_remotes(runner: Runner | None = None) -> list[str]:
    """Names of the DVC remotes of the repository (``dvc remote list``)."""
    runner = runner or run_command
    result = runner(["dvc", "remote", "list"])
    if result.returncode != 0:
        raise RuntimeError(f"dvc remote list failed (exit {result.returncode}): {result.stderr.strip()}")
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def pull_if_remote(runner: Runner | None = None) -> CommandResult | None:
    """``dvc pull --allow-missing`` when a remote is configured; None (nothing run) otherwise, so a
    fresh clone without a remote simply reproduces the pipeline from scratch."""
    runner = runner or run_command
    if not configured_remotes(runner):
        return None
    return runner(["dvc", "pull", "--allow-missing"])
