"""Phase 4, admit: the serial gate (SPEC sections 4 (invariant 5), 5.4 and 7).

`choose_admissions` is pure over task rows: per repo, FIFO by priority then
id, `max_active` slots; paused tasks are skipped and do not block; held and
needs-input tasks that are not paused keep their slot; a paused task keeps
its slot only while its job still runs. Each repo is admitted in one write
transaction, so overlapping ticks never exceed max_active; on a state shared
by several hosts the transaction first takes the repo's advisory lock, the
slots count every host's tasks, `max_active` is the strictest among live
hosts, and a task admitted here is pinned to this host (`tasks.host`).
"""

from __future__ import annotations

from orch import machine
from orch.engine.context import Engine, isolate
from orch.engine.moves import carry_out
from orch.model import HoldKind, TaskState
from orch.state import counters, events, jobs, repos, tasks
from orch.state.records import Task
from orch.timeutil import utc_day_start


def occupies_slot(task: Task, running_tasks: set[int]) -> bool:
    """An admitted task holds a slot unless it is paused with no running job."""
    if not task.admitted or task.closed:
        return False
    return not task.paused or task.id in running_tasks


def choose_admissions(open_tasks: list[Task], max_active: int, *, gate_enabled: bool,
                      frozen: bool, running_tasks: set[int], host: str | None = None
                      ) -> list[int]:
    """Ids of the waiting tasks of one repo to admit now, in FIFO order.

    With HOST (a state shared by several hosts), the slots are counted over every
    host's tasks of the repo, but only tasks that are unpinned or pinned to HOST are
    admitted here; a waiting task pinned to another host is its host's to admit.
    """
    if frozen:
        return []
    ordered = sorted(open_tasks, key=lambda t: (-t.priority, t.id))
    candidates = [t.id for t in ordered if t.state == TaskState.WAITING and not t.paused
                  and (host is None or t.host in (None, host))]
    if not gate_enabled:
        return candidates
    used = sum(1 for t in ordered if occupies_slot(t, running_tasks))
    return candidates[:max(0, max_active - used)]


def admit(engine: Engine, unavailable: dict[str, str]) -> list[int]:
    """Release the slots of paused tasks with no running job, then admit per repo.

    What is read is bounded by what can change this tick, never by the number of
    waiting or held tasks: the admitted tasks (at most the slots), and per repo with a
    free slot only as many waiting tasks as there are free slots."""
    db = engine.db
    hold_tasks_at_gone_stages(engine)
    running = {job.task_id for job in jobs.running(db)}
    release = [t for t in tasks.admitted_paused(db) if t.id not in running]
    frozen = repos.frozen_repos(db)
    holders = tasks.slot_holders_by_repo(db)
    busy = sorted({t.repo for t in release} | {
        name for name in engine.settings.repos
        if name not in unavailable and _may_admit(engine, name, holders.get(name, 0),
                                                  name in frozen)})

    def admit_repo(repo: str) -> list[int]:
        try:
            with db.transaction():
                db.lock_key(f"orch:admit:{repo}")  # hosts admitting for one repo take turns
                return _admit_repo(engine, repo, frozen=repo in frozen)
        except Exception as exc:
            raise RuntimeError(f"repo {repo}: {exc}") from exc

    admitted: list[int] = []
    for _, ids in isolate(engine, busy, admit_repo, lambda repo: (None, None)):
        admitted += ids
    if db.multi_host and not engine.dry_run:
        _write_files(engine, admitted)
    return admitted


def _write_files(engine: Engine, admitted: list[int]) -> None:
    """The admitting host writes the task's files (00-task.md) from the state (SPEC 11)."""
    from orch.engine.stored import restore_artifacts

    def restore(task_id: int) -> None:
        task = tasks.get(engine.db, task_id)
        if task is not None and task.host == engine.host:
            restore_artifacts(engine, task)

    for _ in isolate(engine, admitted, restore, lambda task_id: (task_id, None)):
        pass


def _mine(engine: Engine, task: Task) -> bool:
    """A task this host may act on: unpinned, or pinned here (always, on SQLite)."""
    return engine.pinned_host is None or task.host in (None, engine.pinned_host)


def _free_slots(engine: Engine, repo: str, holding: int) -> int | None:
    """Free slots of a repo (None: no limit, the serial gate is off)."""
    if not engine.settings.flags.serial_gate_enabled:
        return None
    return max(0, engine.hosts.repo_max_active(repo) - holding)


def _may_admit(engine: Engine, repo: str, holding: int, frozen: bool) -> bool:
    """A cheap look outside any transaction: a free slot and a task waiting for it?"""
    free = _free_slots(engine, repo, holding)
    if frozen or free == 0:
        return False
    return bool(tasks.waiting_in_fifo(engine.db, repo, limit=1, host=engine.pinned_host))


def hold_tasks_at_gone_stages(engine: Engine) -> list[int]:
    """A waiting or needs-input task whose stage left the pipeline is held, never dropped.

    Looked for only when the pipeline's stages changed since the last look (the names
    are kept in `meta`), so a tick does not read every waiting task to find none.
    (Active tasks meet the same check when their next job is enqueued or started.)
    """
    names = ",".join(engine.pipeline.names)
    if counters.get_meta(engine.db, "pipeline_stages") == names:
        return []
    held = []
    for task in tasks.at_stages_not_in(engine.db, engine.pipeline.names,
                                       (TaskState.WAITING, TaskState.NEEDS_INPUT)):
        if not _mine(engine, task):
            continue  # another host's: it holds it on its own tick
        with engine.db.transaction():
            fresh = tasks.get(engine.db, task.id)
            if fresh is None or fresh.state != task.state or fresh.stage != task.stage:
                continue
            carry_out(engine, fresh, None,
                      machine.enter(engine.pipeline, fresh.stage, fresh.round), "")
            held.append(task.id)
    if not engine.dry_run:
        with engine.db.transaction():
            counters.set_meta(engine.db, "pipeline_stages", names)
    return held


def _admit_repo(engine: Engine, repo: str, *, frozen: bool) -> list[int]:
    db = engine.db
    running = {job.task_id for job in jobs.running(db)}  # re-read inside the transaction
    for row in tasks.admitted_paused(db, repo):
        if row.id not in running:
            tasks.update(db, row.id, admitted=False)
            events.record(db, "slot-released", "paused with no running job", task_id=row.id)
    config = engine.settings.repos.get(repo)
    if config is None or frozen:
        return []
    free = _free_slots(engine, repo, tasks.slot_holders_by_repo(db, repo).get(repo, 0))
    if free == 0:
        return []
    chosen = tasks.waiting_in_fifo(db, repo, limit=free, host=engine.pinned_host)
    from orch.gitops import branch_name  # lazily: most ticks admit nothing

    admitted = []
    for row in chosen:
        branch = row.branch or branch_name(row.id, row.title)
        if tasks.update(db, row.id, expect={"state": TaskState.WAITING, "host": row.host},
                        state=TaskState.ACTIVE, admitted=True, branch=branch,
                        host=engine.host):
            events.record(db, "admitted", f"serial gate admitted it to {repo} "
                          f"(branch {branch}, host {engine.host})", task_id=row.id)
            admitted.append(row.id)
    return admitted


def lift_day_budget_holds(engine: Engine) -> list[int]:
    """A hold for the day budget lifts itself on a later UTC day (a task hold does not)."""
    today = utc_day_start()[:10]

    def lift(task: Task) -> bool:
        last = events.latest_for_task(engine.db, task.id, ("budget",))  # when it was held
        held_on = (last.at if last else task.updated_at)[:10]
        if held_on >= today:
            return False
        with engine.db.transaction():
            state = TaskState.ACTIVE if task.admitted else TaskState.WAITING
            if tasks.update(engine.db, task.id,
                            expect={"state": TaskState.HELD, "hold_kind": HoldKind.BUDGET_DAY},
                            state=state, hold_reason=None, hold_kind=None):
                events.record(engine.db, "retried", f"day budget hold lifted on {today}; "
                              f"{state}", task_id=task.id)
                return True
        return False

    held = tasks.held_of_kind(engine.db, HoldKind.BUDGET_DAY)
    return [task.id for task, lifted in isolate(engine, held, lift, lambda t: (t.id, None))
            if lifted]
