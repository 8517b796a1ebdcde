"""The reaper: find running jobs whose process died, kill what is left, requeue (SPEC 5.2).

`judge_liveness` is the decision: it reads /proc through orch.procs and the
job's recorded identity, and returns the evidence. `reap_dead` acts on it:
leftovers are killed *before* the transaction that requeues the job, so no
new run can start beside them, and a pid or group that now belongs to
another process is never signalled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orch import procs
from orch.engine.common import Identity, epoch_of, monotonic
from orch.engine.moves import Engine, hold, later_or_now
from orch.state import counters, events, tasks
from orch.state import jobs as jobs_state
from orch.timeutil import now_iso


@dataclass(frozen=True)
class Liveness:
    dead: bool
    evidence: str
    local: bool  # recorded on this machine and boot: its leftovers may be killed here


def judge_liveness(job: dict[str, Any], here: Identity, timeout_s: float,
                   now_mono: float, now_wall: float) -> Liveness:
    """Is a running job's owner still alive? Evidence names the check that said dead."""
    if job["host"] and job["host"] != here.host:
        age = now_wall - epoch_of(job["heartbeat_at"]) if job["heartbeat_at"] else None
        if age is None or age > timeout_s:
            return Liveness(True, f"heartbeat from host {job['host']} is stale "
                            f"({_age(age)} > {timeout_s} s, wall clock)", False)
        return Liveness(False, "remote heartbeat fresh", False)
    if job["boot_id"] != here.boot_id:
        return Liveness(True, "the machine rebooted (boot id differs)", False)
    state = procs.liveness(job["pid"], job["pid_started"])
    if state != "alive":
        detail = {"no-process": f"no process has pid {job['pid']}",
                  "zombie": f"pid {job['pid']} is a zombie",
                  "start-time-mismatch": f"pid {job['pid']} now belongs to another process "
                                         "(start time differs: pid reused)"}[state]
        return Liveness(True, detail, True)
    if job["heartbeat_mono"] is not None:
        age = now_mono - float(job["heartbeat_mono"])
        if age > timeout_s:
            return Liveness(True, f"heartbeat stale ({age:.0f} s > {timeout_s} s, "
                            "monotonic clock)", True)
    return Liveness(False, "alive", True)


def _age(age: float | None) -> str:
    return "never" if age is None else f"{age:.0f} s"


def reap(engine: Engine, here: Identity, errors: list[dict[str, Any]] | None = None
         ) -> list[int]:
    """Judge every running job; kill and requeue (or hold) the dead ones."""
    import time

    from orch.engine.moves import record_error

    reaped = []
    timeout = engine.settings.heartbeat_timeout_s
    for job in jobs_state.running(engine.db):
        try:
            verdict = judge_liveness(job, here, timeout, monotonic(), time.time())
            if verdict.dead and _reap_one(engine, job, verdict):
                reaped.append(job["id"])
        except Exception as exc:
            if errors is None:
                raise
            record_error(engine, errors, job["task_id"], job["id"], exc)
    return reaped


def kill_leftovers(engine: Engine, job: dict[str, Any]) -> str:
    """Kill the run's process group (supervisor's or inline command's), never a reused pid.

    The job and its run are read again in one snapshot: a supervisor that took the job
    over since it was judged (it records its pid and its group in one transaction) is
    alive and left alone; the job is then not reaped either.
    """
    with engine.db.transaction():
        fresh = jobs_state.get(engine.db, job["id"])
        if fresh is None or (fresh["status"], fresh["run_id"], fresh["pid"]) != (
                "running", job["run_id"], job["pid"]):
            return "its owner changed meanwhile: nothing killed"
        run = jobs_state.get_run(engine.db, job["run_id"]) if job["run_id"] else None
    if run is None:
        return "no run recorded"
    if not run["pgid"]:
        return _kill_unrecorded(engine, int(run["id"]))
    if engine.dry_run:
        return "would kill its process group"
    outcome = procs.kill_group(int(run["pgid"]), run["pgid_started"],
                               engine.settings.cancel_grace_s)
    return {"killed": f"killed process group {run['pgid']}",
            "gone": f"process group {run['pgid']} already gone",
            "refused-reused-pid": f"left pid {run['pgid']} alone (reused by another process)"
            }.get(outcome, outcome)


def _kill_unrecorded(engine: Engine, run_id: int) -> str:
    """No group recorded: the tick died between starting an inline command and recording
    its group. Its processes carry this home's ORCH_HOME and the run's ORCH_RUN_ID in their
    environment (nothing else does), so their groups are found by that and killed."""
    groups = _groups_with_env({"ORCH_HOME": str(engine.settings.home),
                               "ORCH_RUN_ID": str(run_id)})
    if not groups:
        return "no process group recorded"
    if engine.dry_run:
        return f"would kill process groups {sorted(groups)} (found by ORCH_RUN_ID)"
    for pgid in sorted(groups):
        procs.kill_group(pgid, procs.start_ticks(pgid), engine.settings.cancel_grace_s)
    return f"killed process groups {sorted(groups)} (no group recorded; found by ORCH_RUN_ID)"


def _groups_with_env(markers: dict[str, str]) -> set[int]:
    """Process groups of the live processes whose environment holds every KEY=VALUE."""
    import os

    wanted = {f"{key}={value}".encode() for key, value in markers.items()}
    groups: set[int] = set()
    mine = os.getpgid(0)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = set(handle.read().split(b"\0"))
            if wanted <= environ and not procs.is_zombie(int(entry)):
                groups.add(os.getpgid(int(entry)))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    groups.discard(mine)  # never our own group, whatever started us
    return groups


def _reap_one(engine: Engine, job: dict[str, Any], verdict: Liveness) -> bool:
    killed = kill_leftovers(engine, job) if verdict.local else "not on this machine"
    db = engine.db
    with db.transaction():
        fresh = jobs_state.get(db, job["id"])
        if fresh is None or fresh["status"] != "running" or fresh["run_id"] != job["run_id"] \
                or fresh["pid"] != job["pid"]:
            return False  # it finished, or its supervisor registered, meanwhile
        task = tasks.get(db, fresh["task_id"])
        assert task is not None
        detail = f"run {fresh['run_id']} reaped: {verdict.evidence}; {killed}"
        jobs_state.end_run(db, fresh["run_id"], "reaped", verdict.evidence)
        counters.bump(db, "reaped_total")
        events.record(db, "reaped", detail, task_id=task["id"], job_id=fresh["id"])
        attempt = fresh["attempt"] + 1
        if attempt > engine.settings.max_attempts:
            hold(engine, task, fresh, f"attempts used up ({fresh['attempt']} of "
                 f"{engine.settings.max_attempts}): last run reaped ({verdict.evidence})")
            return True
        jobs_state.requeue(db, fresh["id"], expect_status="running",
                           expect_run_id=fresh["run_id"], expect_pid=fresh["pid"],
                           attempt=attempt, defers=fresh["defers"],
                           not_before=later_or_now(engine.settings.retry_backoff_s), verdict=None)
    return True


def sanitize(engine: Engine) -> int:
    """Repair queued jobs that carry run ownership (invariant 1), count and log each."""
    if not engine.settings.flags.impossible_queued_sanitize_enabled:
        return 0
    bad = jobs_state.impossible_queued(engine.db)
    repaired = 0
    for job in bad:
        with engine.db.transaction():
            if not jobs_state.clean_queued(engine.db, job["id"]):
                continue
            cols = ", ".join(f"{c}={job[c]}" for c in jobs_state.OWNERSHIP
                             if job[c] is not None)
            counters.bump(engine.db, "impossible_queued_total")
            events.record(engine.db, "sanitized", f"queued job carried run ownership ({cols}); "
                          "cleared", task_id=job["task_id"], job_id=job["id"], at=now_iso())
            repaired += 1
    return repaired
