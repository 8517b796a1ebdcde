"""What `orch queue` shows (SPEC section 9, invariant 6).

`build_queue` reads open work only (the state layer's indexed views) and
returns the SPEC's `--json` object; `explain` is a pure function that turns
one task and what is known around it into the one line saying what the task
waits for. Every non-terminal task gets a line: nothing waits silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orch.availability import repo_problem
from orch.config import Settings
from orch.engine.tick.admit import occupies_slot
from orch.model import HoldKind, JobStatus, TaskState
from orch.pipeline import load_pipeline
from orch.state import counters, events, runs, tasks, views
from orch.state import repos as repo_state
from orch.state.db import Database
from orch.state.records import Job, Task
from orch.timeutil import age_s, parse_iso, span

if TYPE_CHECKING:
    from orch.machine import Pipeline

QUESTIONS_FILE = "01-questions.md"  # orch.artifacts.QUESTIONS_FILE, without importing yaml
MAX_IDS_IN_LINE = 5
MAX_REASON_CHARS = 160
MAX_CAUSE_CHARS = 80


@dataclass(frozen=True)
class RepoGate:
    """One repo's serial gate as seen now."""

    name: str
    max_active: int | None
    holders: tuple[int, ...]            # tasks holding a slot, FIFO order
    waiting: tuple[int, ...]            # unpaused waiting tasks, FIFO order
    paused: tuple[tuple[int, str], ...]
    frozen: bool
    unavailable: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"max_active": self.max_active, "active": list(self.holders),
                "waiting": list(self.waiting),
                "paused": [{"task": task, "reason": reason} for task, reason in self.paused],
                "frozen": self.frozen}


@dataclass(frozen=True)
class ExplainContext:
    """Everything `explain` needs besides the task row; built once per view."""

    now: datetime
    gate_enabled: bool = True
    max_concurrency: int = 1
    heartbeat_timeout_s: int = 60
    gates: dict[str, RepoGate] = field(default_factory=dict)
    jobs: dict[int, Job] = field(default_factory=dict)  # task id -> open/unjudged job
    running: tuple[Job, ...] = ()                                  # every running job
    human_stages: frozenset[str] = frozenset()
    questions_waiting: frozenset[int] = frozenset()  # tasks with a questions file to answer
    budget_details: dict[int, str] = field(default_factory=dict)
    here: str | None = None  # this host, on a state shared by several (names others' jobs)
    backoff_causes: dict[int, str] = field(default_factory=dict)  # task id -> why it waits
    denials: dict[int, int] = field(default_factory=dict)  # task -> its last run's denials


# --------------------------------------------------------------------------- explain

def explain(task: Task, ctx: ExplainContext) -> str:
    """One line saying what a non-terminal task waits for (never empty), and the
    permission denials its last run reported (left to the gate, shown here)."""
    line = _explain(task, ctx)
    denied = ctx.denials.get(task.id)
    if denied and not task.closed:
        line += (f"; its last run reported {denied} permission denial(s): "
                 f"orch task show {task.id}")
    return line


def _explain(task: Task, ctx: ExplainContext) -> str:
    if task.closed:
        return f"closed ({task.stage})"
    job = ctx.jobs.get(task.id)
    if job is not None and job.status == JobStatus.RUNNING:
        line = _running_line(job, ctx)
        if task.paused:
            line += f"; paused ({task.pause_reason or 'no reason'}) after it"
        return line
    if job is not None and job.status != JobStatus.QUEUED:
        return f"job {job.id} finished ({job.status}): the next tick judges it"
    gate = ctx.gates.get(task.repo)
    if gate is not None and gate.unavailable:
        return gate.unavailable
    parked_for_questions = task.state == TaskState.NEEDS_INPUT \
        and task.pause_reason == "needs-input"
    if task.paused and not parked_for_questions:
        return _paused_line(task, job)
    if task.state == TaskState.NEEDS_INPUT:
        return _needs_input_line(task, ctx)
    if task.state == TaskState.HELD:
        return _held_line(task, ctx)
    if task.state == TaskState.WAITING:
        return _waiting_line(task, ctx)
    return _active_line(job, ctx)


def _running_line(job: Job, ctx: ExplainContext) -> str:
    beat = age_s(job.heartbeat_at, ctx.now)
    if beat is None:
        heard = "no heartbeat yet"
    else:
        heard = f"heartbeat {int(beat)} s ago"
        if beat > ctx.heartbeat_timeout_s:
            heard += ", overdue: the next tick reaps it if it is dead"
    pid = job.pid if job.pid is not None else "?"
    where = f" on host {job.host}" if ctx.here and job.host and job.host != ctx.here else ""
    return f"job {job.id} running{where} (pid {pid}, {heard})"


def _paused_line(task: Task, job: Job | None) -> str:
    line = f"paused ({task.pause_reason or 'no reason'}): orch resume {task.id}"
    if job is not None:
        line += f" (job {job.id} stays queued until then)"
    return line


def _needs_input_line(task: Task, ctx: ExplainContext) -> str:
    task_id = task.id
    if task.stage in ctx.human_stages:
        return f"waiting for orch approve {task_id} / orch reject {task_id} --reason ..."
    if task_id in ctx.questions_waiting:
        return (f"needs input: answer tasks/{task_id}/{QUESTIONS_FILE}, "
                f"then orch resume {task_id}")
    return f"needs input: see orch task show {task_id}, then orch resume {task_id}"


def _held_line(task: Task, ctx: ExplainContext) -> str:
    task_id = task.id
    reason = task.hold_reason or "no reason recorded"
    if task.hold_kind == HoldKind.HOST_GONE:
        return (f"held: {_one_line(reason)}; its worktree and files were there: "
                f"orch task move {task_id} --host HOST, then orch retry {task_id}")
    if task.hold_kind in (HoldKind.BUDGET_DAY, HoldKind.BUDGET_TASK):
        detail = ctx.budget_details.get(task_id, "a cost ceiling was reached")
        if task.hold_kind == HoldKind.BUDGET_DAY:
            return (f"budget hold: {_one_line(detail)}; after 00:00 UTC (or after raising "
                    f"budget.day_usd) orch retry {task_id}")
        return (f"budget hold: {_one_line(detail)}; raise budget.task_usd in orch.yaml, "
                f"then orch retry {task_id}")
    return f"held: {_one_line(reason)}, then orch retry {task_id}"


def _waiting_line(task: Task, ctx: ExplainContext) -> str:
    repo = task.repo
    gate = ctx.gates.get(repo)
    if gate is not None and gate.frozen:
        return f"repo {repo} is frozen: no admissions until orch unfreeze {repo}"
    if not ctx.gate_enabled:
        return "next tick admits it (serial gate off)"
    if gate is None or gate.max_active is None:
        return f"repo {repo} is not in orch.yaml"
    free = gate.max_active - len(gate.holders)
    if free <= 0:
        return f"serial gate: {_holders_phrase(gate)}"
    rank = gate.waiting.index(task.id) if task.id in gate.waiting else 0
    if rank < free:
        return f"next tick admits it (a slot of {repo} is free)"
    first = gate.waiting[:free]
    if free == 1:
        return f"serial gate: the free slot of {repo} goes to task {first[0]} first"
    return f"serial gate: the {free} free slots of {repo} go to tasks {_ids(first)} first"


def _holders_phrase(gate: RepoGate) -> str:
    slots = "the only slot" if gate.max_active == 1 else f"the {gate.max_active} slots"
    if len(gate.holders) == 1:
        return f"task {gate.holders[0]} holds {slots} of {gate.name}"
    return f"tasks {_ids(gate.holders)} hold {slots} of {gate.name}"


def _active_line(job: Job | None, ctx: ExplainContext) -> str:
    if job is None:
        return "next tick enqueues its job"
    head = f"job {job.id} queued"
    if ctx.max_concurrency == 0:
        return f"{head}, but max_concurrency is 0: nothing starts"
    if job.not_before and parse_iso(job.not_before) > ctx.now:
        left = span((parse_iso(job.not_before) - ctx.now).total_seconds())
        what = "deferred" if job.verdict == "DEFER" else "retry after"
        cause = ctx.backoff_causes.get(job.task_id) or job.error
        return (f"job {job.id} runs again in {left} ({what}: {_cause(cause)})" if cause
                else f"job {job.id} runs again in {left} (retry backoff)")
    if len(ctx.running) >= ctx.max_concurrency:
        ids = [running.id for running in ctx.running]
        who = f"job {ids[0]}" if len(ids) == 1 else f"jobs {_ids(ids)}"
        return f"{head}: max_concurrency {ctx.max_concurrency} reached ({who} running)"
    return f"{head}: the next tick starts it"


_EVENT_PREFIX = re.compile(r"^(attempt \d+|defer \d+ of \d+, next try in \d+ s): ")


def _cause(text: str) -> str:
    """The cause of a backoff in a few words: the judged reason, its event prefix cut."""
    flat = _EVENT_PREFIX.sub("", " ".join(text.split()))
    return flat if len(flat) <= MAX_CAUSE_CHARS else flat[:MAX_CAUSE_CHARS - 3] + "..."


def _ids(ids: tuple[int, ...] | list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:MAX_IDS_IN_LINE])
    return shown + (", ..." if len(ids) > MAX_IDS_IN_LINE else "")


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_REASON_CHARS else flat[:MAX_REASON_CHARS - 3] + "..."


# --------------------------------------------------------------------------- the view

@dataclass(frozen=True)
class QueueView:
    """The queue as `orch queue` shows it; `as_dict()` is the SPEC's `--json`."""

    tasks: list[dict[str, Any]]
    running: list[dict[str, Any]]
    gate_enabled: bool
    gates: dict[str, RepoGate]
    reaper: dict[str, Any]
    counters: dict[str, int]
    max_concurrency: int
    hosts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "running": self.running,
                "serial_gate": {"enabled": self.gate_enabled,
                                "repos": {name: gate.as_dict()
                                          for name, gate in self.gates.items()}},
                "reaper": self.reaper, "counters": self.counters, "hosts": self.hosts}

    def for_display(self) -> dict[str, Any]:
        """as_dict() plus what the rich view also shows (unavailable repos, concurrency)."""
        return {**self.as_dict(), "max_concurrency": self.max_concurrency,
                "unavailable": {name: gate.unavailable for name, gate in self.gates.items()
                                if gate.unavailable}}


def queue_view(settings: Settings, db: Database, repo: str | None = None,
               pipeline: Pipeline | None = None) -> dict[str, Any]:
    """The SPEC section 9 `orch queue --json` object."""
    return build_queue(settings, db, repo, pipeline).as_dict()


def build_queue(settings: Settings, db: Database, repo: str | None = None,
                pipeline: Pipeline | None = None) -> QueueView:
    """Read open tasks and jobs, build each repo's gate, explain every task."""
    if pipeline is None:

        pipeline = load_pipeline(settings)
    human_stages = frozenset(s.name for s in pipeline.stages if s.runner == "human")
    questions_stages = frozenset(s.name for s in pipeline.stages if s.questions) \
        if settings.flags.analyst_questions_gate_enabled else frozenset()
    now = datetime.now(UTC)
    open_rows = tasks.open_tasks(db, repo)
    if repo is not None and repo not in settings.repos and not open_rows:
        settings.repo(repo)  # raises NotFoundError (exit 3)
    running_with_repo = views.running_jobs(db)
    running = [job for job, _ in running_with_repo]
    task_ids = {row.id for row in open_rows}
    job_of = {job.task_id: job for job in views.open_work_jobs(db)
              if job.task_id in task_ids}
    gates = _gates(settings, db, open_rows, repo, {job.task_id for job in running})
    ctx = ExplainContext(
        now=now, gate_enabled=settings.flags.serial_gate_enabled,
        max_concurrency=settings.max_concurrency,
        heartbeat_timeout_s=settings.heartbeat_timeout_s, gates=gates, jobs=job_of,
        running=tuple(running), human_stages=human_stages,
        questions_waiting=_questions_waiting(settings, open_rows, questions_stages),
        budget_details=_budget_details(db, open_rows),
        here=settings.host_name if db.multi_host else None,
        backoff_causes=_backoff_causes(db, job_of, now),
        denials=runs.last_denials(db, [row.id for row in open_rows]))
    shown_running = [job for job, job_repo in running_with_repo
                     if repo is None or job_repo == repo]
    values = counters.all_counters(db)
    reaper = {"impossible_queued_total": values.get("impossible_queued_total", 0),
              "reaped_total": values.get("reaped_total", 0),
              "last_tick_at": counters.last_tick(db)}
    return QueueView(tasks=[_task_entry(row, ctx) for row in open_rows],
                     running=[_running_entry(job, now) for job in shown_running],
                     gate_enabled=ctx.gate_enabled, gates=gates, reaper=reaper,
                     counters=values, max_concurrency=settings.max_concurrency,
                     hosts=host_entries(settings, db, running))


def host_entries(settings: Settings, db: Database, running: list[Job]) -> list[dict[str, Any]]:
    """The `hosts` list of `orch queue --json` (SPEC section 11): every host of the state,
    alive or not by the database's clock, with its running jobs."""
    from orch.state import hosts

    per_host: dict[str, int] = {}
    for job in running:
        per_host[job.host or ""] = per_host.get(job.host or "", 0) + 1
    return [{"name": host.name, "alive": host.alive(settings.host_timeout_s),
             "last_seen_age_s": int(host.age_s), "version": host.version,
             "running": per_host.get(host.name, 0)} for host in hosts.all_hosts(db)]


def _gates(settings: Settings, db: Database, open_rows: list[Task],
           repo: str | None, running_tasks: set[int]) -> dict[str, RepoGate]:

    names = {row.repo for row in open_rows}
    names |= set(settings.repos) if repo is None else {repo}
    frozen = repo_state.frozen_repos(db)
    gates = {}
    for name in sorted(names):
        rows = [row for row in open_rows if row.repo == name]  # already in FIFO order
        config = settings.repos.get(name)
        gates[name] = RepoGate(
            name=name, max_active=config.max_active if config else None,
            holders=tuple(r.id for r in rows if occupies_slot(r, running_tasks)),
            waiting=tuple(r.id for r in rows if r.state == TaskState.WAITING
                          and not r.paused),
            paused=tuple((r.id, r.pause_reason or "") for r in rows if r.paused),
            frozen=name in frozen, unavailable=repo_problem(config))
    return gates


def _questions_waiting(settings: Settings, open_rows: list[Task],
                       questions_stages: frozenset[str]) -> frozenset[int]:
    return frozenset(
        row.id for row in open_rows
        if row.state == TaskState.NEEDS_INPUT and row.stage in questions_stages
        and (settings.paths.artifacts(row.id) / QUESTIONS_FILE).is_file())


def _budget_details(db: Database, open_rows: list[Task]) -> dict[int, str]:

    details = {}
    for row in open_rows:
        if row.state == TaskState.HELD and row.hold_kind in (HoldKind.BUDGET_DAY,
                                                             HoldKind.BUDGET_TASK):
            event = events.latest_for_task(db, row.id, ("budget",))
            if event is not None:
                details[row.id] = event.detail
    return details


def _backoff_causes(db: Database, job_of: dict[int, Job], now: datetime) -> dict[int, str]:
    """For each job waiting out a retry backoff: the reason it was retried or deferred."""
    causes = {}
    for task_id, job in job_of.items():
        if job.status == JobStatus.QUEUED and job.not_before and parse_iso(job.not_before) > now:
            event = events.latest_for_task(db, task_id, ("retry", "deferred"))
            if event is not None and event.detail:
                causes[task_id] = event.detail
    return causes


def _task_entry(row: Task, ctx: ExplainContext) -> dict[str, Any]:
    return {"id": row.id, "repo": row.repo, "title": row.title,
            "stage": row.stage, "state": str(row.state), "round": row.round,
            "paused": row.paused, "pause_reason": row.pause_reason,
            "hold_reason": row.hold_reason, "age_s": _whole(age_s(row.created_at, ctx.now)),
            "moved_age_s": _whole(age_s(row.moved_at or row.updated_at, ctx.now)),
            "reason": explain(row, ctx), "host": row.host}


def _running_entry(job: Job, now: datetime) -> dict[str, Any]:
    return {"job": job.id, "task": job.task_id, "stage": job.stage,
            "runner": job.runner, "pid": job.pid,
            "age_s": _whole(age_s(job.started_at, now)),
            "heartbeat_age_s": _whole(age_s(job.heartbeat_at, now)), "host": job.host}


def _whole(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds)
