"""What every part of the engine works with: the Engine, and error isolation.

`Engine` carries the settings, the pipeline, the home's layout, the
database and what happened so far in this tick (the verdicts applied, the
notifications to send after the commits). `isolate` is the one way a phase
runs its items: one task, job or repo that raises is recorded (an `error`
event and an entry of the tick's `errors`) and skipped, and the phase goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from orch.config import Settings
from orch.engine.cluster import Cluster
from orch.home import Home
from orch.machine import Limits, Pipeline, Stage
from orch.state import events, tasks
from orch.state.db import Database
from orch.state.records import Task
from orch.timeutil import now_iso

T = TypeVar("T")
ERROR_TEXT_LIMIT = 2000


@dataclass
class Engine:
    """What every phase needs: settings, pipeline, database, and what happened so far."""

    settings: Settings
    pipeline: Pipeline
    db: Database
    dry_run: bool = False
    started_at: str = field(default_factory=now_iso)
    advanced: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    cluster: Cluster | None = None  # the hosts of the state (read by the tick; else just us)

    def __post_init__(self) -> None:
        if self.cluster is None:
            self.cluster = Cluster.single(self.settings)

    @property
    def home(self) -> Home:
        return self.settings.paths

    @property
    def host(self) -> str:
        """This home's host name (`host:`, default the machine's hostname)."""
        return self.settings.host_name

    @property
    def hosts(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    @property
    def pinned_host(self) -> str | None:
        """The host whose tasks this engine works on: this one when several hosts share
        the state (PostgreSQL); None on SQLite, where every task is this home's."""
        return self.host if self.db.multi_host else None

    def limits(self, stage: Stage | None, repo: str) -> Limits:
        """The bounds of a move at `stage` of a task of `repo` (transient_retries is the
        staging stage's own bound on DEFERs)."""
        max_defers = self.settings.max_defers
        repo_cfg = self.settings.repos.get(repo)
        if stage is not None and stage.runner == "staging-runner" and repo_cfg is not None \
                and repo_cfg.staging is not None:
            max_defers = repo_cfg.staging.transient_retries
        return Limits(self.settings.max_rounds, self.settings.max_attempts, max_defers)

    def skipped_stages(self, repo: str) -> frozenset[str]:
        """Stages a task of `repo` passes over: staging without a staging section."""
        repo_cfg = self.settings.repos.get(repo)
        if repo_cfg is not None and repo_cfg.staging is not None:
            return frozenset()
        return frozenset(s.name for s in self.pipeline.stages if s.runner == "staging-runner")

    def note(self, kind: str, task: Task, reason: str) -> None:
        """Queue a notification (sent after the commit)."""
        fresh = tasks.get(self.db, task.id) or task
        self.notes.append({"event": kind, "task": task.id, "repo": task.repo,
                           "title": task.title, "stage": fresh.stage,
                           "state": str(fresh.state), "reason": reason, "at": now_iso()})

    def record_error(self, task_id: int | None, job_id: int | None, exc: BaseException) -> None:
        """An error of one task or job: an event (when possible) and an entry in `errors`."""
        text = f"{type(exc).__name__}: {exc}"
        self.errors.append({"task": task_id, "job": job_id, "error": text})
        try:
            with self.db.transaction():
                events.record(self.db, "error", text[:ERROR_TEXT_LIMIT], task_id=task_id,
                              job_id=job_id)
        except Exception:  # the database itself is failing; the errors list still has it
            pass


def isolate(engine: Engine, items: Iterable[T], work: Callable[[T], Any],
            ids: Callable[[T], tuple[int | None, int | None]]) -> Iterator[tuple[T, Any]]:
    """Run `work` on each item; one that raises is recorded with its (task, job) ids and
    skipped. Yields (item, result) for the items that went through."""
    for item in items:
        try:
            result = work(item)
        except Exception as exc:
            task_id, job_id = ids(item)
            engine.record_error(task_id, job_id, exc)
            continue
        yield item, result


@contextmanager
def recorded(engine: Engine, task_id: int | None = None, job_id: int | None = None
             ) -> Iterator[None]:
    """A block whose exception is recorded against (task, job) and swallowed."""
    try:
        yield
    except Exception as exc:
        engine.record_error(task_id, job_id, exc)
