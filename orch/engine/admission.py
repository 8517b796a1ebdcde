"""The serial gate and the enqueue phase (SPEC sections 4 (invariant 5), 5.4, 5.5, 7).

`choose_admissions` is pure over task rows: per repo, FIFO by priority then
id, `max_active` slots; paused tasks are skipped and do not block; held and
needs-input tasks that are not paused keep their slot; a paused task keeps
its slot only while its job still runs. Each repo is admitted in one
BEGIN IMMEDIATE transaction, so overlapping ticks never exceed max_active.
"""

from __future__ import annotations

from typing import Any

from orch.engine.moves import Engine, hold, job_runner, note
from orch.state import events, repos, tasks
from orch.state import jobs as jobs_state


def occupies_slot(task: dict[str, Any], running_tasks: set[int]) -> bool:
    """An admitted task holds a slot unless it is paused with no running job."""
    if not task["admitted"] or task["state"] == "closed":
        return False
    return not task["paused_at"] or task["id"] in running_tasks


def choose_admissions(open_tasks: list[dict[str, Any]], max_active: int, *, gate_enabled: bool,
                      frozen: bool, running_tasks: set[int]) -> list[int]:
    """Ids of the waiting tasks of one repo to admit now, in FIFO order."""
    if frozen:
        return []
    ordered = sorted(open_tasks, key=lambda t: (-t["priority"], t["id"]))
    candidates = [t["id"] for t in ordered if t["state"] == "waiting" and not t["paused_at"]]
    if not gate_enabled:
        return candidates
    used = sum(1 for t in ordered if occupies_slot(t, running_tasks))
    return candidates[:max(0, max_active - used)]


def admit(engine: Engine, unavailable: dict[str, str],
          errors: list[dict[str, Any]] | None = None) -> list[int]:
    """Release the slots of paused tasks with no running job, then admit per repo."""
    from orch.engine.moves import record_error

    admitted: list[int] = []
    db = engine.db
    by_repo: dict[str, list[dict[str, Any]]] = {}
    for row in tasks.open_tasks(db):
        if _hold_if_stage_gone(engine, row):
            continue
        by_repo.setdefault(row["repo"], []).append(row)
    frozen = repos.frozen_repos(db)
    running = {job["task_id"] for job in jobs_state.running(db)}
    for repo, rows in by_repo.items():
        if repo in unavailable or not _repo_has_work(engine, repo, rows, repo in frozen,
                                                     running):
            continue
        try:
            with db.transaction():
                admitted += _admit_repo(engine, repo, frozen=repo in frozen)
        except Exception as exc:
            if errors is None:
                raise
            record_error(engine, errors, None, None, RuntimeError(f"repo {repo}: {exc}"))
    return admitted


def _hold_if_stage_gone(engine: Engine, task: dict[str, Any]) -> bool:
    """A waiting or needs-input task whose stage left the pipeline is held, never dropped.

    (Active tasks meet the same check when their next job is enqueued or started.)
    """
    if task["state"] not in ("waiting", "needs_input") or \
            engine.pipeline.get(task["stage"]) is not None:
        return False
    with engine.db.transaction():
        fresh = tasks.get(engine.db, task["id"])
        if fresh is None or fresh["state"] != task["state"] or fresh["stage"] != task["stage"]:
            return False
        hold(engine, fresh, None, f"stage {fresh['stage']!r} is no longer in the pipeline")
    return True


def _repo_has_work(engine: Engine, repo: str, rows: list[dict[str, Any]], frozen: bool,
                   running: set[int]) -> bool:
    """A cheap look outside any transaction: a slot to release or a task to admit?"""
    if any(r["admitted"] and r["paused_at"] and r["id"] not in running for r in rows):
        return True
    config = engine.settings.repos.get(repo)
    return bool(choose_admissions(rows, config.max_active if config else 1,
                                  gate_enabled=engine.settings.flags.serial_gate_enabled,
                                  frozen=frozen, running_tasks=running))


def _admit_repo(engine: Engine, repo: str, *, frozen: bool) -> list[int]:
    db = engine.db
    rows = tasks.open_tasks(db, repo)  # re-read inside the transaction
    running = {job["task_id"] for job in jobs_state.running(db)}
    for row in rows:
        if row["admitted"] and row["paused_at"] and row["id"] not in running:
            tasks.update(db, row["id"], admitted=0)
            events.record(db, "slot-released", "paused with no running job", task_id=row["id"])
            row["admitted"] = 0
    config = engine.settings.repos.get(repo)
    max_active = config.max_active if config else 1
    chosen = choose_admissions(rows, max_active, gate_enabled=engine.settings.flags
                               .serial_gate_enabled, frozen=frozen, running_tasks=running)
    from orch.gitops import branch_name  # lazily: most ticks admit nothing

    for task_id in chosen:
        row = next(r for r in rows if r["id"] == task_id)
        branch = row["branch"] or branch_name(task_id, row["title"])
        if tasks.update(db, task_id, expect={"state": "waiting"}, state="active", admitted=1,
                        branch=branch):
            events.record(db, "admitted", f"serial gate admitted it to {repo} "
                          f"(branch {branch})", task_id=task_id)
    return chosen


def enqueue(engine: Engine, unavailable: dict[str, str],
            errors: list[dict[str, Any]] | None = None) -> list[int]:
    """Give each active, unpaused task with no open or unjudged job a job for its stage."""
    from orch.engine.moves import record_error

    created = []
    db = engine.db
    for task in jobs_state.tasks_needing_job(db):
        if task["repo"] in unavailable:
            continue
        try:
            with db.transaction():
                job_id = _enqueue_one(engine, task)
        except Exception as exc:
            if errors is None:
                raise
            record_error(engine, errors, task["id"], None, exc)
            continue
        if job_id:
            created.append(job_id)
    return created


def lift_day_budget_holds(engine: Engine, errors: list[dict[str, Any]]) -> list[int]:
    """A hold for the day budget lifts itself on a later UTC day (a task hold does not)."""
    from orch.engine.common import utc_day_start
    from orch.state import events as events_state

    today = utc_day_start()[:10]
    lifted = []
    for task in tasks.held_for(engine.db, "budget"):
        last = events_state.latest_for_task(engine.db, task["id"], ("budget",))
        if last is None or not last["detail"].startswith("day ceiling") \
                or last["at"][:10] >= today:
            continue
        with engine.db.transaction():
            state = "active" if task["admitted"] else "waiting"
            if tasks.update(engine.db, task["id"], expect={"state": "held",
                                                           "hold_reason": "budget"},
                            state=state, hold_reason=None):
                events.record(engine.db, "retried", f"day budget hold lifted on {today}; "
                              f"{state}", task_id=task["id"])
                lifted.append(task["id"])
    return lifted


def _enqueue_one(engine: Engine, task: dict[str, Any]) -> int | None:
    db = engine.db
    fresh = tasks.get(db, task["id"])
    if fresh is None or fresh["state"] != "active" or fresh["paused_at"] \
            or jobs_state.has_pending_job(db, task["id"]):
        return None
    stage = engine.pipeline.get(fresh["stage"])
    if stage is None:
        hold(engine, fresh, None, f"stage {fresh['stage']!r} is no longer in the pipeline")
        return None
    if stage.runner == "human":
        tasks.update(db, fresh["id"], state="needs_input")
        events.record(db, "needs_input", f"{stage.name}: waiting for orch approve / "
                      "orch reject", task_id=fresh["id"])
        note(engine, "needs_input", fresh, f"approve or reject stage {stage.name}")
        return None
    job_id = jobs_state.enqueue(db, fresh["id"], stage.name, job_runner(engine.settings, stage))
    events.record(db, "enqueued", f"job {job_id} for {stage.name}", task_id=fresh["id"],
                  job_id=job_id)
    return job_id
