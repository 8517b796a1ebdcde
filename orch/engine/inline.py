"""Inline runners: test-runner, staging-runner, merge and command, run inside the tick.

The job is owned by this tick (its pid, start time, boot id and host were
recorded by the claim). A heartbeat thread keeps `heartbeat_at` and
`heartbeat_mono` fresh while the runner works, the command's process group
goes on the run (`runs.pgid`) as soon as it starts, and the gate is applied
in the same tick once the run ends.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from orch.engine.common import artifacts_dir, monotonic, orch_vars, run_env, worktree_dir
from orch.engine.moves import Engine
from orch.state import jobs as jobs_state
from orch.timeutil import now_iso


class Heartbeat:
    """Heartbeat a running job from a thread; notices when the run lost the job."""

    def __init__(self, engine: Engine, job_id: int, run_id: int) -> None:
        self.engine = engine
        self.job_id = job_id
        self.run_id = run_id
        self.group: tuple[int, int] | None = None  # (pgid, start ticks) of the run's command
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def beat(self) -> None:
        if not jobs_state.heartbeat(self.engine.db, self.job_id, self.run_id, at=now_iso(),
                                    mono=monotonic()):
            self.lost.set()

    def _loop(self) -> None:
        interval = self.engine.settings.heartbeat_interval_s
        while not self._stop.wait(interval):
            try:
                self.beat()
            except Exception:  # a locked database: the next beat tries again
                continue
            if self.lost.is_set():
                self._stop_lost_run()
                return

    def _stop_lost_run(self) -> None:
        """The job was cancelled or reaped under us: stop our command (its group) now."""
        if self.group is not None:
            from orch import procs

            procs.kill_group(self.group[0], self.group[1], self.engine.settings.cancel_grace_s)


class RunLost(Exception):
    """The run no longer owns its job (reaped or cancelled meanwhile)."""


def still_ours(engine: Engine, job_id: int, run_id: int) -> bool:
    """A heartbeat fenced by run_id: True while this run still owns the running job."""
    return jobs_state.heartbeat(engine.db, job_id, run_id, at=now_iso(), mono=monotonic())


def run_inline(engine: Engine, task: dict[str, Any], job: dict[str, Any],
               run: dict[str, Any]) -> None:
    """Run one inline job to its end, record the run, and apply its gate now."""
    from orch.engine.advance import judge_job

    env = run_env(engine.settings, orch_vars(engine.settings, task, job, run["id"]))
    log = Path(run["log_path"])

    beat = Heartbeat(engine, job["id"], run["id"])

    def on_start(pgid: int, started: int) -> None:
        beat.group = (pgid, started)
        jobs_state.set_run_group(engine.db, run["id"], pgid, started)
        # Recorded first, checked second: a reaper or `orch cancel` that came before
        # the group was recorded could not kill it, so it is ours to kill now
        # (run_in_group kills the group when this raises).
        if not still_ours(engine, job["id"], run["id"]):
            raise RunLost(f"run {run['id']} lost job {job['id']} as it started")

    if not still_ours(engine, job["id"], run["id"]):
        return  # reaped or cancelled since the claim: another run (or nobody) does the work
    try:
        with beat:
            exit_code, outcome, error = _dispatch(engine, task, job, run, env, log, on_start)
    except RunLost:
        return
    with engine.db.transaction():
        finished = jobs_state.finish_run(engine.db, job["id"], run["id"], exit_code=exit_code,
                                         outcome=outcome, error=error)
    if finished:
        fresh = jobs_state.get(engine.db, job["id"])
        if fresh is not None:
            judge_job(engine, fresh)


def _dispatch(engine: Engine, task: dict[str, Any], job: dict[str, Any], run: dict[str, Any],
              env: dict[str, str], log: Path, on_start: Any
              ) -> tuple[int | None, str, str | None]:
    runner = job["runner"]
    if runner == "test-runner":
        return _test(engine, task, env, log, on_start)
    if runner == "staging-runner":
        return _staging(engine, task, job, env, log, on_start)
    if runner == "merge":
        return _merge(engine, task, log)
    if runner == "command":
        return _command(engine, task, job, run, env, log, on_start)
    return None, "failed", f"runner {runner!r} cannot run inline"


def _test(engine: Engine, task: dict[str, Any], env: dict[str, str], log: Path,
          on_start: Any) -> tuple[int | None, str, str | None]:
    from orch.artifacts import TEST_REPORT_FILE
    from orch.engine.testrun import runner_settings
    from orch.runners.test_runner import run_tests

    settings = runner_settings(engine.settings.repo(task["repo"]))  # the same as orch test-run
    outcome = run_tests(worktree_dir(engine.settings, task["repo"], task["id"]), settings,
                        report_path=artifacts_dir(engine.settings, task["id"]) /
                        TEST_REPORT_FILE, env=env, log_path=log, on_start=on_start,
                        grace_s=engine.settings.cancel_grace_s)
    return outcome.meta.get("exit_code"), "succeeded", _reason(outcome.meta)


def _staging(engine: Engine, task: dict[str, Any], job: dict[str, Any], env: dict[str, str],
             log: Path, on_start: Any) -> tuple[int | None, str, str | None]:
    from orch import gitops
    from orch.artifacts import STAGING_REPORT_FILE
    from orch.runners.staging import StagingSettings, run_staging

    config = engine.settings.repo(task["repo"]).staging
    if config is None:
        return None, "failed", "repo has no staging section"
    worktree = worktree_dir(engine.settings, task["repo"], task["id"])
    values = {"commit": gitops.head_commit(worktree), "branch": task["branch"] or "",
              "task_id": str(task["id"])}
    attempt = len(jobs_state.runs_for_job(engine.db, job["id"]))
    result = run_staging(
        StagingSettings(container=config.container, command=config.command, host=config.host,
                        timeout_s=config.timeout_s, transient_retries=config.transient_retries),
        exec_host_side=engine.settings.flags.staging_runner_exec_host_side, values=values,
        cwd=worktree, attempt=attempt,
        report_path=artifacts_dir(engine.settings, task["id"]) / STAGING_REPORT_FILE,
        env=env, log_path=log, on_start=on_start, grace_s=engine.settings.cancel_grace_s)
    return result.exit_code, "succeeded", f"staging {result.outcome}"


def _merge(engine: Engine, task: dict[str, Any], log: Path
           ) -> tuple[int | None, str, str | None]:
    from orch.artifacts import MERGE_REPORT_FILE
    from orch.engine.common import repo_lock
    from orch.runners.merge import run_merge

    repo = engine.settings.repo(task["repo"])
    with repo_lock(engine.settings, task["repo"]):  # it prunes and may re-add the worktree
        result = run_merge(repo.path, worktree_dir(engine.settings, task["repo"], task["id"]),
                           task["branch"], repo.default_branch, push=repo.push,
                           report_path=artifacts_dir(engine.settings, task["id"]) /
                           MERGE_REPORT_FILE, log_path=log)
    return 0, "succeeded", f"merge {result.result}: {result.reason}"[:500]


def _command(engine: Engine, task: dict[str, Any], job: dict[str, Any], run: dict[str, Any],
             env: dict[str, str], log: Path, on_start: Any
             ) -> tuple[int | None, str, str | None]:
    from orch import procs
    from orch.agents import render_argv

    stage = engine.pipeline.get(job["stage"])
    assert stage is not None
    worktree = worktree_dir(engine.settings, task["repo"], task["id"])
    values = {"prompt": "", "prompt_file": "", "task_id": str(task["id"]),
              "stage": job["stage"], "round": str(task["round"]),
              "artifacts": str(artifacts_dir(engine.settings, task["id"])),
              "worktree": str(worktree)}
    result = procs.run_in_group(render_argv(stage.command, values), cwd=worktree, env=env,
                                timeout_s=_command_timeout(engine), log_path=log,
                                on_start=on_start, grace_s=engine.settings.cancel_grace_s)
    if result.start_error:
        return None, "failed", result.start_error
    if result.timed_out:
        return result.exit_code, "timeout", "command timed out"
    outcome = "succeeded" if result.exit_code == 0 else "failed"
    return result.exit_code, outcome, None if outcome == "succeeded" else \
        f"exit {result.exit_code}"


def _command_timeout(engine: Engine) -> float:
    return 3600.0


def _reason(meta: dict[str, Any]) -> str | None:
    reason = meta.get("reason")
    return f"{meta.get('result')}: {reason}" if reason else None
