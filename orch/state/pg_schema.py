"""PostgreSQL's DDL, one migration for each of SQLite's (orch.state.schema).

Version N means the same tables, columns, CHECKs and indexes on both
backends; tests/state/test_pg_schema.py fails when a table, a column or an
index differs. The types map one to one:
SQLite's INTEGER is `bigint` (ids are `bigserial`, so a copy may keep its
ids and the sequence is moved past them), REAL is `double precision`, TEXT is
`text` (timestamps stay ISO-8601 strings, as the contract says). Flags stay
0/1 integers, so every query means the same on both.

What only PostgreSQL has (several hosts at once) comes with the migration
that needs it: `run_slots` and the trigger that frees a job's slots in the
same transaction that moves it out of `running` (orch.state.claims).
"""

from __future__ import annotations

QUEUED_IS_CLEAN = """
    CONSTRAINT jobs_queued_is_clean
    CHECK (status != 'queued' OR (run_id IS NULL AND pid IS NULL AND pid_started IS NULL
           AND boot_id IS NULL AND started_at IS NULL AND heartbeat_at IS NULL
           AND heartbeat_mono IS NULL))"""

V1_TABLES = f"""
CREATE TABLE tasks (
    id           bigserial PRIMARY KEY,
    repo         text NOT NULL,
    title        text NOT NULL,
    body         text NOT NULL DEFAULT '',
    priority     bigint NOT NULL DEFAULT 0,
    stage        text NOT NULL,
    state        text NOT NULL
                 CHECK (state IN ('waiting', 'active', 'needs_input', 'held', 'closed')),
    round        bigint NOT NULL DEFAULT 0,
    admitted     bigint NOT NULL DEFAULT 0,
    paused_at    text,
    pause_reason text,
    hold_reason  text,
    branch       text,
    created_at   text NOT NULL,
    updated_at   text NOT NULL
);
CREATE TABLE jobs (
    id             bigserial PRIMARY KEY,
    task_id        bigint NOT NULL REFERENCES tasks(id),
    stage          text NOT NULL,
    runner         text NOT NULL,
    status         text NOT NULL
                   CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempt        bigint NOT NULL DEFAULT 1,
    defers         bigint NOT NULL DEFAULT 0,
    verdict        text,
    run_id         bigint,
    pid            bigint,
    pid_started    bigint,
    host           text,
    boot_id        text,
    started_at     text,
    heartbeat_at   text,
    heartbeat_mono double precision,
    finished_at    text,
    not_before     text,
    exit_code      bigint,
    error          text,
    created_at     text NOT NULL,
    judged         bigint NOT NULL DEFAULT 1,
    {QUEUED_IS_CLEAN.strip()}
);
CREATE TABLE runs (
    id           bigserial PRIMARY KEY,
    job_id       bigint NOT NULL REFERENCES jobs(id),
    started_at   text NOT NULL,
    finished_at  text,
    exit_code    bigint,
    outcome      text,
    log_path     text,
    pgid         bigint,
    pgid_started bigint,
    session_id   text,
    cost_usd     double precision,
    tokens       bigint,
    attempt      bigint NOT NULL DEFAULT 1,
    base_commit  text,
    detail       text
);
CREATE TABLE events (
    id      bigserial PRIMARY KEY,
    at      text NOT NULL,
    task_id bigint,
    job_id  bigint,
    kind    text NOT NULL,
    detail  text NOT NULL DEFAULT ''
);
CREATE TABLE counters (
    name  text PRIMARY KEY,
    value bigint NOT NULL DEFAULT 0
);
CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text
);
"""

V2_INDEXES_AND_REPOS = """
CREATE TABLE repo_state (
    repo       text PRIMARY KEY,
    frozen     bigint NOT NULL DEFAULT 0,
    updated_at text
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
INSERT INTO counters (name, value) VALUES
    ('impossible_queued_total', 0), ('reaped_total', 0),
    ('ticks_total', 0), ('claims_total', 0) ON CONFLICT DO NOTHING;
"""

V3_OPEN_TASKS_BY_STATE = """
CREATE INDEX tasks_active ON tasks (priority DESC, id) WHERE state = 'active';
CREATE INDEX tasks_held ON tasks (id) WHERE state = 'held';
"""

# No rows an older orch held can exist in a PostgreSQL state (it is new with section 11).
V4_HOLD_KIND = """
ALTER TABLE tasks ADD COLUMN hold_kind text;
CREATE INDEX tasks_held_kind ON tasks (hold_kind) WHERE state = 'held';
"""

# The flat-tick indexes and `tasks.moved_at` (orch.state.schema.V5_FLAT_TICK).
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
ALTER TABLE tasks ADD COLUMN moved_at text;
UPDATE tasks SET moved_at = updated_at;
"""

# What an agent's output said about its run (orch.state.schema.V6_RUN_DENIALS_AND_FAULT).
V6_RUN_DENIALS_AND_FAULT = """
ALTER TABLE runs ADD COLUMN denials bigint NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN fault text;
"""

# The agents' cost as a counter (orch.state.schema.V7_COST_COUNTER).
V7_COST_COUNTER = """
INSERT INTO counters (name, value)
    SELECT 'cost_microusd_total', CAST(round(coalesce(sum(cost_usd), 0) * 1000000) AS bigint)
    FROM runs
ON CONFLICT (name) DO NOTHING;
"""

V8_HOSTS = """
ALTER TABLE tasks ADD COLUMN host text;
ALTER TABLE runs ADD COLUMN host text;
ALTER TABLE runs ADD COLUMN log_tail text;
CREATE TABLE hosts (
    name                 text PRIMARY KEY,
    boot_id              text,
    last_seen            text NOT NULL,
    version              text,
    repos                text NOT NULL DEFAULT '[]',
    max_concurrency      bigint,
    host_max_concurrency bigint,
    repo_limits          text NOT NULL DEFAULT '{}',
    home                 text,
    last_tick_at         text
);
CREATE TABLE artifacts (
    task_id bigint NOT NULL REFERENCES tasks(id),
    name    text NOT NULL,
    run_id  bigint,
    content text NOT NULL,
    mtime   text,
    PRIMARY KEY (task_id, name)
);
CREATE INDEX tasks_open_host ON tasks (host) WHERE state != 'closed';
CREATE TABLE run_slots (
    scope  text NOT NULL,
    n      integer NOT NULL,
    job_id bigint,
    PRIMARY KEY (scope, n),
    UNIQUE (scope, job_id)
);
CREATE INDEX run_slots_job ON run_slots (job_id) WHERE job_id IS NOT NULL;
CREATE FUNCTION orch_release_run_slots() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE run_slots SET job_id = NULL WHERE job_id = OLD.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_release_run_slots AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running')
    EXECUTE FUNCTION orch_release_run_slots();
"""

PG_MIGRATIONS: tuple[str, ...] = (V1_TABLES, V2_INDEXES_AND_REPOS, V3_OPEN_TASKS_BY_STATE,
                                  V4_HOLD_KIND, V5_FLAT_TICK, V6_RUN_DENIALS_AND_FAULT,
                                  V7_COST_COUNTER, V8_HOSTS)
# Tables only PostgreSQL needs (several hosts claiming at once); the schema test allows them.
PG_ONLY_TABLES = ("run_slots", "orch_schema")
PG_ONLY_INDEXES = ("run_slots_job",)
