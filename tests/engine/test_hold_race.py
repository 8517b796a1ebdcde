"""A hold never reopens a task cancelled meanwhile (SPEC section 4).

Before: `hold()` wrote the task from the caller's stale read, so a budget check or a
verdict that raced `orch cancel` reopened the cancelled task as `held`.
"""

from __future__ import annotations

from support.engine import EngineHome

from orch.engine.context import Engine
from orch.engine.moves import hold
from orch.model import HoldKind
from orch.state import tasks as tasks_state


def test_a_hold_read_before_an_orch_cancel_leaves_the_task_cancelled(eh: EngineHome) -> None:
    """A slow tick read the task (a budget check, the reaper), `orch cancel` closed it,
    then the tick's hold arrived: the task stays closed, no `held` event."""
    task = eh.add_task("races")
    settings = eh.settings()
    with eh.database() as db:
        stale = tasks_state.get(db, task)
        assert stale is not None and not stale.closed
        done = eh.cli("cancel", str(task))
        assert done.returncode == 0, done.stderr
        engine = Engine(settings, eh.pipeline(settings), db)
        assert hold(engine, stale, None, "budget", HoldKind.BUDGET_TASK) is False
    after = eh.task(task)
    assert after["state"] == "closed" and after["hold_kind"] is None
    assert eh.events(task, "held") == []
