"""Read-only health questions about the state file, for `orch doctor`."""

from __future__ import annotations

from orch.state.db import Database

INTEGRITY_REPORT_LINES = 5


def integrity_problems(db: Database) -> list[str]:
    """What `PRAGMA integrity_check` finds (an empty list when the file is sound)."""
    rows = db.execute(f"PRAGMA integrity_check({INTEGRITY_REPORT_LINES})").fetchall()
    lines = [str(row[0]) for row in rows]
    return [] if lines == ["ok"] else lines


def user_version(db: Database) -> int:
    """The schema version stored in the file (`PRAGMA user_version`)."""
    return int(db.scalar("PRAGMA user_version"))


def journal_mode(db: Database) -> str:
    """The file's journal mode (orch runs every file in WAL)."""
    return str(db.scalar("PRAGMA journal_mode")).lower()


def has_table(db: Database, name: str) -> bool:
    """True when the file has the table NAME."""
    return db.scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                     (name,)) is not None
