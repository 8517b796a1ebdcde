"""The event log: every change of a task, written in the transaction that makes it."""

from __future__ import annotations

from orch.state.db import Database
from orch.state.records import Event
from orch.timeutil import now_iso


def record(db: Database, kind: str, detail: str = "", *, task_id: int | None = None,
           job_id: int | None = None, at: str | None = None) -> int:
    """Append one event; call it inside the transaction of the change it describes."""
    return db.insert(
        "INSERT INTO events (at, task_id, job_id, kind, detail) VALUES (?, ?, ?, ?, ?) "
        "RETURNING id", (at or now_iso(), task_id, job_id, kind, str(detail)))


def for_task(db: Database, task_id: int) -> list[Event]:
    return [Event.from_row(row) for row in
            db.all("SELECT * FROM events WHERE task_id = ? ORDER BY id", (task_id,))]


def latest_for_task(db: Database, task_id: int, kinds: tuple[str, ...]) -> Event | None:
    """A task's newest event of one of these kinds (through the `events_task` index)."""
    marks = ", ".join("?" for _ in kinds)
    row = db.one(f"SELECT * FROM events WHERE task_id = ? AND kind IN ({marks}) "
                 "ORDER BY id DESC LIMIT 1", (task_id, *kinds))
    return Event.from_row(row) if row else None
