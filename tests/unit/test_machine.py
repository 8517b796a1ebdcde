"""The stage machine as one table: every verdict at every kind of stage (orch.machine)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orch import machine
from orch.errors import IllegalMoveError
from orch.machine import Limits, Move, MoveKind, Pipeline, Position, Stage
from orch.model import HoldKind, TaskState, Verdict

LIMITS = Limits(max_rounds=3, max_attempts=3, max_defers=5)


def stage(name: str, runner: str = "agent", **kw: object) -> Stage:
    return Stage(name=name, runner=runner, gate=str(kw.pop("gate", "exit_zero")),
                 job_runner=runner, **kw)  # type: ignore[arg-type]


PIPELINE = Pipeline((
    stage("analysis", role="analyst"),
    stage("development", role="developer"),
    stage("review", role="reviewer", on_fail="development"),
    stage("testing", "test-runner", on_fail="development"),
    stage("staging", "staging-runner", on_fail="development"),
    stage("approval", "human", on_fail="development"),
    stage("merge", "merge", on_fail="development"),
), "test")


def move(at: str, verdict: Verdict, round_: int = 0, attempt: int = 1, defers: int = 0,
         skip: frozenset[str] = frozenset(), limits: Limits = LIMITS) -> Move:
    return machine.next_move(PIPELINE, Position(at, round_, attempt, defers), verdict, limits,
                             skip)


def test_pass_goes_to_the_next_stage_with_a_new_job() -> None:
    got = move("analysis", Verdict.PASS)
    assert (got.kind, got.stage, got.round, got.verdict) == (MoveKind.ENTER, "development", 0,
                                                             Verdict.PASS)
    assert not got.same_job


def test_pass_at_the_last_stage_closes_the_task_as_done() -> None:
    got = move("merge", Verdict.PASS, round_=2)
    assert (got.kind, got.stage, got.round) == (MoveKind.DONE, "done", 2)
    assert got.closes


def test_pass_passes_over_skipped_stages_in_order() -> None:
    got = move("testing", Verdict.PASS, skip=frozenset({"staging"}))
    assert (got.kind, got.stage, got.skipped) == (MoveKind.WAIT_HUMAN, "approval", ("staging",))


def test_pass_into_a_human_stage_waits_for_a_person() -> None:
    got = move("staging", Verdict.PASS)
    assert (got.kind, got.stage) == (MoveKind.WAIT_HUMAN, "approval")


def test_skipping_the_last_stages_ends_done() -> None:
    got = move("approval", Verdict.PASS, skip=frozenset({"merge"}))
    assert (got.kind, got.stage, got.skipped) == (MoveKind.DONE, "done", ("merge",))


def test_fail_goes_to_on_fail_one_round_later() -> None:
    got = move("review", Verdict.FAIL, round_=1)
    assert (got.kind, got.stage, got.round, got.verdict) == (MoveKind.ENTER, "development", 2,
                                                             Verdict.FAIL)


def test_fail_past_max_rounds_closes_the_task_as_failed() -> None:
    got = move("testing", Verdict.FAIL, round_=3)
    assert (got.kind, got.stage, got.round) == (MoveKind.FAILED, "failed", 4)
    assert "max_rounds 3" in got.note


def test_max_rounds_one_allows_exactly_one_return() -> None:
    one = Limits(max_rounds=1, max_attempts=3, max_defers=5)
    assert move("review", Verdict.FAIL, round_=0, limits=one).kind is MoveKind.ENTER
    assert move("review", Verdict.FAIL, round_=1, limits=one).kind is MoveKind.FAILED


def test_fail_without_on_fail_is_applied_as_retry() -> None:
    got = move("development", Verdict.FAIL, attempt=1)
    assert (got.kind, got.verdict, got.attempt, got.stage) == (MoveKind.RETRY, Verdict.RETRY, 2,
                                                               "development")
    assert got.aside == "no on_fail: retried"


def test_fail_without_on_fail_holds_once_attempts_are_used_up() -> None:
    got = move("development", Verdict.FAIL, attempt=3)
    assert (got.kind, got.hold_kind) == (MoveKind.HOLD, HoldKind.ATTEMPTS)
    assert got.note == "attempts used up (3 of 3)" and got.aside == "no on_fail: retried"


def test_retry_is_the_same_job_as_a_new_attempt() -> None:
    got = move("analysis", Verdict.RETRY, attempt=2, defers=1)
    assert (got.kind, got.stage, got.attempt, got.defers) == (MoveKind.RETRY, "analysis", 3, 1)
    assert got.same_job


def test_retry_that_would_start_attempt_max_plus_one_holds() -> None:
    got = move("analysis", Verdict.RETRY, attempt=3)
    assert (got.kind, got.verdict, got.hold_kind) == (MoveKind.HOLD, Verdict.HOLD,
                                                      HoldKind.ATTEMPTS)


def test_defer_counts_defers_apart_from_attempts() -> None:
    got = move("staging", Verdict.DEFER, attempt=2, defers=4)
    assert (got.kind, got.attempt, got.defers) == (MoveKind.DEFER, 2, 5)


def test_the_defer_past_max_defers_holds() -> None:
    got = move("staging", Verdict.DEFER, defers=5)
    assert (got.kind, got.hold_kind) == (MoveKind.HOLD, HoldKind.DEFERS)
    assert got.note == "defers used up (5 of 5)"


def test_hold_and_needs_input_stay_at_the_stage() -> None:
    held = move("staging", Verdict.HOLD, round_=1)
    assert (held.kind, held.stage, held.round, held.hold_kind) == (MoveKind.HOLD, "staging", 1,
                                                                   HoldKind.VERDICT)
    asked = move("analysis", Verdict.NEEDS_INPUT)
    assert (asked.kind, asked.stage) == (MoveKind.NEEDS_INPUT, "analysis")


@pytest.mark.parametrize("verdict", list(Verdict))
def test_a_stage_that_left_the_pipeline_holds_whatever_the_verdict(verdict: Verdict) -> None:
    got = move("gone", verdict)
    assert (got.kind, got.hold_kind, got.stage) == (MoveKind.HOLD, HoldKind.STAGE_GONE, "gone")
    assert got.note == "stage 'gone' is no longer in the pipeline"


def test_enter_resolves_skips_humans_and_missing_stages() -> None:
    assert machine.enter(PIPELINE, "testing", 0).kind is MoveKind.ENTER
    assert machine.enter(PIPELINE, "approval", 0).kind is MoveKind.WAIT_HUMAN
    assert machine.enter(PIPELINE, "staging", 1, skip={"staging"}).stage == "approval"
    assert machine.enter(PIPELINE, "done", 0).kind is MoveKind.DONE
    assert machine.enter(PIPELINE, "nope", 0).hold_kind is HoldKind.STAGE_GONE


def test_a_closed_task_makes_no_move() -> None:
    with pytest.raises(IllegalMoveError) as raised:
        machine.check_move(42, TaskState.CLOSED, move("analysis", Verdict.PASS))
    text = str(raised.value)
    assert "task 42" in text and "closed" in text and "enter" in text


@pytest.mark.parametrize("state", [s for s in TaskState if s is not TaskState.CLOSED])
def test_an_open_task_may_receive_any_move(state: TaskState) -> None:
    for verdict in Verdict:
        machine.check_move(1, state, move("review", verdict))


@given(at=st.sampled_from((*PIPELINE.names, "gone")), verdict=st.sampled_from(list(Verdict)),
       round_=st.integers(0, 5), attempt=st.integers(1, 5), defers=st.integers(0, 7),
       skip=st.frozensets(st.sampled_from(["staging", "merge", "approval"])))
def test_every_move_respects_the_limits(at: str, verdict: Verdict, round_: int, attempt: int,
                                        defers: int, skip: frozenset[str]) -> None:
    got = move(at, verdict, round_, attempt, defers, skip)
    assert got.round <= max(round_, LIMITS.max_rounds) or got.kind is MoveKind.FAILED
    assert got.attempt <= LIMITS.max_attempts or got.kind is MoveKind.HOLD \
        or attempt > LIMITS.max_attempts
    assert got.defers <= LIMITS.max_defers or defers > LIMITS.max_defers
    assert not set(got.skipped) - skip
    assert got.stage not in skip or got.stage == at  # a move never lands on a skipped stage
    if got.kind is MoveKind.HOLD:
        assert got.hold_kind is not None and got.verdict is Verdict.HOLD
    if got.same_job:
        assert got.stage == at and got.round == round_
