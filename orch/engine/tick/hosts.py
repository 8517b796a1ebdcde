"""The tick's view of the other hosts (SPEC section 11): its heartbeat, and dead hosts.

`beat` (first, on a state shared by several hosts) upserts this host's row
in `hosts` by the database's clock, keeps the claim's slot rows in place up
to this host's limits, and reads every host's row into the Engine's
`Cluster`: the limits a claim and the serial gate use are the strictest
among live hosts. A SQLite home is one host: its row is written with the
tick's last transaction instead (`row_values`), and nothing else changes.

`adopt_orphans` (after the reap) looks after the open tasks of dead hosts
(not seen for `host_timeout_s`): the reaper has requeued their running jobs
by the wall-clock heartbeat, without signalling anything; each task is then
re-pinned to a live host that has its repo when the repo pushes its task
branches (`merge.push_branches`: the new host rebuilds the worktree from the
pushed branch), or held with `host H is gone` for a person to decide
(`orch task move`, then `orch retry`).
"""

from __future__ import annotations

from typing import Any

from orch import __version__
from orch.availability import repo_problem
from orch.engine.context import Engine, isolate
from orch.engine.moves import hold
from orch.model import HoldKind, JobStatus, TaskState
from orch.procs import boot_id
from orch.state import claims, events, hosts, jobs, tasks
from orch.state.records import Host, Task


def row_values(engine: Engine) -> dict[str, Any]:
    """What this host writes in its `hosts` row."""
    settings = engine.settings
    usable = [name for name, repo in settings.repos.items() if repo_problem(repo) is None]
    limits = {name: {"max_active": repo.max_active, "push": repo.push,
                     "push_branches": repo.push_branches}
              for name, repo in settings.repos.items()}
    return {"name": engine.host, "boot_id": boot_id(), "version": __version__,
            "repos": usable, "max_concurrency": settings.max_concurrency,
            "host_max_concurrency": settings.host_limit, "repo_limits": limits,
            "home": str(settings.home)}


def beat(engine: Engine) -> None:
    """This host's heartbeat row, the slot rows, and every host's row (shared state only)."""
    db = engine.db
    if not db.multi_host:
        return
    with db.transaction():
        hosts.beat(db, **row_values(engine))
        claims.ensure_slots(db, engine.host, engine.settings.max_concurrency,
                            engine.settings.host_limit)
    engine.cluster = engine.hosts.with_hosts(hosts.all_hosts(db))


def record_tick_end(engine: Engine) -> None:
    """Inside the tick's last transaction: when this host last ticked (and, on SQLite,
    its `hosts` row: one host, refreshed each tick with no extra transaction)."""
    db = engine.db
    if not db.multi_host:
        hosts.beat(db, **row_values(engine))
    hosts.set_last_tick(db, engine.host)


def adopt_orphans(engine: Engine) -> list[int]:
    """Re-pin or hold the open tasks of dead hosts; returns the ids changed."""
    if not engine.db.multi_host:
        return []
    dead = {host.name: host for host in engine.hosts.dead()}
    if not dead:
        return []
    orphans = tasks.pinned_to(engine.db, sorted(dead))

    def adopt(task: Task) -> bool:
        with engine.db.transaction():
            return _adopt(engine, task, dead)

    return [task.id for task, changed in isolate(engine, orphans, adopt,
                                                 lambda task: (task.id, None)) if changed]


def _adopt(engine: Engine, task: Task, dead: dict[str, Host]) -> bool:
    db = engine.db
    fresh = tasks.get(db, task.id, lock=True)
    if fresh is None or fresh.closed or fresh.host not in dead \
            or fresh.state == TaskState.HELD:
        return False
    gone = dead[fresh.host]
    job = jobs.open_job(db, fresh.id)
    if job is not None and job.status == JobStatus.RUNNING:
        return False  # still running (a fresh heartbeat): the reaper decides first
    age = f"not seen for {gone.age_s:.0f} s"
    target = _new_host(engine, fresh, gone)
    if target is not None:
        tasks.update(db, fresh.id, expect={"host": gone.name}, host=target)
        events.record(db, "repinned", f"host {gone.name} is gone ({age}): pinned to {target}, "
                      f"which rebuilds the worktree from the pushed branch {fresh.branch}",
                      task_id=fresh.id)
        return True
    hold(engine, fresh, job or jobs.unjudged_of_task(db, fresh.id),
         f"host {gone.name} is gone ({age})", HoldKind.HOST_GONE)
    return True


def _new_host(engine: Engine, task: Task, gone: Host) -> str | None:
    """A live host to take TASK over, when its repo's branches were pushed; else None."""
    pushed = gone.repo_limit(task.repo, "push_branches")
    if pushed is None:
        config = engine.settings.repos.get(task.repo)
        pushed = config.push_branches if config is not None else False
    if not pushed:
        return None
    candidates = engine.hosts.hosts_with_repo(task.repo)
    return candidates[0] if candidates else None
