"""Phase 5, enqueue: each active, unpaused task with no open job gets one (SPEC 5.5).

The stage machine's `enter` says what arriving at the task's stage means: a
job, a human wait, or a hold when the stage left the pipeline.
"""

from __future__ import annotations

from orch import machine
from orch.engine.context import Engine, isolate
from orch.engine.moves import carry_out, settle_at_stage
from orch.machine import MoveKind
from orch.model import TaskState
from orch.state import jobs, tasks
from orch.state.records import Task


def enqueue(engine: Engine, unavailable: dict[str, str]) -> list[int]:
    """Give each active, unpaused task with no open or unjudged job a job for its stage."""
    candidates = [task for task in jobs.tasks_needing_job(engine.db, engine.pinned_host)
                  if task.repo not in unavailable]

    def enqueue_one(task: Task) -> int | None:
        with engine.db.transaction():
            return _enqueue_one(engine, task)

    return [job_id for _, job_id in isolate(engine, candidates, enqueue_one,
                                            lambda task: (task.id, None)) if job_id]


def _enqueue_one(engine: Engine, task: Task) -> int | None:
    db = engine.db
    fresh = tasks.get(db, task.id, lock=True)
    if fresh is None or fresh.state != TaskState.ACTIVE or fresh.paused \
            or jobs.has_pending_job(db, task.id):
        return None
    move = machine.enter(engine.pipeline, fresh.stage, fresh.round)
    if move.kind in (MoveKind.ENTER, MoveKind.WAIT_HUMAN):
        return settle_at_stage(engine, fresh, move.kind)
    carry_out(engine, fresh, None, move, "")
    return None
