"""`orch state migrate --to URL`: a home's whole state, SQLite -> PostgreSQL or back (SPEC 11).

The copy holds the source's write lock from start to end (SQLite's `BEGIN
IMMEDIATE`; on PostgreSQL every table locked in EXCLUSIVE mode: other hosts
wait, readers go on), refuses while a job runs (exit 1), and writes the
target in one transaction: every table with its ids (the target's sequences
set past them), then, going to PostgreSQL, the artifact files of the open
tasks into `artifacts`. It compares the row counts of every table, marks the
source as moved (every later command on it exits 4, naming the new state),
and returns the `state:` line for orch.yaml, which it never rewrites. Logs
and worktrees stay where they are.

Going back to SQLite is allowed when every open task is pinned to this host
(or to none): the files of the others' tasks are on their hosts. The target
must be empty: a PostgreSQL database with no orch tasks, or a SQLite file
that does not exist yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.config import Settings
from orch.errors import RefusedError, UsageError
from orch.state import counters, is_postgres, sqlite_path
from orch.state.db import Database

# Parents before children (foreign keys); PostgreSQL-only tables (run_slots) are not copied:
# no job runs during a copy, so every slot is free.
TABLES = ("tasks", "jobs", "runs", "events", "counters", "meta", "repo_state", "hosts",
          "artifacts")
WITH_IDS = ("tasks", "jobs", "runs", "events")
BATCH = 5000


@dataclass
class MigrateResult:
    """What `orch state migrate` did (`--json`)."""

    source: str
    target: str
    counts: dict[str, int] = field(default_factory=dict)
    artifact_files: int = 0
    state_line: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "counts": self.counts,
                "artifact_files": self.artifact_files, "state_line": self.state_line}


def target_location(settings: Settings, to: str, source: Database) -> tuple[str, str]:
    """(where to open the target, the `state:` line); UsageError for an impossible pair."""
    if is_postgres(to):
        if source.dialect != "sqlite":
            raise UsageError("orch state migrate copies SQLite -> PostgreSQL or back; "
                             "for PostgreSQL -> PostgreSQL use pg_dump and pg_restore")
        from orch.state.postgres import redact

        return to, f"state: {redact(to)}"
    if source.dialect == "sqlite":
        raise UsageError("orch state migrate copies SQLite -> PostgreSQL or back; this home's "
                         "state is already SQLite (copy it with orch snapshot)")
    path = sqlite_path(to).expanduser().absolute()
    if path.exists():
        raise RefusedError(f"{path} exists: the target must be a new file (move the old "
                           "one away first)")
    line = "state: null" if path == settings.db_path else f"state: sqlite://{path}"
    return str(path), line


def migrate_state(settings: Settings, source: Database, to: str) -> MigrateResult:
    """Copy SOURCE into the empty state at TO; see the module's docstring."""
    where, line = target_location(settings, to, source)
    from orch.state import open_location

    target = open_location(where, host=settings.host_name)
    try:
        result = MigrateResult(source.location, target.location, state_line=line)
        _refuse_non_empty(target)
        with source.transaction():
            source.lock_for_copy(TABLES)
            _refuse_busy(settings, source)
            with target.transaction():
                target.execute("DELETE FROM counters")  # the zero rows a new schema seeds
                for table in TABLES:
                    result.counts[table] = _copy_table(source, target, table)
                for table in WITH_IDS:
                    target.set_sequence_past(table)
                _verify(source, target, result.counts)
                if target.multi_host:
                    result.artifact_files = _store_open_files(settings, source, target)
            source.set_moved_to(target.location)
        return result
    finally:
        target.close()


def _refuse_non_empty(target: Database) -> None:
    for table in ("tasks", "jobs", "runs", "events", "hosts", "artifacts"):
        if target.scalar(f"SELECT count(*) FROM {table}"):
            raise RefusedError(f"{target.location} is not empty (its {table} table has rows): "
                               "migrate into a new, empty database")


def _refuse_busy(settings: Settings, source: Database) -> None:
    running = source.all("SELECT id, host FROM jobs WHERE status = 'running' ORDER BY id")
    if running:
        ids = ", ".join(str(row["id"]) for row in running[:10])
        raise RefusedError(f"job(s) {ids} are running: wait for them to end (stop the "
                           "scheduled ticks first), then migrate")
    if source.multi_host:
        elsewhere = source.all("SELECT id, host FROM tasks WHERE state != 'closed' "
                               "AND host IS NOT NULL AND host != ? ORDER BY id",
                               (settings.host_name,))
        if elsewhere:
            hosts = sorted({str(row["host"]) for row in elsewhere})
            raise RefusedError(f"{len(elsewhere)} open task(s) are pinned to other hosts "
                               f"({', '.join(hosts)}): their files are there; move them here "
                               "with orch task move, or finish them, first")


def _copy_table(source: Database, target: Database, table: str) -> int:
    """Copy every row of TABLE (the columns both schemas have); returns the count."""
    columns = [c for c in target.columns(table) if c in set(source.columns(table))]
    if table == "counters":
        rows = [[name, value] for name, value in sorted(counters.all_counters(source).items())]
        target.insert_many(table, ["name", "value"], rows)
        return len(rows)
    if table not in WITH_IDS:
        rows = [[row[c] for c in columns] for row in source.all(f"SELECT * FROM {table}")]
        target.insert_many(table, columns, rows)
        return len(rows)
    copied, last = 0, -1
    while True:
        batch = source.all(f"SELECT * FROM {table} WHERE id > ? ORDER BY id LIMIT {BATCH}",
                           (last,))
        if not batch:
            return copied
        target.insert_many(table, columns, [[row[c] for c in columns] for row in batch])
        copied += len(batch)
        last = int(batch[-1]["id"])


def _verify(source: Database, target: Database, counts: dict[str, int]) -> None:
    """Every table has as many rows in the target as in the source (counters: per name)."""
    for table in TABLES:
        if table == "counters":
            if counters.all_counters(source) != counters.all_counters(target):
                raise RefusedError("the copied counters differ from the source's; nothing "
                                   "was changed")
            continue
        there = int(target.scalar(f"SELECT count(*) FROM {table}"))
        if there != counts[table] or there != int(source.scalar(
                f"SELECT count(*) FROM {table}")):
            raise RefusedError(f"{table}: {there} rows copied of {counts[table]}; nothing was "
                               "changed")


def _store_open_files(settings: Settings, source: Database, target: Database) -> int:
    """The artifact files of the open tasks, into the target's `artifacts` (newer wins)."""
    from orch.engine.stored import local_files
    from orch.state import artifacts

    stored = 0
    for row in source.all("SELECT id FROM tasks WHERE state != 'closed' ORDER BY id"):
        task_id = int(row["id"])
        known = artifacts.mtimes(target, task_id)
        for name, (content, mtime) in sorted(local_files(
                Path(settings.paths.artifacts(task_id))).items()):
            if known.get(name) is None or str(known[name]) < mtime:
                artifacts.store(target, task_id, name, None, content, mtime)
                stored += 1
    return stored
