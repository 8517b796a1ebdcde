"""Phase 6, claim: claim a job, then start it (agent) or run it inline (everything else).

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

from orch import machine, procs
from orch.engine.context import Engine
from orch.engine.moves import carry_out, hold
from orch.model import HoldKind, JobStatus, RunOutcome
from orch.procs import Identity
from orch.state import events, jobs, runs, tasks
from orch.state.jobs import Owner
from orch.state.records import Job, Run, Task
from orch.timeutil import monotonic, now_iso, utc_day_start

SUPERVISOR_REGISTER_WAIT_S = 10.0


def claim_and_start(engine: Engine, here: Identity, max_claims: int,
                    unavailable: dict[str, str]) -> list[dict[str, Any]]:
    """Claim up to max_claims jobs; start or run each. Returns the claimed entries."""
    claimed = []
    logs = engine.home.logs
    logs.mkdir(parents=True, exist_ok=True)
    for _ in range(max_claims):
        if not jobs.queued_count(engine.db):
            break  # nothing queued: no write lock taken
        owner = Owner(here.pid, here.started, here.host, here.boot_id, monotonic())
        got = jobs.claim_next(engine.db, now=now_iso(), runnable_at=engine.started_at,
                              max_concurrency=engine.hosts.global_limit(),
                              host_limit=engine.settings.host_limit,
                              owner=owner, log_dir=str(logs), exclude_repos=tuple(unavailable))
        if got is None:
            break
        job, run = got
        claimed.append({"job": job.id, "task": job.task_id, "runner": job.runner})
        if engine.dry_run:
            continue
        try:
            start(engine, job, run)
        except Exception as exc:
            engine.record_error(job.task_id, job.id, exc)
            _fail_run(engine, job, run, f"could not start: {exc}")
    return claimed


def _fail_run(engine: Engine, job: Job, run: Run, error: str) -> None:
    """End a run that could not start, unless its supervisor took the job over meanwhile."""
    with engine.db.transaction():
        jobs.finish_run(engine.db, job.id, run.id, exit_code=None, outcome=RunOutcome.FAILED,
                        error=error[:2000], expect_pid=job.pid)


def start(engine: Engine, job: Job, run: Run) -> None:
    """Prepare the worktree, then start the agent or run the inline runner."""
    from orch.engine.run.inline import Heartbeat, run_inline

    task = tasks.get(engine.db, job.task_id)
    assert task is not None
    if _stage_gone(engine, task, job, run):
        return
    if job.runner == "agent" and _over_budget(engine, task, job, run):
        return
    # The claim's heartbeat must not go stale while git works (or waits for the repo
    # lock) or the supervisor starts: a live tick's job would look dead to another tick.
    with Heartbeat(engine, job.id, run.id):
        if _taken_over(engine, task, run):  # its files from the state (SPEC section 11)
            from orch.engine.stored import restore_artifacts

            restore_artifacts(engine, task)
        base = prepare_worktree(engine, task)
        runs.set_fields(engine.db, run.id, base_commit=base)
        with engine.db.transaction():
            events.record(engine.db, "started", f"{job.runner} run {run.id} attempt "
                          f"{job.attempt} for {job.stage}", task_id=task.id, job_id=job.id)
        if job.runner == "agent":
            _start_agent(engine, tasks.get(engine.db, task.id) or task, job, run)
            return
    run_inline(engine, tasks.get(engine.db, task.id) or task, job, run)


def _taken_over(engine: Engine, task: Task, run: Run) -> bool:
    """On a state shared by several hosts: the task's previous run was on another host
    (a dead host's task re-pinned here, or `orch task move`). Only then are the stored
    files written back: a file a person removed here must stay removed."""
    if not engine.db.multi_host:
        return False
    earlier = [r for r in runs.for_task(engine.db, task.id) if r.id != run.id]
    return bool(earlier) and earlier[-1].host not in (None, engine.host)


def prepare_worktree(engine: Engine, task: Task) -> str:
    """The task's worktree on its branch (reused after a crash); returns its head."""
    from orch import gitops

    repo = engine.settings.repo(task.repo)
    branch = task.branch or gitops.branch_name(task.id, task.title)
    if not task.branch:
        with engine.db.transaction():
            tasks.update(engine.db, task.id, branch=branch)
    path = engine.home.worktree(task.repo, task.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine.home.artifacts(task.id).mkdir(parents=True, exist_ok=True)
    with engine.home.repo_lock(task.repo):
        started = not path.exists() and runs.task_has_started(engine.db, task.id)
        if not path.exists() and not started and gitops.branch_exists(repo.path, branch):
            branch = _own_branch(engine, task, repo.path, branch)
        if started and repo.push_branches:
            _fetch_pushed(engine, task, repo.path, branch)
        return gitops.ensure_worktree(repo.path, path, branch, repo.default_branch)


def _fetch_pushed(engine: Engine, task: Task, repo_path: Path, branch: str) -> None:
    """A started task with no worktree here (taken over from another host, SPEC section 11):
    its branch as the last developer run pushed it; a failed fetch is recorded and the
    worktree is built from what this clone has."""
    from orch import gitops

    fetched, detail = gitops.fetch_task_branch(repo_path, branch)
    with engine.db.transaction():
        events.record(engine.db, "branch", f"worktree rebuilt from the pushed branch: {detail}"
                      if fetched else f"{detail}; building the worktree from this clone",
                      task_id=task.id)


def _own_branch(engine: Engine, task: Task, repo_path: Path, taken: str) -> str:
    """A new task whose branch name already exists in the repo (another home, an old
    task): take `<name>-2`, `-3`, ... rather than build on someone else's commits."""
    from orch import gitops

    number = 2
    while gitops.branch_exists(repo_path, f"{taken}-{number}"):
        number += 1
    branch = f"{taken}-{number}"
    with engine.db.transaction():
        tasks.update(engine.db, task.id, branch=branch)
        events.record(engine.db, "branch", f"{taken} already exists in the repo and is not "
                      f"this task's: using {branch}", task_id=task.id)
    return branch


def _stage_gone(engine: Engine, task: Task, job: Job, run: Run) -> bool:
    """Hold the task instead of starting a job whose stage was removed from the pipeline."""
    if engine.pipeline.get(job.stage) is not None:
        return False
    move = machine.enter(engine.pipeline, job.stage, task.round)
    with engine.db.transaction():
        tasks.get(engine.db, task.id, lock=True)
        runs.end(engine.db, run.id, RunOutcome.CANCELLED, f"not started: {move.note}")
        fresh = jobs.get(engine.db, job.id)
        assert fresh is not None
        carry_out(engine, task, fresh, move, "")
    return True


def _over_budget(engine: Engine, task: Task, job: Job, run: Run) -> bool:
    """Hold the task with reason `budget` instead of starting a run past a ceiling."""
    budget = engine.settings.budget
    which, kind = None, HoldKind.BUDGET_TASK
    if budget.task_usd is not None and runs.task_cost(engine.db, task.id) >= budget.task_usd:
        which = f"task ceiling ${budget.task_usd:g} reached"
    elif budget.day_usd is not None and runs.cost_since(engine.db, utc_day_start()) \
            >= budget.day_usd:
        which = f"day ceiling ${budget.day_usd:g} reached ({utc_day_start()[:10]})"
        kind = HoldKind.BUDGET_DAY
    if which is None:
        return False
    with engine.db.transaction():
        fresh_task = tasks.get(engine.db, task.id, lock=True)
        fresh = jobs.get(engine.db, job.id)
        assert fresh is not None
        runs.end(engine.db, run.id, RunOutcome.CANCELLED, f"not started: {which}")
        if fresh_task is None or fresh_task.closed or fresh.status != JobStatus.RUNNING \
                or fresh.run_id != run.id:
            return True  # cancelled (or reaped) meanwhile: nothing to hold
        hold(engine, fresh_task, fresh, "budget", kind)
        events.record(engine.db, "budget", which, task_id=task.id, job_id=job.id)
    return True


def supervisor_argv(engine: Engine, job: Job, run: Run) -> list[str]:
    return [sys.executable, "-m", "orch", "--home", str(engine.settings.home), "supervise",
            "--job", str(job.id), "--run", str(run.id)]


def _start_agent(engine: Engine, task: Task, job: Job, run: Run) -> None:
    """Plan the run here, then start its supervisor; a plan that cannot be made (a prompt
    over the argv limit, say) ends the run as failed (a RETRY), not as a tick error."""
    from orch.engine.run.plan import build_plan

    try:
        plan = build_plan(engine, task, job, run)
    except Exception as exc:
        _fail_run(engine, job, run, f"could not prepare the agent: {exc}")
        return
    start_supervisor(engine, job, run, plan.to_json())


def start_supervisor(engine: Engine, job: Job, run: Run, plan_json: str) -> int:
    """Start the detached supervisor with its plan and wait until it has taken the job."""

    from orch.procs.marks import marked_env

    log = Path(run.log_path or engine.home.log(job.id, run.id))
    # The supervisor carries the run's mark too: a reaper that finds it dead ends it
    # with the agent and every tool process, wherever they went (docs/processes.md).
    env = marked_env(engine.settings.environ, engine.home.run_mark(run.id))
    pid = procs.spawn_detached(supervisor_argv(engine, job, run), cwd=engine.settings.home,
                               env=env, log_path=log, stdin_text=plan_json)
    deadline = time.monotonic() + SUPERVISOR_REGISTER_WAIT_S
    while time.monotonic() < deadline:
        current = jobs.get(engine.db, job.id)
        if current is None or current.run_id != run.id or current.pid == pid \
                or current.status != JobStatus.RUNNING:
            break
        if procs.liveness(pid, procs.start_ticks(pid)) != "alive":
            break
        time.sleep(0.02)
    return pid
