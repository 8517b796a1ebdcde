"""The state's queries use indexes: nothing a tick or `orch metrics` asks scans the history.

Tasks, jobs, runs and events grow with every task ever run, so each SELECT is
traced and its EXPLAIN QUERY PLAN must name an index for those tables.
(`orch queue`'s queries are checked beside the queue, tests/cli/test_queue.py.)
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from orch.cli.context import AppContext
from orch.state import maint
from orch.state.schema import open_database


def test_every_tick_query_over_history_uses_an_index(orch_home: Path) -> None:
    """No SELECT of a tick scans tasks, jobs, runs or events (they grow with history)."""
    from orch.engine.tick import run_tick

    db_path = orch_home / "orch.db"
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO tasks (id, repo, title, stage, state, created_at, updated_at) "
        "VALUES (?, 'app', 't', 'done', 'closed', '2025-01-01', '2025-01-01')",
        [(i,) for i in range(1, 301)])
    conn.executemany(
        "INSERT INTO jobs (task_id, stage, runner, status, verdict, judged, created_at) "
        "VALUES (?, 'review', 'agent', 'succeeded', 'PASS', 1, '2025-01-01')",
        [(i % 300 + 1,) for i in range(1500)])
    conn.executemany(  # open tasks in every state a tick looks for
        "INSERT INTO tasks (repo, title, stage, state, admitted, hold_reason, created_at, "
        "updated_at) VALUES ('app', 'open', 'analysis', ?, ?, ?, '2025-01-01', '2025-01-01')",
        [("waiting", 0, None), ("held", 1, "budget"), ("needs_input", 1, None)])
    conn.execute("COMMIT")
    conn.close()

    ctx = AppContext(home_option=str(orch_home))
    statements: list[str] = []
    ctx.db.conn.set_trace_callback(statements.append)
    run_tick(ctx.settings, ctx.pipeline, ctx.db, max_claims=1)
    ctx.db.conn.set_trace_callback(None)
    selects = {s for s in statements if s.lstrip().upper().startswith("SELECT")}
    assert selects
    scans = {}
    for sql in selects:
        plan = [row[3] for row in ctx.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
        full = [step for step in plan
                if step.split()[:2] in (["SCAN", "tasks"], ["SCAN", "jobs"], ["SCAN", "runs"],
                                        ["SCAN", "events"]) and "INDEX" not in step]
        if full:
            scans[sql] = full
    ctx.close()
    assert not scans, scans


def test_metrics_queries_read_open_tasks_through_an_index(tmp_path: Path) -> None:
    db = open_database(tmp_path / "orch.db")
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    maint.open_task_counts(db)
    maint.oldest_waiting_since(db)
    db.conn.set_trace_callback(None)
    assert len(statements) == 2
    for sql in statements:  # an index of open tasks/states, never a scan of the history
        plan = " ".join(str(row[3]) for row in db.conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (sql, plan)
        assert not re.search(r"SCAN tasks(?! USING)", plan), (sql, plan)
    db.close()
