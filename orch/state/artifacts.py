"""Artifacts stored in the database (SPEC section 11): one row per task and file name.

On a state shared by several hosts, each artifact of a task's folder is stored
here when a run of the task is judged (orch.engine.stored), so that every host
reads the same deliverables; the row keeps the newest content, the run that
was being judged, and the file's mtime (an ISO-8601 string).
"""

from __future__ import annotations

from typing import Any

from orch.state.db import Database


def store(db: Database, task_id: int, name: str, run_id: int | None, content: str,
          mtime: str | None) -> None:
    db.execute("INSERT INTO artifacts (task_id, name, run_id, content, mtime) "
               "VALUES (?, ?, ?, ?, ?) ON CONFLICT(task_id, name) DO UPDATE SET "
               "run_id = excluded.run_id, content = excluded.content, mtime = excluded.mtime",
               (task_id, name, run_id, content, mtime))


def mtimes(db: Database, task_id: int) -> dict[str, str | None]:
    """{name: stored mtime} of a task's stored artifacts (no content read)."""
    return {str(row["name"]): row["mtime"] for row in
            db.all("SELECT name, mtime FROM artifacts WHERE task_id = ?", (task_id,))}


def for_task(db: Database, task_id: int) -> list[dict[str, Any]]:
    """Every stored artifact of a task, content included, by name."""
    return db.all("SELECT * FROM artifacts WHERE task_id = ? ORDER BY name", (task_id,))


def names(db: Database, task_id: int) -> list[str]:
    return [str(row["name"]) for row in
            db.all("SELECT name FROM artifacts WHERE task_id = ? ORDER BY name", (task_id,))]
