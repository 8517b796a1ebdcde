"""The vocabulary shared by every layer: states, statuses, verdicts, outcomes.

str Enums so they compare equal to the strings stored in the database.
"""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    WAITING = "waiting"
    ACTIVE = "active"
    NEEDS_INPUT = "needs_input"
    HELD = "held"
    CLOSED = "closed"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Verdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    RETRY = "RETRY"
    DEFER = "DEFER"
    HOLD = "HOLD"
    NEEDS_INPUT = "NEEDS_INPUT"


class HoldKind(StrEnum):
    """Why a task is held, as data (the reason text is for people)."""

    ATTEMPTS = "attempts"        # max_attempts used up
    DEFERS = "defers"            # max_defers (or transient_retries) used up
    VERDICT = "verdict"          # a gate or runner said HOLD (permanent fault, blocked merge)
    STAGE_GONE = "stage-gone"    # its stage is no longer in the pipeline
    BUDGET_TASK = "budget-task"  # the task's cost ceiling: waits for orch retry
    BUDGET_DAY = "budget-day"    # the day's cost ceiling: lifts itself the next UTC day
    AUTH = "auth"                # the agent could not authenticate: a person must fix the key
    LEFTOVER = "leftover"        # a dead run's leftover could not be signalled
    HOST_GONE = "host-gone"      # the host it was pinned to is dead


class RunOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    HOLLOW_SUCCESS = "hollow-success"
    REAPED = "reaped"
    CANCELLED = "cancelled"
    DEFERRED = "deferred"


TERMINAL_STAGES = ("done", "failed", "cancelled")
RUNNERS = ("agent", "test-runner", "staging-runner", "merge", "command", "human")
GATES = (
    "analysis_ready",
    "dev_done",
    "review_approved",
    "tests_passed",
    "staging_passed",
    "merged",
    "exit_zero",
    "approved",
)
DEFAULT_GATE = {
    "test-runner": "tests_passed",
    "staging-runner": "staging_passed",
    "merge": "merged",
    "command": "exit_zero",
    "human": "approved",
}
