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
from orch.gitops import branch_name
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


def admit(engine: Engine, unavailable: dict[str, str]) -> list[int]:
    """Release the slots of paused tasks with no running job, then admit per repo."""
    admitted: list[int] = []
    db = engine.db
    open_rows = tasks.open_tasks(db)
    by_repo: dict[str, list[dict[str, Any]]] = {}
    for row in open_rows:
        by_repo.setdefault(row["repo"], []).append(row)
    frozen = repos.frozen_repos(db)
    for repo, rows in by_repo.items():
        if repo in unavailable:
            continue
        with db.transaction():
            admitted += _admit_repo(engine, repo, frozen=repo in frozen)
    return admitted


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
    for task_id in chosen:
        row = next(r for r in rows if r["id"] == task_id)
        branch = row["branch"] or branch_name(task_id, row["title"])
        if tasks.update(db, task_id, expect={"state": "waiting"}, state="active", admitted=1,
                        branch=branch):
            events.record(db, "admitted", f"serial gate admitted it to {repo} "
                          f"(branch {branch})", task_id=task_id)
    return chosen


def enqueue(engine: Engine, unavailable: dict[str, str]) -> list[int]:
    """Give each active, unpaused task with no open or unjudged job a job for its stage."""
    created = []
    db = engine.db
    for task in jobs_state.tasks_needing_job(db):
        if task["repo"] in unavailable:
            continue
        with db.transaction():
            job_id = _enqueue_one(engine, task)
        if job_id:
            created.append(job_id)
    return created


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
