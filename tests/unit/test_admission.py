"""The serial gate's pure rules: who holds a slot, who is admitted next (SPEC 4, 5.4, 7)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orch.engine.tick.admit import choose_admissions, occupies_slot
from orch.model import TaskState
from orch.state.records import Task


def task(id_: int, state: TaskState = TaskState.WAITING, *, admitted: bool = False,
         paused: bool = False, priority: int = 0) -> Task:
    return Task(id=id_, repo="app", title=f"t{id_}", body="", priority=priority,
                stage="analysis", state=state, round=0, admitted=admitted,
                paused_at="2026-12-02T00:00:00.000000Z" if paused else None,
                pause_reason="x" if paused else None, hold_reason=None, branch=None,
                created_at="2026-12-02T00:00:00.000000Z",
                updated_at="2026-12-02T00:00:00.000000Z")


def test_an_admitted_task_holds_its_slot_unless_paused_without_a_running_job() -> None:
    assert occupies_slot(task(1, TaskState.ACTIVE, admitted=True), set())
    assert occupies_slot(task(1, TaskState.HELD, admitted=True), set())
    assert occupies_slot(task(1, TaskState.NEEDS_INPUT, admitted=True), set())
    assert not occupies_slot(task(1, TaskState.ACTIVE, admitted=True, paused=True), set())
    assert occupies_slot(task(1, TaskState.ACTIVE, admitted=True, paused=True), {1})
    assert not occupies_slot(task(1, TaskState.WAITING), set())
    assert not occupies_slot(task(1, TaskState.CLOSED, admitted=True), set())


def test_fifo_by_priority_then_id_within_the_free_slots() -> None:
    rows = [task(3), task(1), task(2, priority=5), task(4, TaskState.ACTIVE, admitted=True)]
    assert choose_admissions(rows, 3, gate_enabled=True, frozen=False,
                             running_tasks=set()) == [2, 1]


def test_paused_waiting_tasks_are_skipped_and_do_not_block() -> None:
    rows = [task(1, paused=True), task(2)]
    assert choose_admissions(rows, 1, gate_enabled=True, frozen=False,
                             running_tasks=set()) == [2]


def test_frozen_repos_admit_nothing_and_the_gate_off_admits_everyone() -> None:
    rows = [task(1), task(2), task(3, TaskState.ACTIVE, admitted=True)]
    assert choose_admissions(rows, 1, gate_enabled=True, frozen=True, running_tasks=set()) == []
    assert choose_admissions(rows, 1, gate_enabled=False, frozen=False,
                             running_tasks=set()) == [1, 2]


def test_a_paused_task_with_a_running_job_keeps_its_slot() -> None:
    rows = [task(1, TaskState.ACTIVE, admitted=True, paused=True), task(2)]
    assert choose_admissions(rows, 1, gate_enabled=True, frozen=False, running_tasks={1}) == []
    assert choose_admissions(rows, 1, gate_enabled=True, frozen=False,
                             running_tasks=set()) == [2]


states = st.sampled_from([TaskState.WAITING, TaskState.ACTIVE, TaskState.HELD,
                          TaskState.NEEDS_INPUT])


@given(st.lists(st.tuples(states, st.booleans(), st.booleans(), st.integers(-2, 2)),
                max_size=12), st.integers(1, 4), st.sets(st.integers(0, 11)))
def test_admissions_never_exceed_max_active(specs: list[tuple[TaskState, bool, bool, int]],
                                            max_active: int, running: set[int]) -> None:
    rows = [task(i, state, admitted=state is not TaskState.WAITING and admitted, paused=paused,
                 priority=prio) for i, (state, admitted, paused, prio) in enumerate(specs)]
    chosen = choose_admissions(rows, max_active, gate_enabled=True, frozen=False,
                               running_tasks=running)
    holding = sum(1 for row in rows if occupies_slot(row, running))
    assert len(chosen) <= max(0, max_active - holding)
    assert all(rows[i].state is TaskState.WAITING and not rows[i].paused for i in chosen)
