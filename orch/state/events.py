"""The event log: every change of a task, written in the transaction that makes it."""

from __future__ import annotations

from typing import Any

from orch.state.db import Database
from orch.timeutil import now_iso


def record(db: Database, kind: str, detail: str = "", *, task_id: int | None = None,
           job_id: int | None = None, at: str | None = None) -> int:
    """Append one event; call it inside the transaction of the change it describes."""
    cursor = db.execute(
        "INSERT INTO events (at, task_id, job_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
        (at or now_iso(), task_id, job_id, kind, detail))
    return int(cursor.lastrowid or 0)


def for_task(db: Database, task_id: int) -> list[dict[str, Any]]:
    return db.all("SELECT * FROM events WHERE task_id = ? ORDER BY id", (task_id,))


def latest_for_task(db: Database, task_id: int, kinds: tuple[str, ...]) -> dict[str, Any] | None:
    marks = ", ".join("?" for _ in kinds)
    return db.one(f"SELECT * FROM events WHERE task_id = ? AND kind IN ({marks}) "
                  "ORDER BY id DESC LIMIT 1", (task_id, *kinds))
