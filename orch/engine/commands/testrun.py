"""`orch test-run`: the pipeline's test-runner, standalone, for CI (SPEC section 8).

The same `orch.runners.test_runner.run_tests` the tick runs for the testing
stage, with the same settings whenever orch can know them, so CI and the
pipeline give the same verdict for the same tree:

- `--task ID`: the task's repo `test` section, run in the task's worktree
  (unless PATH is given), the report in `tasks/<id>/13-test-report.md`;
- a home whose `orch.yaml` names a repo at PATH (or PATH is one of the home's
  task worktrees): that repo's `test` section;
- otherwise the command `orch init --repo` would write for that project
  (`orch.testenv.detect`: its uv lock, virtualenv, Poetry, ...), and no home
  is needed: without `--task` the database is never opened (nor created).

`{worktree}` in the command and in the `env:` values becomes the tested tree
(the task's worktree, or PATH).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch import testenv
from orch.config import RepoConfig, Settings
from orch.errors import NotFoundError, UsageError
from orch.runners.test_runner import TestOutcome, TestSettings
from orch.state import tasks
from orch.state.records import Task


@dataclass(frozen=True)
class TestRunRequest:
    """What `orch test-run` was asked: PATH and the options, None where not given."""

    __test__ = False  # not a pytest test class

    path: Path | None = None
    target: str | None = None
    timeout_s: float | None = None
    report: Path | None = None
    task_id: int | None = None


@dataclass(frozen=True)
class TestRunPlan:
    """The resolved run: where, with which settings, and why those settings."""

    __test__ = False  # not a pytest test class

    workdir: Path
    settings: TestSettings
    source: str  # "task 3 (repo app)", "repo app in /home/orch/orch.yaml", "detected: ..."
    report: Path | None
    use_home_env: bool  # the home's env_file applies, as it does in the pipeline
    env: Mapping[str, str] = field(default_factory=dict)  # the `test.env`, {worktree} filled


@dataclass(frozen=True)
class TestRunResult:
    """A finished test run: the plan it followed and the runner's outcome."""

    __test__ = False  # not a pytest test class

    plan: TestRunPlan
    outcome: TestOutcome

    @property
    def exit_status(self) -> int:
        """0 PASS, 1 FAIL, 75 DEFER."""
        return self.outcome.exit_status

    def as_dict(self) -> dict[str, Any]:
        """`orch test-run --json`: the report's front matter as one object."""
        return dict(self.outcome.meta)


def runner_settings(repo: RepoConfig | None, worktree: Path) -> TestSettings:
    """The repo's `test` section as runner settings for WORKTREE (the defaults without a
    repo); `{worktree}` in the command becomes WORKTREE."""
    if repo is None:
        return TestSettings()
    config = repo.test
    return TestSettings(command=testenv.render(config.command, worktree), target=config.target,
                        timeout_s=config.timeout_s, smoke=tuple(config.smoke))


def repo_test_env(repo: RepoConfig, worktree: Path) -> dict[str, str]:
    """The repo's `test.env` with `{worktree}` filled: added to the tests' environment."""
    return dict(testenv.render(repo.test.env, worktree))


def plan_test_run(settings: Settings, request: TestRunRequest) -> TestRunPlan:
    """Resolve the directory, the settings and the report path of a test run."""
    if request.task_id is not None:
        plan = _plan_for_task(settings, request)
    else:
        plan = _plan_for_path(settings, request)
    return _with_overrides(plan, request)


def _plan_for_task(settings: Settings, request: TestRunRequest) -> TestRunPlan:
    from orch.artifacts import TEST_REPORT_FILE

    assert request.task_id is not None
    task = _find_task(settings, request.task_id)
    repo = settings.repo(task.repo)
    worktree = settings.paths.worktree(repo.name, task.id)
    if request.path is None and not worktree.is_dir():
        raise UsageError(f"task {task.id} has no worktree at {worktree} (it has not "
                         "started yet, or orch gc removed it); give a PATH")
    workdir = _existing_dir(request.path) if request.path is not None else worktree
    report = request.report or settings.paths.artifacts(task.id) / TEST_REPORT_FILE
    return TestRunPlan(workdir, runner_settings(repo, workdir),
                       f"task {task.id} (repo {repo.name})", report, use_home_env=True,
                       env=repo_test_env(repo, workdir))


def _find_task(settings: Settings, task_id: int) -> Task:
    """The task row; exit 3 when the home has no database or no such task."""

    if settings.state is None and not settings.db_path.exists():
        raise NotFoundError(f"no such task: {task_id} (no orch database at "
                            f"{settings.db_path}; is --home right?)")
    from orch.engine.commands.init import open_state

    db = open_state(settings, create=False)
    try:
        task = tasks.get(db, task_id)
    finally:
        db.close()
    if task is None:
        raise NotFoundError(f"no such task: {task_id}")
    return task


def _plan_for_path(settings: Settings, request: TestRunRequest) -> TestRunPlan:
    workdir = _existing_dir(request.path if request.path is not None else Path.cwd())
    repo = repo_at(settings, workdir)
    if repo is None:
        found = testenv.detect(workdir, settings.environ)
        return TestRunPlan(workdir, TestSettings(command=found.command), found.describe(),
                           request.report, use_home_env=False,
                           env=testenv.render(found.env, workdir))
    return TestRunPlan(workdir, runner_settings(repo, workdir),
                       f"repo {repo.name} in {settings.config_file}", request.report,
                       use_home_env=True, env=repo_test_env(repo, workdir))


def _existing_dir(path: Path) -> Path:
    """PATH made absolute; a usage error (exit 2) unless it is a directory."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise UsageError(f"{path}: no such directory")
    if not resolved.is_dir():
        raise UsageError(f"{path}: not a directory")
    return resolved


def repo_at(settings: Settings, path: Path) -> RepoConfig | None:
    """The configured repo whose path is PATH, or whose task worktree PATH is."""
    resolved = path.resolve()
    for repo in settings.repos.values():
        if repo.path.expanduser().resolve() == resolved:
            return repo
    worktrees = (settings.home / "worktrees").resolve()
    if resolved.parent.parent == worktrees and resolved.name.isdigit():
        return settings.repos.get(resolved.parent.name)
    return None


def _with_overrides(plan: TestRunPlan, request: TestRunRequest) -> TestRunPlan:
    """--target and --timeout replace the section's values ('' clears the target)."""
    settings = plan.settings
    if request.target is not None:
        settings = TestSettings(settings.command, request.target or None, settings.timeout_s,
                                settings.smoke)
    if request.timeout_s is not None:
        if request.timeout_s <= 0:
            raise UsageError(f"--timeout {request.timeout_s:g}: must be > 0 seconds")
        settings = TestSettings(settings.command, settings.target, request.timeout_s,
                                settings.smoke)
    if plan.report is not None and plan.report.is_dir():
        raise UsageError(f"--report {plan.report}: is a directory, expected a file")
    return TestRunPlan(plan.workdir, settings, plan.source, plan.report, plan.use_home_env,
                       plan.env)


def run_test_run(settings: Settings, request: TestRunRequest,
                 echo: Callable[[bytes], None] | None = None) -> TestRunResult:
    """Plan the run, run the tests (then the smoke commands), write the report if asked.

    `echo` gets the output as it comes. Ctrl-C (KeyboardInterrupt) ends the tests'
    whole tree and propagates: no report is written.
    """
    from orch.agents import run_environment
    from orch.procs.marks import adhoc_mark
    from orch.runners.test_runner import run_tests

    plan = plan_test_run(settings, request)
    if plan.use_home_env:
        env: dict[str, str] | None = run_environment(settings, {}, plan.env)
    else:
        env = {**settings.environ, **plan.env} if plan.env else None
    # a mark of its own (it is no run of a home): nothing the tests start outlives them
    outcome = run_tests(plan.workdir, plan.settings, report_path=None, env=env,
                        grace_s=settings.cancel_grace_s, mark=adhoc_mark(), echo=echo)
    if plan.report is not None:
        _write_report(plan.report, outcome)
    return TestRunResult(plan, outcome)


def _write_report(path: Path, outcome: TestOutcome) -> None:
    from orch.artifacts import write_document

    try:
        write_document(path, outcome.meta, outcome.body)
    except OSError as exc:
        raise UsageError(f"--report {path}: cannot write: {exc.strerror or exc}") from exc
