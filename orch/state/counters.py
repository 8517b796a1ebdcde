"""Counters and meta values (last tick time): tiny rows a tick updates.

On a state shared by several hosts (PostgreSQL) each host counts on its own
rows (`claims_total@HOST`): one row that every host's claim and tick updated
would make them wait for each other. Readers add the rows of a name up, so
`all_counters` says `claims_total` on every backend.
"""

from __future__ import annotations

from orch.state.db import Database

SHARD = "@"


def shard(db: Database, name: str) -> str:
    """The row this host counts NAME on: NAME itself, or NAME@HOST on a shared state."""
    return f"{name}{SHARD}{db.host}" if db.multi_host and db.host else name


def bump(db: Database, name: str, by: int = 1) -> None:
    db.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) "
               "DO UPDATE SET value = counters.value + excluded.value", (shard(db, name), by))


def all_counters(db: Database) -> dict[str, int]:
    """Every counter by name (the per-host rows of a shared state added up)."""
    totals: dict[str, int] = {}
    for row in db.all("SELECT name, value FROM counters ORDER BY name"):
        name = str(row["name"]).split(SHARD, 1)[0]
        totals[name] = totals.get(name, 0) + int(row["value"])
    return totals


def per_host(db: Database, name: str) -> dict[str, int]:
    """{host: value} of a counter kept per host ('' for the unsharded row)."""
    result: dict[str, int] = {}
    for row in db.all("SELECT name, value FROM counters WHERE name = ? OR name LIKE ?",
                      (name, f"{name}{SHARD}%")):
        _, _, host = str(row["name"]).partition(SHARD)
        result[host] = int(row["value"])
    return result


def last_tick(db: Database) -> str | None:
    """When the last tick ended: meta on SQLite; the newest host's on a shared state."""
    if db.multi_host:
        from orch.state import hosts

        return hosts.last_tick_at(db)
    return get_meta(db, "last_tick_at")


def get_meta(db: Database, key: str) -> str | None:
    value = db.scalar("SELECT value FROM meta WHERE key = ?", (key,))
    return None if value is None else str(value)


def set_meta(db: Database, key: str, value: str) -> None:
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
               "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))
