"""Typed rows: what the state layer hands to the layers above it.

Each record is frozen and holds every column of its table, in table order,
with the statuses as enums (`TaskState`, `JobStatus`, `Verdict`,
`RunOutcome`, `HoldKind`). `as_dict()` gives the row back as the database
stores it (0/1 for flags), which is what every `--json` output prints. A
value that is not a known enum member (a row edited by hand) is kept as the
plain string it is, so reading a corrupted row never crashes a tick; the
str enums compare equal to their strings either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from orch.frozen import frozen_record
from orch.model import HoldKind, JobStatus, RunOutcome, TaskState, Verdict

_E = TypeVar("_E", bound=StrEnum)
_R = TypeVar("_R", bound="_Record")


def _enum(kind: type[_E], value: Any) -> Any:
    """`kind(value)`, the raw value when it is no member, None for None."""
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        return value


class _Record:
    """Shared construction from a row and conversion back to one."""

    _ENUMS: ClassVar[dict[str, type[StrEnum]]] = {}
    _FLAGS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_row(cls: type[_R], row: Mapping[str, Any]) -> _R:
        # a column a row lacks (added by a later migration) takes the field's default
        values = {name: row[name] for name in cls.columns() if name in row}
        for name, kind in cls._ENUMS.items():
            values[name] = _enum(kind, values.get(name))
        for name in cls._FLAGS:
            values[name] = bool(values[name])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The row as stored: enums as their strings, flags as 0/1."""
        row = {name: getattr(self, name) for name in self.columns()}
        for name in self._ENUMS:
            if row[name] is not None:
                row[name] = str(row[name])
        for name in self._FLAGS:
            row[name] = int(row[name])
        return row


@frozen_record
class Task(_Record):
    id: int
    repo: str
    title: str
    body: str
    priority: int
    stage: str
    state: TaskState
    round: int
    admitted: bool
    paused_at: str | None
    pause_reason: str | None
    hold_reason: str | None
    branch: str | None
    created_at: str
    updated_at: str
    hold_kind: HoldKind | None = None
    moved_at: str | None = None
    host: str | None = None  # the host it is pinned to (SPEC section 11)

    _ENUMS: ClassVar[dict[str, type[StrEnum]]] = {"state": TaskState, "hold_kind": HoldKind}
    _FLAGS: ClassVar[tuple[str, ...]] = ("admitted",)

    @property
    def closed(self) -> bool:
        return self.state == TaskState.CLOSED

    @property
    def paused(self) -> bool:
        return bool(self.paused_at)


@frozen_record
class Job(_Record):
    id: int
    task_id: int
    stage: str
    runner: str
    status: JobStatus
    attempt: int
    defers: int
    verdict: Verdict | None
    run_id: int | None
    pid: int | None
    pid_started: int | None
    host: str | None
    boot_id: str | None
    started_at: str | None
    heartbeat_at: str | None
    heartbeat_mono: float | None
    finished_at: str | None
    not_before: str | None
    exit_code: int | None
    error: str | None
    created_at: str
    judged: bool

    _ENUMS: ClassVar[dict[str, type[StrEnum]]] = {"status": JobStatus, "verdict": Verdict}
    _FLAGS: ClassVar[tuple[str, ...]] = ("judged",)

    @property
    def open(self) -> bool:
        return self.status in (JobStatus.QUEUED, JobStatus.RUNNING)


@frozen_record
class Run(_Record):
    id: int
    job_id: int
    started_at: str
    finished_at: str | None
    exit_code: int | None
    outcome: RunOutcome | None
    log_path: str | None
    pgid: int | None
    pgid_started: int | None
    session_id: str | None
    cost_usd: float | None
    tokens: int | None
    attempt: int
    base_commit: str | None
    detail: str | None
    denials: int
    fault: str | None
    host: str | None = None  # the host it ran on (its log is there)

    _ENUMS: ClassVar[dict[str, type[StrEnum]]] = {"outcome": RunOutcome}


@frozen_record
class Event(_Record):
    id: int
    at: str
    task_id: int | None
    job_id: int | None
    kind: str
    detail: str


@frozen_record
class Host:
    """A row of `hosts`, its JSON columns read, with its age by the database's clock."""

    name: str
    boot_id: str | None
    last_seen: str
    version: str | None
    repos: tuple[str, ...]
    max_concurrency: int | None
    host_max_concurrency: int | None
    repo_limits: Mapping[str, Any]
    home: str | None
    last_tick_at: str | None
    age_s: float

    def alive(self, timeout_s: float) -> bool:
        return self.age_s <= timeout_s

    def repo_limit(self, repo: str, key: str) -> Any:
        """What this host's orch.yaml sets for REPO's KEY (max_active, push, push_branches)."""
        limits = self.repo_limits.get(repo)
        return limits.get(key) if isinstance(limits, Mapping) else None


def tasks_of(rows: list[dict[str, Any]]) -> list[Task]:
    return [Task.from_row(row) for row in rows]


def jobs_of(rows: list[dict[str, Any]]) -> list[Job]:
    return [Job.from_row(row) for row in rows]


def runs_of(rows: list[dict[str, Any]]) -> list[Run]:
    return [Run.from_row(row) for row in rows]
