"""`orch demo`: one task through the whole pipeline on a built-in example, no LLM needed.

It makes a home (a fresh temporary directory unless `--home` was given), a
small git repository with a real test suite, an `orch.yaml` whose agents are
the demo agents (`python -m orch.demo.agent ROLE`: deterministic programs
that write the artifacts and make a real commit), adds one task and ticks in
this process until the task is done, held or a time limit passes. Every tick
is the real `run_tick`: the agents run detached under `orch supervise`, the
test-runner and the merge run inline, exactly as under cron.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orch import gitops
from orch.config import CONFIG_FILE, load_settings, resolve_home
from orch.engine.commands import actions
from orch.engine.commands.init import init_home, open_state
from orch.engine.tick import run_tick
from orch.errors import Interrupted, RefusedError, UsageError
from orch.pipeline import load_pipeline
from orch.state import events, jobs, tasks
from orch.timeutil import parse_iso

if TYPE_CHECKING:
    from orch.config import Settings
    from orch.machine import Pipeline
    from orch.state.db import Database
    from orch.state.records import Event, Task

DEMO_REPO = "demo"
REPO_DIR = "demo-repo"
TIME_LIMIT_S = 90.0
POLL_S = 0.2  # the pause between ticks while an agent works
ROLES = ("analyst", "developer", "reviewer", "tester")
TASK_TITLE = "Add a greeting function"
TASK_BODY = ("Add `greet(name)` to a new module `greeting.py`, returning `Hello, NAME!`, "
             "with a test.")
GIT_IDENTITY = (("user.name", "orch demo"), ("user.email", "demo@orch.invalid"))

REPO_FILES: dict[str, str] = {
    "README.md": (
        "# orch demo project\n\n"
        "A tiny Python project made by `orch demo`. The demo agents\n"
        "(`python -m orch.demo.agent ROLE`) stand in for AI coding agents: they\n"
        "write the artifacts each stage asks for and make a real commit.\n"
    ),
    ".gitignore": "__pycache__/\n.pytest_cache/\n",
    "pyproject.toml": (
        "[tool.pytest.ini_options]\n"
        'testpaths = ["tests"]\n'
        'pythonpath = ["."]\n'
    ),
    "calc.py": (
        '"""Arithmetic for the orch demo project."""\n\n\n'
        "def add(a: int, b: int) -> int:\n"
        "    return a + b\n"
    ),
    "tests/test_calc.py": (
        '"""The demo project\'s tests (pytest runs them; so does `python -m unittest`)."""\n\n'
        "import unittest\n\n"
        "from calc import add\n\n\n"
        "class AddTest(unittest.TestCase):\n"
        "    def test_small_numbers(self):\n"
        "        self.assertEqual(add(2, 3), 5)\n\n"
        "    def test_negative_numbers(self):\n"
        "        self.assertEqual(add(-1, 1), 0)\n"
    ),
}


@dataclass(frozen=True)
class DemoStep:
    """One line of progress: an event of the demo task, or a note of the demo itself."""

    elapsed_s: float
    kind: str
    detail: str
    job_id: int | None = None


@dataclass
class DemoResult:
    home: Path
    repo_path: Path
    task_id: int
    stage: str
    state: str
    elapsed_s: float
    temporary: bool
    removed: bool = False  # the temporary home was deleted at the end
    timed_out: bool = False
    merged_commit: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.stage == "done" and self.merged_commit is not None

    @property
    def exit_status(self) -> int:
        return 0 if self.done else 1


Progress = Callable[[DemoStep], None]


# --- the home and the repository ----------------------------------------------------


def demo_home(home_option: str | None) -> tuple[Path, bool]:
    """(home, temporary): a new temporary directory, or the --home given (new or empty)."""
    if home_option is None:
        return Path(tempfile.mkdtemp(prefix="orch-demo-")), True

    home = resolve_home(home_option)
    if home.exists() and not home.is_dir():
        raise UsageError(f"--home {home}: not a directory")
    if home.is_dir() and any(home.iterdir()):
        raise UsageError(f"--home {home}: orch demo makes a new home and needs a new or empty "
                         "directory (leave --home out to use a temporary one)")
    return home, False


def demo_test_command() -> list[str]:
    """pytest in this Python when it has it; otherwise unittest (orch needs no pytest)."""

    if importlib.util.find_spec("pytest") is not None:
        return [sys.executable, "-m", "pytest", "-q"]
    return [sys.executable, "-m", "unittest", "discover", "-s", "tests"]


def make_repo(path: Path) -> str:
    """A git repository with the demo project committed on `main`; returns the commit."""

    try:
        return gitops.commit_new_repo(path, REPO_FILES,
                                      "The demo project: calc.py and its tests", GIT_IDENTITY)
    except gitops.GitError as exc:
        raise RefusedError(f"orch demo needs git: {exc}") from exc


def demo_config(repo: Path, tests: list[str]) -> str:
    """orch.yaml of the demo: the demo agents, short timeouts, fast heartbeats."""
    lines = [
        "# Written by `orch demo`: the demo agents stand in for AI coding agents.",
        "max_concurrency: 1",
        "heartbeat_interval_s: 1",
        "heartbeat_timeout_s: 10",
        "retry_backoff_s: 0",
        "cancel_grace_s: 2",
        "# the demo drives its own ticks, one after another in this process",
        "flags: {kick_enabled: false}",
        "agents:",
    ]
    for role in ROLES:
        command = json.dumps([sys.executable, "-m", "orch.demo.agent", role])
        lines.append(f"  {role}: {{command: {command}, output: claude-json, timeout_s: 60}}")
    lines += [
        "repos:",
        f"  {DEMO_REPO}:",
        f"    path: {json.dumps(str(repo))}",
        "    default_branch: main",
        f"    test: {{command: {json.dumps(tests)}, timeout_s: 60}}",
        "pipeline: default",
    ]
    return "\n".join(lines) + "\n"


# --- the run ---------------------------------------------------------------------------


def run_demo(home_option: str | None, *, keep: bool, progress: Progress,
             time_limit_s: float = TIME_LIMIT_S) -> DemoResult:
    """Make the demo home, add the task, tick it to done; see the module docstring.

    A temporary home is removed at the end when the task is done and `keep`
    is false; a failed demo keeps its home to look into.
    """
    home, temporary = demo_home(home_option)
    clock = time.monotonic()
    try:
        result = _run(home, temporary, clock, progress, time_limit_s)
    except KeyboardInterrupt:
        raise Interrupted(f"the demo stopped; its task, if it had one, was cancelled so that "
                          f"no demo agent keeps running; its home stays for a look: {home}"
                          ) from None
    except BaseException:
        if temporary:
            progress(DemoStep(time.monotonic() - clock, "demo",
                              f"stopped; the demo home stays for a look: {home}"))
        raise
    if result.done and temporary and not keep:
        shutil.rmtree(home, ignore_errors=True)
        result.removed = True
    return result


def _run(home: Path, temporary: bool, clock: float, progress: Progress,
         time_limit_s: float) -> DemoResult:
    from orch.artifacts import write_atomic
    from orch.engine.commands.tasks import NewTask, add_task

    def note(detail: str) -> None:
        progress(DemoStep(time.monotonic() - clock, "demo", detail))

    home.mkdir(parents=True, exist_ok=True)
    repo = home / REPO_DIR
    tests = demo_test_command()
    commit = make_repo(repo)
    write_atomic(home / CONFIG_FILE, demo_config(repo, tests))
    init_home(home, [])
    settings = load_settings(home)
    pipeline = load_pipeline(settings)
    note(f"home {home}{' (temporary)' if temporary else ''}")
    runner = " ".join([Path(tests[0]).name, *tests[1:]])
    note(f"repo {repo}: main at {commit[:12]}, tests run by `{runner}`")
    db = open_state(settings)
    try:
        task = add_task(settings, db, NewTask(DEMO_REPO, TASK_TITLE, TASK_BODY),
                        pipeline.first.name)
        note(f"task {task.id} added: {TASK_TITLE!r}; ticking until it is done")
        return _tick_to_the_end(settings, pipeline, db, task.id, clock, progress,
                                time_limit_s, temporary)
    finally:
        db.close()


def _tick_to_the_end(settings: Settings, pipeline: Pipeline, db: Database, task_id: int,
                     clock: float,
                     progress: Progress, time_limit_s: float, temporary: bool) -> DemoResult:

    deadline = clock + time_limit_s
    seen = 0
    try:
        while True:
            report = run_tick(settings, pipeline, db, max_claims=1)
            for event in events.for_task(db, task_id):
                if event.id > seen:
                    seen = event.id
                    progress(_step(event, clock))
            task = tasks.get(db, task_id)
            assert task is not None
            if task.state in ("closed", "held", "needs_input") or \
                    time.monotonic() >= deadline:
                break
            job = jobs.open_job(db, task_id)
            if report.idle or (job is not None and job.status == "running"):
                time.sleep(POLL_S)
    except BaseException:
        _stop(settings, db, task_id)
        raise
    return _result(settings, db, task, clock, temporary, progress)


def _step(event: Event, clock: float) -> DemoStep:

    elapsed = parse_iso(event.at).timestamp() - (time.time() - (time.monotonic() - clock))
    return DemoStep(max(0.0, elapsed), event.kind, event.detail or "", event.job_id)


def _stop(settings: Settings, db: Database, task_id: int) -> None:
    """Cancel the demo task if it is still open, so no agent keeps running."""

    task = tasks.get(db, task_id)
    if task is not None and not task.closed:
        actions.cancel(settings, db, task_id)


def _result(settings: Settings, db: Database, task: Task, clock: float,
            temporary: bool, progress: Progress) -> DemoResult:
    from orch.engine.commands.tasks import task_detail

    repo = settings.repo(DEMO_REPO)
    timed_out = task.state not in ("closed", "held", "needs_input")
    if timed_out:
        progress(DemoStep(time.monotonic() - clock, "demo", "time limit reached; the task is "
                          "cancelled so that nothing keeps running"))
        _stop(settings, db, task.id)
    merged = None
    if task.stage == "done":
        merged = gitops.head_commit(repo.path, f"refs/heads/{repo.default_branch}")
    final = task_detail(settings, db, task.id)
    return DemoResult(home=settings.home, repo_path=repo.path, task_id=task.id,
                      stage=final["task"]["stage"], state=final["task"]["state"],
                      elapsed_s=time.monotonic() - clock, temporary=temporary,
                      timed_out=timed_out, merged_commit=merged, detail=final)
