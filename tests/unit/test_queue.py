"""The reason line of `orch queue` for rare cases (orch.engine.commands.queue.explain,
a pure function); the queue through the CLI, with every common cause, is in
tests/cli/test_queue.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orch.engine.commands.queue import ExplainContext, RepoGate, explain
from orch.state.records import Job, Task
from orch.timeutil import to_iso

STAMP = "2026-12-02T00:00:00.000000Z"


def _task(task_id: int, **over: Any) -> Task:
    row = {"id": task_id, "repo": "app", "title": "t", "body": "", "priority": 0,
           "stage": "work", "state": "waiting", "round": 0, "admitted": 0, "paused_at": None,
           "pause_reason": None, "hold_reason": None, "branch": None, "created_at": STAMP,
           "updated_at": STAMP, "hold_kind": None, "moved_at": STAMP}
    return Task.from_row(row | over)


def _job(**over: Any) -> Job:
    row = {column: None for column in Job.columns()}
    row |= {"stage": "work", "runner": "agent", "attempt": 1, "defers": 0, "created_at": STAMP,
            "judged": 1}
    return Job.from_row(row | over)


def test_explain_rare_cases() -> None:
    now = datetime.now(UTC)
    gate = RepoGate("app", 3, holders=(1,), waiting=(5, 6, 7), paused=(), frozen=False)
    ctx = ExplainContext(now=now, gates={"app": gate})
    assert explain(_task(5), ctx) == "next tick admits it (a slot of app is free)"
    assert explain(_task(7), ctx) == "serial gate: the 2 free slots of app go to tasks 5, 6 first"
    one_free = ExplainContext(now=now, gates={"app": RepoGate("app", 2, (1,), (5, 6), (), False)})
    assert explain(_task(6), one_free) == "serial gate: the free slot of app goes to task 5 first"
    assert explain(_task(9, state="needs_input"), ctx) == \
        "needs input: see orch task show 9, then orch resume 9"
    running = _job(id=31, task_id=9, status="running", pid=4242,
                   heartbeat_at=to_iso(now - timedelta(seconds=90)))
    late = ExplainContext(now=now, heartbeat_timeout_s=60, jobs={9: running},
                          running=(running,))
    line = explain(_task(9, state="active", paused_at="x", pause_reason="later"), late)
    assert line.startswith("job 31 running (pid 4242, heartbeat 90 s ago, overdue")
    assert line.endswith("; paused (later) after it")
    assert explain(_task(2, state="closed", stage="done"), ctx) == "closed (done)"
