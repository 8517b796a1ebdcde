"""Counters and meta values (last tick time): tiny rows a tick updates."""

from __future__ import annotations

from orch.state.db import Database


def bump(db: Database, name: str, by: int = 1) -> None:
    db.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) "
               "DO UPDATE SET value = counters.value + excluded.value", (name, by))


def all_counters(db: Database) -> dict[str, int]:
    return {row["name"]: int(row["value"])
            for row in db.all("SELECT name, value FROM counters ORDER BY name")}


def get_meta(db: Database, key: str) -> str | None:
    value = db.scalar("SELECT value FROM meta WHERE key = ?", (key,))
    return None if value is None else str(value)


def set_meta(db: Database, key: str, value: str) -> None:
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
               "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))
