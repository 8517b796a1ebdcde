"""The claim phase: claim a job, then start it (agent) or run it inline (everything else).

Order of side effects: the claim commits first (the job is ours, recorded
with this tick's identity), then the worktree is made and the process
started. An agent is started detached under `orch supervise`, which takes
the job over; an inline runner runs here, heartbeating with the tick's
identity and recording its process group on the run, so a tick killed in
the middle leaves a job the reaper finds dead.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from orch.engine.common import (
    Identity,
    artifacts_dir,
    logs_dir,
    monotonic,
    repo_lock,
    utc_day_start,
    worktree_dir,
)
from orch.engine.moves import Engine, hold
from orch.state import events, tasks
from orch.state import jobs as jobs_state
from orch.state.jobs import Owner
from orch.timeutil import now_iso

SUPERVISOR_REGISTER_WAIT_S = 10.0


def claim_and_start(engine: Engine, here: Identity, max_claims: int,
                    unavailable: dict[str, str], errors: list[dict[str, Any]]
                    ) -> list[dict[str, Any]]:
    """Claim up to max_claims jobs; start or run each. Returns the claimed entries."""
    from orch.engine.moves import record_error

    claimed = []
    tick_started = engine.started_at
    logs = logs_dir(engine.settings)
    logs.mkdir(parents=True, exist_ok=True)
    for _ in range(max_claims):
        if not jobs_state.queued_count(engine.db):
            break  # nothing queued: no write lock taken
        owner = Owner(here.pid, here.started, here.host, here.boot_id, monotonic())
        got = jobs_state.claim_next(engine.db, now=now_iso(), runnable_at=tick_started,
                                    max_concurrency=engine.settings.max_concurrency,
                                    owner=owner, log_dir=str(logs),
                                    exclude_repos=tuple(unavailable))
        if got is None:
            break
        job, run = got
        claimed.append({"job": job["id"], "task": job["task_id"], "runner": job["runner"]})
        if engine.dry_run:
            continue
        try:
            start(engine, job, run)
        except Exception as exc:
            record_error(engine, errors, job["task_id"], job["id"], exc)
            _fail_run(engine, job, run, f"could not start: {exc}")
    return claimed


def _fail_run(engine: Engine, job: dict[str, Any], run: dict[str, Any], error: str) -> None:
    """End a run that could not start, unless its supervisor took the job over meanwhile."""
    with engine.db.transaction():
        jobs_state.finish_run(engine.db, job["id"], run["id"], exit_code=None,
                              outcome="failed", error=error[:2000], expect_pid=job["pid"])


def start(engine: Engine, job: dict[str, Any], run: dict[str, Any]) -> None:
    """Prepare the worktree, then start the agent or run the inline runner."""
    task = tasks.get(engine.db, job["task_id"])
    assert task is not None
    if _stage_gone(engine, task, job, run):
        return
    if job["runner"] == "agent" and _over_budget(engine, task, job, run):
        return
    from orch.engine.inline import Heartbeat, run_inline

    # The claim's heartbeat must not go stale while git works (or waits for the repo
    # lock) or the supervisor starts: a live tick's job would look dead to another tick.
    with Heartbeat(engine, job["id"], run["id"]):
        base = prepare_worktree(engine, task)
        jobs_state.set_run_fields(engine.db, run["id"], base_commit=base)
        with engine.db.transaction():
            events.record(engine.db, "started", f"{job['runner']} run {run['id']} attempt "
                          f"{job['attempt']} for {job['stage']}", task_id=task["id"],
                          job_id=job["id"])
        if job["runner"] == "agent":
            start_supervisor(engine, job, run)
            return
    run_inline(engine, task, job, run)


def prepare_worktree(engine: Engine, task: dict[str, Any]) -> str:
    """The task's worktree on its branch (reused after a crash); returns its head."""
    from orch import gitops

    repo = engine.settings.repo(task["repo"])
    branch = task["branch"] or gitops.branch_name(task["id"], task["title"])
    if not task["branch"]:
        with engine.db.transaction():
            tasks.update(engine.db, task["id"], branch=branch)
    path = worktree_dir(engine.settings, task["repo"], task["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    artifacts_dir(engine.settings, task["id"]).mkdir(parents=True, exist_ok=True)
    with repo_lock(engine.settings, task["repo"]):
        if not path.exists() and not jobs_state.task_has_started(engine.db, task["id"]) \
                and gitops.branch_exists(repo.path, branch):
            branch = _own_branch(engine, task, repo.path, branch)
        return gitops.ensure_worktree(repo.path, path, branch, repo.default_branch)


def _own_branch(engine: Engine, task: dict[str, Any], repo_path: Path, taken: str) -> str:
    """A new task whose branch name already exists in the repo (another home, an old
    task): take `<name>-2`, `-3`, ... rather than build on someone else's commits."""
    from orch import gitops

    number = 2
    while gitops.branch_exists(repo_path, f"{taken}-{number}"):
        number += 1
    branch = f"{taken}-{number}"
    with engine.db.transaction():
        tasks.update(engine.db, task["id"], branch=branch)
        events.record(engine.db, "branch", f"{taken} already exists in the repo and is not "
                      f"this task's: using {branch}", task_id=task["id"])
    return branch


def _stage_gone(engine: Engine, task: dict[str, Any], job: dict[str, Any],
                run: dict[str, Any]) -> bool:
    """Hold the task instead of starting a job whose stage was removed from the pipeline."""
    if engine.pipeline.get(job["stage"]) is not None:
        return False
    reason = f"stage {job['stage']!r} is no longer in the pipeline"
    with engine.db.transaction():
        jobs_state.end_run(engine.db, run["id"], "cancelled", f"not started: {reason}")
        fresh = jobs_state.get(engine.db, job["id"])
        assert fresh is not None
        hold(engine, task, fresh, reason)
    return True


def _over_budget(engine: Engine, task: dict[str, Any], job: dict[str, Any],
                 run: dict[str, Any]) -> bool:
    """Hold the task with reason `budget` instead of starting a run past a ceiling."""
    budget = engine.settings.budget
    which = None
    if budget.task_usd is not None and jobs_state.task_cost(engine.db, task["id"]) \
            >= budget.task_usd:
        which = f"task ceiling ${budget.task_usd:g} reached"
    elif budget.day_usd is not None and jobs_state.cost_since(engine.db, utc_day_start()) \
            >= budget.day_usd:
        which = f"day ceiling ${budget.day_usd:g} reached ({utc_day_start()[:10]})"
    if which is None:
        return False
    with engine.db.transaction():
        jobs_state.end_run(engine.db, run["id"], "cancelled", f"not started: {which}")
        fresh = jobs_state.get(engine.db, job["id"])
        assert fresh is not None
        hold(engine, task, fresh, "budget")
        events.record(engine.db, "budget", which, task_id=task["id"], job_id=job["id"])
    return True


def supervisor_argv(engine: Engine, job: dict[str, Any], run: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "orch", "--home", str(engine.settings.home), "supervise",
            "--job", str(job["id"]), "--run", str(run["id"])]


def start_supervisor(engine: Engine, job: dict[str, Any], run: dict[str, Any]) -> int:
    """Start the detached supervisor and wait until it has taken the job over."""
    from orch import procs

    log = Path(run["log_path"])
    pid = procs.spawn_detached(supervisor_argv(engine, job, run), cwd=engine.settings.home,
                               env=dict(__import__("os").environ), log_path=log)
    deadline = time.monotonic() + SUPERVISOR_REGISTER_WAIT_S
    while time.monotonic() < deadline:
        current = jobs_state.get(engine.db, job["id"])
        if current is None or current["run_id"] != run["id"] or current["pid"] == pid \
                or current["status"] != "running":
            break
        if procs.liveness(pid, procs.start_ticks(pid)) != "alive":
            break
        time.sleep(0.02)
    return pid
