"""The stage machine as one table (SPEC section 3).

A `Pipeline` is the ordered list of `Stage`s, each knowing its *effective*
runner and role (the `test_runner_enabled` flag is applied once, when the
pipeline is loaded). `next_move` is the one rule book: it maps where a job
stands (stage, round, attempt, defers) and the verdict its run got to a
`Move`, for every verdict, with stages skipped and human stages entered on
the way. `enter` is the same rule for a task arriving at a stage. Both are
pure: no files, no database. The engine carries out Moves and decides
nothing of its own; `check_move` refuses a move that a task's state does
not allow, naming the task, the state and the move.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum
from typing import Any

from orch.errors import IllegalMoveError
from orch.frozen import frozen_record
from orch.model import HoldKind, TaskState, Verdict

DONE, FAILED, CANCELLED = "done", "failed", "cancelled"


@frozen_record
class Stage:
    """One stage as the pipeline file declares it, plus what it effectively runs."""

    name: str
    runner: str                 # as declared (shown by `orch pipeline show`)
    gate: str
    role: str | None = None     # the agent role it runs (the tester when the test-runner is off)
    on_fail: str | None = None
    questions: bool = False
    deliverables: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    job_runner: str = ""        # the runner its jobs use: `agent` for a test-runner stage
                                # whose flag is off, else `runner`

    @property
    def is_human(self) -> bool:
        return self.runner == "human"

    @property
    def runs_agent(self) -> bool:
        return (self.job_runner or self.runner) == "agent"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "runner": self.runner, "role": self.role,
                "gate": self.gate, "on_fail": self.on_fail, "questions": self.questions,
                "deliverables": list(self.deliverables), "command": list(self.command)}


@frozen_record
class Pipeline:
    stages: tuple[Stage, ...]
    source: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    @property
    def first(self) -> Stage:
        return self.stages[0]

    def get(self, name: str) -> Stage | None:
        for stage in self.stages:
            if stage.name == name:
                return stage
        return None

    def after(self, name: str) -> str:
        """The stage after `name`, or `done` after the last."""
        names = self.names
        index = names.index(name)
        return names[index + 1] if index + 1 < len(names) else DONE

    def to_mermaid(self) -> str:
        lines = ["stateDiagram-v2", f"    [*] --> {self.first.name}"]
        for stage in self.stages:
            lines.append(f"    {stage.name} --> {self.after(stage.name)}: PASS")
            if stage.on_fail:
                lines.append(f"    {stage.name} --> {stage.on_fail}: FAIL (round + 1)")
                lines.append(f"    {stage.name} --> failed: FAIL past max_rounds")
        lines.append("    done --> [*]")
        return "\n".join(lines)


class MoveKind(StrEnum):
    """What the engine does to carry a move out."""

    ENTER = "enter"              # the task is at `stage`: a new job there
    WAIT_HUMAN = "wait-human"    # the task is at a human stage: needs_input, no job
    DONE = "done"                # closed as done
    FAILED = "failed"            # closed as failed (max_rounds)
    RETRY = "retry"              # the same job again, as attempt `attempt`
    DEFER = "defer"              # the same job again later, `defers` counted
    HOLD = "hold"                # the task waits for orch retry
    NEEDS_INPUT = "needs-input"  # a person must answer


@frozen_record
class Limits:
    """The bounds a move respects (max_defers is already the stage's own bound)."""

    max_rounds: int
    max_attempts: int
    max_defers: int


@frozen_record
class Position:
    """Where a task's job stands when its verdict comes."""

    stage: str
    round: int
    attempt: int = 1
    defers: int = 0


@frozen_record
class Move:
    """Where a verdict sends a task, and the verdict as applied."""

    verdict: Verdict              # FAIL at a stage without on_fail is applied as RETRY
    kind: MoveKind
    stage: str                    # the task's stage afterwards (`done`/`failed` when closed)
    round: int
    attempt: int = 1
    defers: int = 0
    skipped: tuple[str, ...] = ()  # stages passed over on the way, in order
    hold_kind: HoldKind | None = None
    note: str = ""                # a hold's or a failure's cause ("attempts used up (3 of 3)")
    aside: str = ""               # how the table turned the verdict ("no on_fail: retried")

    @property
    def same_job(self) -> bool:
        return self.kind in (MoveKind.RETRY, MoveKind.DEFER)

    @property
    def closes(self) -> bool:
        return self.kind in (MoveKind.DONE, MoveKind.FAILED)


def enter(pipeline: Pipeline, name: str, round_: int, verdict: Verdict = Verdict.PASS,
          skip: Collection[str] = ()) -> Move:
    """A task arriving at stage `name`: skipped stages passed over, done, a human wait,
    or a new job; a stage that is not in the pipeline holds the task."""
    skipped: list[str] = []
    while name != DONE and name in skip:
        skipped.append(name)
        name = pipeline.after(name)
    if name == DONE:
        return Move(verdict, MoveKind.DONE, DONE, round_, skipped=tuple(skipped))
    stage = pipeline.get(name)
    if stage is None:
        return _stage_gone(verdict, name, round_)
    kind = MoveKind.WAIT_HUMAN if stage.is_human else MoveKind.ENTER
    return Move(verdict, kind, name, round_, skipped=tuple(skipped))


def next_move(pipeline: Pipeline, at: Position, verdict: Verdict, limits: Limits,
              skip: Collection[str] = (), hold_kind: HoldKind = HoldKind.VERDICT) -> Move:
    """The one rule book: a verdict at a position becomes a Move (SPEC section 3).
    A HOLD verdict holds with `hold_kind` (an agent's failed authentication: `auth`)."""
    stage = pipeline.get(at.stage)
    if stage is None:
        return _stage_gone(verdict, at.stage, at.round, at.attempt, at.defers)
    if verdict is Verdict.PASS:
        return enter(pipeline, pipeline.after(at.stage), at.round, verdict, skip)
    if verdict is Verdict.FAIL:
        if stage.on_fail is None:
            return _retry(at, limits, aside="no on_fail: retried")
        if at.round + 1 > limits.max_rounds:
            return Move(verdict, MoveKind.FAILED, FAILED, at.round + 1,
                        note=f"round {at.round + 1} would exceed max_rounds {limits.max_rounds}")
        return enter(pipeline, stage.on_fail, at.round + 1, verdict, skip)
    if verdict is Verdict.RETRY:
        return _retry(at, limits)
    if verdict is Verdict.DEFER:
        defers = at.defers + 1
        if defers > limits.max_defers:
            return _hold(at, HoldKind.DEFERS, f"defers used up ({at.defers} of "
                         f"{limits.max_defers})")
        return Move(verdict, MoveKind.DEFER, at.stage, at.round, at.attempt, defers)
    if verdict is Verdict.HOLD:
        return _hold(at, hold_kind)
    return Move(verdict, MoveKind.NEEDS_INPUT, at.stage, at.round, at.attempt, at.defers)


def _retry(at: Position, limits: Limits, aside: str = "") -> Move:
    attempt = at.attempt + 1
    if attempt > limits.max_attempts:
        return _hold(at, HoldKind.ATTEMPTS,
                     f"attempts used up ({at.attempt} of {limits.max_attempts})", aside)
    return Move(Verdict.RETRY, MoveKind.RETRY, at.stage, at.round, attempt, at.defers,
                aside=aside)


def _hold(at: Position, kind: HoldKind, note: str = "", aside: str = "") -> Move:
    return Move(Verdict.HOLD, MoveKind.HOLD, at.stage, at.round, at.attempt, at.defers,
                hold_kind=kind, note=note, aside=aside)


def _stage_gone(verdict: Verdict, name: str, round_: int, attempt: int = 1,
                defers: int = 0) -> Move:
    del verdict  # whatever it said, a stage that is gone cannot be carried out
    return Move(Verdict.HOLD, MoveKind.HOLD, name, round_, attempt, defers,
                hold_kind=HoldKind.STAGE_GONE, note=stage_gone_reason(name))


def stage_gone_reason(name: str) -> str:
    return f"stage {name!r} is no longer in the pipeline"


def check_move(task_id: int, state: TaskState | str, move: Move) -> None:
    """Raise IllegalMoveError when a task in `state` cannot make `move`.

    An open task (waiting, active, needs_input, held) may receive any move: a
    job judged after its task was paused, released and resumed meets a
    `waiting` task, say. A closed task's story is over: it makes none.
    """
    if TaskState(state) is TaskState.CLOSED:
        raise IllegalMoveError(
            f"task {task_id} is {state}: it cannot {move.kind.value} "
            f"(verdict {move.verdict.value} at stage {move.stage})")
