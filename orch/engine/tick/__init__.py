"""One tick: sanitize, reap, advance, admit, enqueue, claim (SPEC section 5).

On a state shared by several hosts (SPEC section 11) the tick first writes
its host's heartbeat row and reads the others' (tick/hosts.py), and after
the reap looks after the tasks of dead hosts; every phase then works on the
tasks pinned to this host (and admits unpinned ones of the repos it has).

Each phase is one module of this package and reads top to bottom as one
call. A task or job that raises is recorded (an `error` event and the
`errors` list) and skipped; the tick goes on. `--dry-run` runs the same code
inside one transaction that is rolled back, with every outside effect
(kills, spawns, inline runs, notifications) switched off, so it reports what
the tick would do and writes nothing.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orch.config import Settings
from orch.engine.context import Engine
from orch.engine.tick import admit, advance, claim, enqueue, hosts, reap, sanitize
from orch.machine import Pipeline
from orch.procs import Identity
from orch.state import counters
from orch.state.db import Database
from orch.timeutil import now_iso


@dataclass
class TickReport:
    sanitized: int = 0
    reaped: list[int] = field(default_factory=list)
    admitted: list[int] = field(default_factory=list)
    enqueued: list[int] = field(default_factory=list)
    advanced: list[dict[str, Any]] = field(default_factory=list)
    claimed: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"sanitized": self.sanitized, "reaped": self.reaped, "admitted": self.admitted,
                "enqueued": self.enqueued, "advanced": self.advanced, "claimed": self.claimed,
                "errors": self.errors}

    @property
    def idle(self) -> bool:
        return not (self.sanitized or self.reaped or self.admitted or self.enqueued
                    or self.advanced or self.claimed or self.errors)


class _DryRunRollback(Exception):
    """Raised at the end of a dry run to roll every write back."""


def run_tick(settings: Settings, pipeline: Pipeline, db: Database, *, max_claims: int = 1,
             dry_run: bool = False) -> TickReport:
    """Run every phase once; returns what happened (or, dry, what would)."""
    engine = Engine(settings, pipeline, db, dry_run=dry_run)
    report = TickReport(advanced=engine.advanced, errors=engine.errors)
    if not dry_run:
        _phases(engine, report, max_claims)
        send_notes(engine)
        return report
    try:
        with db.transaction():
            _phases(engine, report, max_claims)
            raise _DryRunRollback
    except _DryRunRollback:
        pass
    return report


def run_ticks_every(period_s: float, tick: Callable[[], TickReport],
                    show: Callable[[TickReport], None]) -> int:
    """`tick()`, then again `period_s` after each tick began, until SIGTERM or SIGINT: the
    signal only sets a flag, so the tick in progress finishes; returns the ticks run.
    Detached supervisors are left alone (they are not this process's)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    ticks = 0
    try:
        while not stop.is_set():
            began = time.monotonic()
            show(tick())
            ticks += 1
            stop.wait(max(0.0, period_s - (time.monotonic() - began)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return ticks


def _phases(engine: Engine, report: TickReport, max_claims: int) -> None:

    here = Identity.here(engine.host)
    hosts.beat(engine)
    report.sanitized = sanitize.sanitize(engine)
    report.reaped = reap.reap(engine, here)
    hosts.adopt_orphans(engine)
    advance.advance_all(engine)
    unavailable = engine_unavailable_repos(engine)
    admit.lift_day_budget_holds(engine)
    report.admitted = admit.admit(engine, unavailable)
    report.enqueued = enqueue.enqueue(engine, unavailable)
    report.claimed = claim.claim_and_start(engine, here, max_claims, unavailable)
    with engine.db.transaction():
        counters.bump(engine.db, "ticks_total")
        if not engine.db.multi_host:
            counters.set_meta(engine.db, "last_tick_at", now_iso())
        hosts.record_tick_end(engine)


def engine_unavailable_repos(engine: Engine) -> dict[str, str]:
    """{repo: why} for the repos a tick could work on that can't be used right now: the
    configured ones, and any other that still has admitted tasks (removed from orch.yaml).
    Waiting tasks of a repo orch.yaml lacks are never admitted, so they need no look."""
    from orch.availability import repo_problem
    from orch.state import tasks

    names = set(engine.settings.repos) | tasks.repos_with_admitted(engine.db)
    result = {}
    for name in sorted(names):
        reason = repo_problem(engine.settings.repos.get(name))
        if reason:
            result[name] = reason
    return result


def send_notes(engine: Engine) -> None:
    """Run the notify hook for each hold/needs_input/failed/done, after the commits."""
    if not engine.notes or not engine.settings.notify:
        engine.notes.clear()
        return
    from orch.notify import send

    for payload in engine.notes:
        send(engine.settings, engine.db, payload)
    engine.notes.clear()
