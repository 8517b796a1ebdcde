"""PostgreSQL's schema in step with SQLite's (SPEC section 11): the same tables and columns,
the same indexes by name, the CHECK of invariant 1 and the partial unique index of
invariant 2 on both; PostgreSQL-only objects are the few orch.state.pg_schema names.
A real PostgreSQL server (support.fixtures.pg_dsn)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.state import open_location
from orch.state.db import Database
from orch.state.pg_schema import PG_MIGRATIONS, PG_ONLY_INDEXES, PG_ONLY_TABLES
from orch.state.schema import MIGRATIONS, SCHEMA_VERSION


def _indexes(db: Database) -> set[str]:
    if db.dialect == "sqlite":
        sql = ("SELECT name FROM sqlite_master WHERE type = 'index' "
               "AND name NOT LIKE 'sqlite_autoindex%'")
    else:
        sql = ("SELECT indexname AS name FROM pg_indexes WHERE schemaname = current_schema() "
               "AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'")
    return {str(row["name"]) for row in db.all(sql)}


@pytest.fixture
def both(tmp_path: Path, pg_dsn: str) -> Iterator[tuple[Database, Database]]:
    lite, pg = open_location(str(tmp_path / "orch.db")), open_location(pg_dsn)
    yield lite, pg
    lite.close()
    pg.close()


def test_the_two_schemas_have_the_same_contract(both: tuple[Database, Database]) -> None:
    lite, pg = both
    assert len(PG_MIGRATIONS) == len(MIGRATIONS) == SCHEMA_VERSION
    assert lite.schema_version() == pg.schema_version() == SCHEMA_VERSION
    tables = set(lite.table_names())
    assert set(pg.table_names()) - set(PG_ONLY_TABLES) == tables
    for table in sorted(tables):
        assert sorted(pg.columns(table)) == sorted(lite.columns(table)), table
    assert _indexes(pg) - set(PG_ONLY_INDEXES) == _indexes(lite)


def test_invariants_1_and_2_are_enforced_by_both(both: tuple[Database, Database]) -> None:
    for db in both:
        with db.transaction():
            task = db.insert("INSERT INTO tasks (repo, title, priority, stage, state, "
                             "created_at, updated_at) VALUES ('app', 't', 0, 'run', 'active', "
                             "'x', 'x') RETURNING id")
            db.execute("INSERT INTO jobs (task_id, stage, runner, status, created_at) "
                       "VALUES (?, 'run', 'command', 'queued', 'x')", (task,))
        with pytest.raises(Exception), db.transaction():  # noqa: B017 (either driver's)
            db.execute("INSERT INTO jobs (task_id, stage, runner, status, created_at) "
                       "VALUES (?, 'run', 'command', 'queued', 'x')", (task,))
        with pytest.raises(Exception), db.transaction():  # noqa: B017
            db.execute("UPDATE jobs SET pid = 1 WHERE task_id = ?", (task,))
