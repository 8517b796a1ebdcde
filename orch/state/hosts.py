"""The hosts sharing a state (SPEC section 11): each tick's heartbeat row, read by all.

Every tick upserts its host's row (`beat`), stamped by the database's clock, so
that skew between machines does not matter; a host is alive while its
`last_seen` is younger than `host_timeout_s`, measured by the same clock
(`all_hosts` returns each row's age). `repos` is the JSON list of the repos
the host has configured and available; `repo_limits` says, per repo, what the
host's orch.yaml sets (max_active, merge.push, merge.push_branches), so that
the limits are the strictest among live hosts and `orch doctor` can tell when
they disagree.
"""

from __future__ import annotations

import json
from typing import Any

from orch.state.db import Database
from orch.state.records import Host


def beat(db: Database, *, name: str, boot_id: str, version: str, repos: list[str],
         max_concurrency: int, host_max_concurrency: int,
         repo_limits: dict[str, dict[str, Any]], home: str) -> None:
    """Insert or refresh this host's row; `last_seen` is the database's now."""
    db.execute(
        "INSERT INTO hosts (name, boot_id, last_seen, version, repos, max_concurrency, "
        f"host_max_concurrency, repo_limits, home) VALUES (?, ?, {db.now_sql}, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET boot_id = excluded.boot_id, "
        "last_seen = excluded.last_seen, version = excluded.version, repos = excluded.repos, "
        "max_concurrency = excluded.max_concurrency, "
        "host_max_concurrency = excluded.host_max_concurrency, "
        "repo_limits = excluded.repo_limits, home = excluded.home",
        (name, boot_id, version, json.dumps(sorted(repos)), max_concurrency,
         host_max_concurrency, json.dumps(repo_limits, sort_keys=True), home))


def set_last_tick(db: Database, name: str) -> None:
    """The end of this host's tick (PostgreSQL keeps `last_tick_at` per host, not in one
    row every host's tick would write)."""
    db.execute(f"UPDATE hosts SET last_tick_at = {db.now_sql} WHERE name = ?", (name,))


def all_hosts(db: Database) -> list[Host]:
    """Every host row, oldest name first, with its age by the database's clock."""
    rows = db.all(f"SELECT *, {db.age_sql('last_seen')} AS age_s FROM hosts ORDER BY name")
    return [host_of(row) for row in rows]


def get(db: Database, name: str) -> Host | None:
    row = db.one(f"SELECT *, {db.age_sql('last_seen')} AS age_s FROM hosts WHERE name = ?",
                 (name,))
    return host_of(row) if row else None


def host_of(row: dict[str, Any]) -> Host:
    return Host(
        name=str(row["name"]), boot_id=row["boot_id"], last_seen=str(row["last_seen"]),
        version=row["version"], repos=tuple(_json(row["repos"], [])),
        max_concurrency=row["max_concurrency"],
        host_max_concurrency=row["host_max_concurrency"],
        repo_limits=_json(row["repo_limits"], {}), home=row["home"],
        last_tick_at=row["last_tick_at"], age_s=max(0.0, float(row["age_s"] or 0.0)))


def _json(text: Any, default: Any) -> Any:
    try:
        value = json.loads(text) if text else default
    except (TypeError, ValueError):
        return default
    return value if isinstance(value, type(default)) else default


def running_by_host(db: Database) -> dict[str, int]:
    """{host: running jobs} (a job with no host recorded counts under '')."""
    rows = db.all("SELECT coalesce(host, '') AS host, count(*) AS n FROM jobs "
                  "WHERE status = 'running' GROUP BY coalesce(host, '')")
    return {str(row["host"]): int(row["n"]) for row in rows}


def last_tick_at(db: Database) -> str | None:
    """The newest end of a tick of any host."""
    value = db.scalar("SELECT max(last_tick_at) FROM hosts")
    return None if value is None else str(value)
