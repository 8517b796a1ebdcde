"""The inline runners as the tick runs them: each builds its inputs from the task and
calls the runner module (`orch.runners.*`), returning (exit code, run outcome, error)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orch import gitops, procs
from orch.engine.context import Engine
from orch.model import RunOutcome
from orch.state import runs
from orch.state.records import Job, Run, Task

RunResult = tuple[int | None, str, str | None]
COMMAND_TIMEOUT_S = 3600.0


# Called with the process group and its start time once the run's command started.
OnStart = Callable[[int, int], None]


def dispatch(engine: Engine, task: Task, job: Job, run: Run, on_start: OnStart) -> RunResult:
    """Run the job's runner to its end."""
    from orch.agents import run_environment, run_vars
    from orch.procs.marks import marked_env

    mark = engine.home.run_mark(run.id)  # every process of the run carries it
    env = marked_env(run_environment(engine.settings, run_vars(
        engine.home, task_id=task.id, repo=task.repo, stage=job.stage, round_no=task.round,
        job_id=job.id, run_id=run.id)), mark)
    log = Path(run.log_path or engine.home.log(job.id, run.id))
    if job.runner == "test-runner":
        return _test(engine, task, env, log, on_start, mark)
    if job.runner == "staging-runner":
        return _staging(engine, task, job, env, log, on_start, mark)
    if job.runner == "merge":
        return _merge(engine, task, job, run, env, log, on_start, mark)
    if job.runner == "command":
        return _command(engine, task, job, env, log, on_start, mark)
    return None, RunOutcome.FAILED, f"runner {job.runner!r} cannot run inline"


def _test(engine: Engine, task: Task, env: dict[str, str], log: Path,
          on_start: OnStart, mark: str) -> RunResult:
    from orch.artifacts import TEST_REPORT_FILE
    from orch.engine.commands.testrun import repo_test_env, runner_settings
    from orch.runners.test_runner import run_tests

    repo, worktree = engine.settings.repo(task.repo), engine.home.worktree(task.repo, task.id)
    settings = runner_settings(repo, worktree)  # the same as orch test-run
    env = {**env, **repo_test_env(repo, worktree)}
    outcome = run_tests(worktree, settings,
                        report_path=engine.home.artifacts(task.id) / TEST_REPORT_FILE,
                        env=env, log_path=log, on_start=on_start,
                        grace_s=engine.settings.cancel_grace_s, mark=mark)
    return outcome.meta.get("exit_code"), RunOutcome.SUCCEEDED, _reason(outcome.meta)


def _staging(engine: Engine, task: Task, job: Job, env: dict[str, str], log: Path,
             on_start: OnStart, mark: str) -> RunResult:
    from orch.artifacts import STAGING_REPORT_FILE
    from orch.runners.staging import StagingSettings, run_staging

    config = engine.settings.repo(task.repo).staging
    if config is None:
        return None, RunOutcome.FAILED, "repo has no staging section"
    worktree = engine.home.worktree(task.repo, task.id)
    values = {"commit": gitops.head_commit(worktree), "branch": task.branch or "",
              "task_id": str(task.id)}
    result = run_staging(
        StagingSettings(container=config.container, command=config.command, host=config.host,
                        timeout_s=config.timeout_s, transient_retries=config.transient_retries,
                        ssh_options=config.ssh_options),
        exec_host_side=engine.settings.flags.staging_runner_exec_host_side, values=values,
        cwd=worktree, attempt=runs.count_for_job(engine.db, job.id),
        report_path=engine.home.artifacts(task.id) / STAGING_REPORT_FILE,
        env=env, log_path=log, on_start=on_start, grace_s=engine.settings.cancel_grace_s,
        mark=mark)
    return result.exit_code, RunOutcome.SUCCEEDED, f"staging {result.outcome}"


def _merge(engine: Engine, task: Task, job: Job, run: Run, env: dict[str, str], log: Path,
           on_start: OnStart, mark: str) -> RunResult:
    """The merge in a child process (orch.engine.run.merge_run): in the run's recorded
    group and under its mark, fenced by the repo lock and the job's ownership."""
    from orch.artifacts import MERGE_REPORT_FILE
    from orch.engine.run.merge_run import MergePlan

    repo = engine.settings.repo(task.repo)
    plan = MergePlan(
        job_id=job.id, run_id=run.id, task_id=task.id, state=engine.settings.state_location,
        home=str(engine.home.root), repo=task.repo, repo_path=str(repo.path),
        worktree=str(engine.home.worktree(task.repo, task.id)), branch=task.branch or "",
        default_branch=repo.default_branch, push=repo.push,
        report=str(engine.home.artifacts(task.id) / MERGE_REPORT_FILE),
        # several hosts merge into the repo: start from the remote's default branch
        fetch_first=engine.db.multi_host and repo.push)
    result = procs.run_in_group(
        [sys.executable, "-m", "orch.engine.run.merge_run"], cwd=engine.home.root, env=env,
        timeout_s=COMMAND_TIMEOUT_S, log_path=log, stdin_text=plan.to_json(),
        on_start=on_start, grace_s=engine.settings.cancel_grace_s, mark=mark)
    return merge_result(result)


def merge_result(result: procs.GroupRun) -> RunResult:
    """(exit code, run outcome, error) of the merge child from what it printed."""
    from orch.engine.run.merge_run import EXIT_BUSY, EXIT_LOST, RESULT_PREFIX

    if result.start_error:
        return None, RunOutcome.FAILED, f"cannot start the merge: {result.start_error}"
    if result.timed_out:
        return result.exit_code, RunOutcome.TIMEOUT, "the merge timed out"
    if result.exit_code == 0:
        line = result.output_tail.rpartition(RESULT_PREFIX)[2].partition("\n")[0]
        try:
            said = json.loads(line)
            return 0, RunOutcome.SUCCEEDED, f"merge {said['result']}: {said['reason']}"[:500]
        except (ValueError, KeyError, TypeError):
            return 0, RunOutcome.FAILED, "the merge printed no result"
    if result.exit_code == EXIT_LOST:
        return EXIT_LOST, RunOutcome.FAILED, "the merge run lost its job (cancelled or reaped)"
    if result.exit_code == EXIT_BUSY:
        return EXIT_BUSY, RunOutcome.FAILED, "another merge of this task was still running"
    last = result.stderr_tail.strip().splitlines()[-1:] or [""]
    return result.exit_code, RunOutcome.FAILED, f"merge failed (exit {result.exit_code}) " \
        f"{last[0]}".strip()[:500]


def _command(engine: Engine, task: Task, job: Job, env: dict[str, str], log: Path,
             on_start: OnStart, mark: str) -> RunResult:
    from orch.agents import render_argv

    stage = engine.pipeline.get(job.stage)
    assert stage is not None
    worktree = engine.home.worktree(task.repo, task.id)
    values = {"prompt": "", "prompt_file": "", "task_id": str(task.id), "stage": job.stage,
              "round": str(task.round), "artifacts": str(engine.home.artifacts(task.id)),
              "worktree": str(worktree)}
    result = procs.run_in_group(render_argv(stage.command, values), cwd=worktree, env=env,
                                timeout_s=COMMAND_TIMEOUT_S, log_path=log, on_start=on_start,
                                grace_s=engine.settings.cancel_grace_s, mark=mark)
    if result.start_error:
        return None, RunOutcome.FAILED, result.start_error
    if result.timed_out:
        return result.exit_code, RunOutcome.TIMEOUT, "command timed out"
    if result.exit_code == 0:
        return 0, RunOutcome.SUCCEEDED, None
    return result.exit_code, RunOutcome.FAILED, f"exit {result.exit_code}"


def _reason(meta: dict[str, Any]) -> str | None:
    reason = meta.get("reason")
    return f"{meta.get('result')}: {reason}" if reason else None
