"""DDL and the ordered migrations (SPEC section 4), for SQLite and (orch.state.pg_schema)
PostgreSQL, one list each, kept in step: version N is the same schema on both.

`PRAGMA user_version` holds SQLite's schema version (PostgreSQL's: the table
`orch_schema`). Each migration runs in its own write transaction (`BEGIN
IMMEDIATE`; on PostgreSQL after an advisory lock) that also bumps the version, so a crash leaves
the file at the previous version, never half-migrated; a second process that
races the first re-reads the version inside its transaction and does nothing.
Migrations only add (tables, columns, indexes), so a supervisor started by an
older orch can still write its heartbeat and exit.
"""

from __future__ import annotations

from pathlib import Path

from orch.errors import DatabaseError
from orch.state.db import Database

QUEUED_IS_CLEAN = """
    CHECK (status != 'queued' OR (run_id IS NULL AND pid IS NULL AND pid_started IS NULL
           AND boot_id IS NULL AND started_at IS NULL AND heartbeat_at IS NULL
           AND heartbeat_mono IS NULL))"""

V1_TABLES = f"""
CREATE TABLE tasks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    repo         TEXT NOT NULL,
    title        TEXT NOT NULL,
    body         TEXT NOT NULL DEFAULT '',
    priority     INTEGER NOT NULL DEFAULT 0,
    stage        TEXT NOT NULL,
    state        TEXT NOT NULL
                 CHECK (state IN ('waiting', 'active', 'needs_input', 'held', 'closed')),
    round        INTEGER NOT NULL DEFAULT 0,
    admitted     INTEGER NOT NULL DEFAULT 0,
    paused_at    TEXT,
    pause_reason TEXT,
    hold_reason  TEXT,
    branch       TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id        INTEGER NOT NULL REFERENCES tasks(id),
    stage          TEXT NOT NULL,
    runner         TEXT NOT NULL,
    status         TEXT NOT NULL
                   CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempt        INTEGER NOT NULL DEFAULT 1,
    defers         INTEGER NOT NULL DEFAULT 0,
    verdict        TEXT,
    run_id         INTEGER,
    pid            INTEGER,
    pid_started    INTEGER,
    host           TEXT,
    boot_id        TEXT,
    started_at     TEXT,
    heartbeat_at   TEXT,
    heartbeat_mono REAL,
    finished_at    TEXT,
    not_before     TEXT,
    exit_code      INTEGER,
    error          TEXT,
    created_at     TEXT NOT NULL,
    judged         INTEGER NOT NULL DEFAULT 1,
    {QUEUED_IS_CLEAN.strip()}
);
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       INTEGER NOT NULL REFERENCES jobs(id),
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    exit_code    INTEGER,
    outcome      TEXT,
    log_path     TEXT,
    pgid         INTEGER,
    pgid_started INTEGER,
    session_id   TEXT,
    cost_usd     REAL,
    tokens       INTEGER,
    attempt      INTEGER NOT NULL DEFAULT 1,
    base_commit  TEXT,
    detail       TEXT
);
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    task_id INTEGER,
    job_id  INTEGER,
    kind    TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT
);
"""

V2_INDEXES_AND_REPOS = """
CREATE TABLE repo_state (
    repo       TEXT PRIMARY KEY,
    frozen     INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT
);
CREATE INDEX tasks_open ON tasks (repo, priority DESC, id) WHERE state != 'closed';
CREATE INDEX jobs_task ON jobs (task_id);
CREATE UNIQUE INDEX jobs_one_open_per_task ON jobs (task_id)
    WHERE status IN ('queued', 'running');
CREATE INDEX jobs_queued ON jobs (id) WHERE status = 'queued';
CREATE INDEX jobs_running ON jobs (id) WHERE status = 'running';
CREATE INDEX jobs_unjudged ON jobs (id)
    WHERE judged = 0 AND status IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX runs_job ON runs (job_id);
CREATE INDEX runs_started ON runs (started_at);
CREATE INDEX events_task ON events (task_id, id);
CREATE INDEX events_at ON events (at);
INSERT OR IGNORE INTO counters (name, value) VALUES
    ('impossible_queued_total', 0), ('reaped_total', 0),
    ('ticks_total', 0), ('claims_total', 0);
"""

# The tick asks for `active` tasks that need a job and for `held` tasks on a day
# budget; without these each tick scans every closed task of the history
# (bench/run.py, docs/performance.md). Partial indexes hold open tasks only, so
# they stay small, and the claim's join keeps driving from `jobs_queued`.
V3_OPEN_TASKS_BY_STATE = """
CREATE INDEX tasks_active ON tasks (priority DESC, id) WHERE state = 'active';
CREATE INDEX tasks_held ON tasks (id) WHERE state = 'held';
"""

# The kind of a hold is data (`hold_kind`), never parsed from a reason's text. Rows held
# by an older orch get their kind from what that orch wrote, once, here.
V4_HOLD_KIND = """
ALTER TABLE tasks ADD COLUMN hold_kind TEXT;
UPDATE tasks SET hold_kind = CASE
    WHEN hold_reason = 'budget' THEN CASE
        WHEN (SELECT detail FROM events WHERE events.task_id = tasks.id AND kind = 'budget'
              ORDER BY id DESC LIMIT 1) LIKE 'day ceiling%' THEN 'budget-day'
        ELSE 'budget-task' END
    WHEN hold_reason LIKE 'attempts used up%' THEN 'attempts'
    WHEN hold_reason LIKE 'defers used up%' THEN 'defers'
    WHEN hold_reason LIKE 'stage % is no longer in the pipeline' THEN 'stage-gone'
    ELSE 'verdict' END
WHERE state = 'held';
CREATE INDEX tasks_held_kind ON tasks (hold_kind) WHERE state = 'held';
"""

# A tick reads only what can change this tick (issue: flat tick cost): the serial gate
# reads the admitted tasks and, per repo with a free slot, the first waiting ones; the
# sanitize phase finds dirty queued rows and the enqueue phase a task's open or unjudged
# job through indexes of their own, whatever the number of waiting or queued rows.
# `moved_at` is when the task's stage or state last changed (`orch queue`).
V5_FLAT_TICK = """
CREATE INDEX tasks_waiting ON tasks (repo, priority DESC, id)
    WHERE state = 'waiting' AND paused_at IS NULL;
CREATE INDEX tasks_admitted ON tasks (repo) WHERE admitted = 1;
CREATE INDEX tasks_admitted_paused ON tasks (id) WHERE admitted = 1 AND paused_at IS NOT NULL;
CREATE INDEX jobs_queued_dirty ON jobs (id) WHERE status = 'queued' AND (run_id IS NOT NULL
    OR pid IS NOT NULL OR pid_started IS NOT NULL OR boot_id IS NOT NULL
    OR started_at IS NOT NULL OR heartbeat_at IS NOT NULL OR heartbeat_mono IS NOT NULL);
CREATE INDEX jobs_unjudged_task ON jobs (task_id)
    WHERE judged = 0 AND status IN ('succeeded', 'failed', 'cancelled');
ALTER TABLE tasks ADD COLUMN moved_at TEXT;
UPDATE tasks SET moved_at = updated_at
"""

# What an agent's own output said about its run: how many permission denials it
# reported (shown, left to the gate) and the fault it named (`auth`: a HOLD).
V6_RUN_DENIALS_AND_FAULT = """
ALTER TABLE runs ADD COLUMN denials INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN fault TEXT;
"""

# The money the agents' runs cost, as a counter (in micro-USD: counters are integers) that
# `orch metrics` shows as orch_cost_usd_total; it starts from what the runs recorded so far.
V7_COST_COUNTER = """
INSERT INTO counters (name, value)
    SELECT 'cost_microusd_total', CAST(round(coalesce(sum(cost_usd), 0) * 1000000) AS INTEGER)
    FROM runs WHERE true
ON CONFLICT (name) DO NOTHING;
"""

# Several hosts (SPEC section 11): each task's host, each run's host and log tail, the
# hosts' heartbeat rows, and the judged artifacts, so that every host reads the same.
V8_HOSTS = """
ALTER TABLE tasks ADD COLUMN host TEXT;
ALTER TABLE runs ADD COLUMN host TEXT;
ALTER TABLE runs ADD COLUMN log_tail TEXT;
CREATE TABLE hosts (
    name                 TEXT PRIMARY KEY,
    boot_id              TEXT,
    last_seen            TEXT NOT NULL,
    version              TEXT,
    repos                TEXT NOT NULL DEFAULT '[]',
    max_concurrency      INTEGER,
    host_max_concurrency INTEGER,
    repo_limits          TEXT NOT NULL DEFAULT '{}',
    home                 TEXT,
    last_tick_at         TEXT
);
CREATE TABLE artifacts (
    task_id INTEGER NOT NULL REFERENCES tasks(id),
    name    TEXT NOT NULL,
    run_id  INTEGER,
    content TEXT NOT NULL,
    mtime   TEXT,
    PRIMARY KEY (task_id, name)
);
CREATE INDEX tasks_open_host ON tasks (host) WHERE state != 'closed';
"""

MIGRATIONS: tuple[str, ...] = (V1_TABLES, V2_INDEXES_AND_REPOS, V3_OPEN_TASKS_BY_STATE,
                               V4_HOLD_KIND, V5_FLAT_TICK, V6_RUN_DENIALS_AND_FAULT,
                               V7_COST_COUNTER, V8_HOSTS)
SCHEMA_VERSION = len(MIGRATIONS)


def migrations_for(db: Database) -> tuple[str, ...]:
    """The migration scripts of DB's backend."""
    if db.dialect == "sqlite":
        return MIGRATIONS
    from orch.state.pg_schema import PG_MIGRATIONS

    return PG_MIGRATIONS


def migrate(db: Database, target: int = SCHEMA_VERSION) -> int:
    """Bring the state to `target`, one transaction per migration; refuse a newer one."""
    scripts = migrations_for(db)
    current = db.schema_version()
    if current > SCHEMA_VERSION:
        raise DatabaseError(
            f"{db.location}: schema version {current} is newer than this orch understands "
            f"({SCHEMA_VERSION}); upgrade orch")
    db.prepare()
    if current >= target:
        return current
    while current < target:
        with db.transaction():
            db.lock_key("orch:migrate")  # PostgreSQL: migrating hosts take turns
            current = db.schema_version()  # another process may have migrated meanwhile
            if current >= target:
                break
            db.script(scripts[current])
            current += 1
            db.set_schema_version(current)
    return current


def open_database(path: Path, create: bool = True) -> Database:
    """Open (and migrate) the state file; exit 5 for a corrupt or newer file."""
    if not path.exists() and not create:
        raise DatabaseError(f"{path}: no database (run orch init)")
    if path.exists() and path.is_dir():
        raise DatabaseError(f"{path}: is a directory, not a database")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot create its directory: {exc.strerror or exc}") from exc
    from orch.state.sqlite import SqliteDatabase

    db = SqliteDatabase(path)
    try:
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db
