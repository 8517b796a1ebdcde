"""Phase 1, sanitize: queued jobs that break invariant 1 are cleaned (SPEC section 5.1).

The schema's CHECK keeps such rows out; this repairs rows written by an older
orch or with checks switched off, counts each in `impossible_queued_total`
and logs it as an event.
"""

from __future__ import annotations

from orch.engine.context import Engine
from orch.state import counters, events, jobs
from orch.timeutil import now_iso


def sanitize(engine: Engine) -> int:
    """Repair queued jobs that carry run ownership (invariant 1), count and log each."""
    if not engine.settings.flags.impossible_queued_sanitize_enabled:
        return 0
    repaired = 0
    for job in jobs.impossible_queued(engine.db):
        with engine.db.transaction():
            if not jobs.clean_queued(engine.db, job.id):
                continue
            cols = ", ".join(f"{c}={getattr(job, c)}" for c in jobs.OWNERSHIP
                             if getattr(job, c) is not None)
            counters.bump(engine.db, "impossible_queued_total")
            events.record(engine.db, "sanitized", f"queued job carried run ownership ({cols}); "
                          "cleared", task_id=job.task_id, job_id=job.id, at=now_iso())
            repaired += 1
    return repaired
