"""Applying a verdict: the task moves, the job is judged, in one transaction (SPEC section 3).

`apply_verdict` is the single place where a verdict changes state. The tick's
advance phase, the reaper's hold, inline runners and `orch approve/reject`
all come through here, so a verdict means the same thing wherever it comes
from. Notifications are collected and sent by the caller after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orch.config import Settings
from orch.model import Verdict
from orch.pipeline import Pipeline, Stage
from orch.state import counters, events, tasks
from orch.state import jobs as jobs_state
from orch.state.db import Database
from orch.timeutil import now_iso

MAX_BACKOFF_S = 3600


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


def job_runner(settings: Settings, stage: Stage) -> str:
    """The runner a stage's job uses (the tester agent when the test-runner is off)."""
    if stage.runner == "test-runner" and not settings.flags.test_runner_enabled:
        return "agent"
    return stage.runner


def stage_role(settings: Settings, stage: Stage) -> str | None:
    if stage.runner == "test-runner" and not settings.flags.test_runner_enabled:
        return stage.role or "tester"
    return stage.role


def defer_limit(settings: Settings, stage: Stage | None, repo: str) -> int:
    """max_defers, or the staging stage's transient_retries."""
    repo_cfg = settings.repos.get(repo)
    if stage is not None and stage.runner == "staging-runner" and repo_cfg is not None \
            and repo_cfg.staging is not None:
        return repo_cfg.staging.transient_retries
    return settings.max_defers


def backoff_s(settings: Settings, defers: int) -> int:
    """retry_backoff_s doubling per DEFER (defers counts this one), at most an hour."""
    if settings.retry_backoff_s == 0:
        return 0
    return min(MAX_BACKOFF_S, settings.retry_backoff_s * 2 ** max(0, defers - 1))


def note(engine: Engine, kind: str, task: dict[str, Any], reason: str) -> None:
    """Queue a notification (sent after the commit)."""
    fresh = tasks.get(engine.db, task["id"]) or task
    engine.notes.append({"event": kind, "task": task["id"], "repo": task["repo"],
                         "title": task["title"], "stage": fresh["stage"],
                         "state": fresh["state"], "reason": reason, "at": now_iso()})


def apply_verdict(engine: Engine, job: dict[str, Any], verdict: Verdict, reason: str
                  ) -> bool:
    """Judge a finished job once and move its task; False when it was judged already."""
    db = engine.db
    with db.transaction():
        fresh = jobs_state.get(db, job["id"])
        if fresh is None or fresh["judged"] or fresh["status"] not in (
                "succeeded", "failed", "cancelled") or fresh["run_id"] != job["run_id"]:
            return False  # judged already, or the verdict was decided for an older run
        task = tasks.get(db, fresh["task_id"])
        assert task is not None
        if task["state"] == "closed":
            jobs_state.judge(db, fresh["id"], verdict.value)
            return True
        _apply(engine, task, fresh, verdict, reason)
    return True


def _apply(engine: Engine, task: dict[str, Any], job: dict[str, Any], verdict: Verdict,
           reason: str) -> None:
    stage = engine.pipeline.get(job["stage"])
    if stage is None:
        hold(engine, task, job, f"stage {job['stage']!r} is no longer in the pipeline")
        return
    if verdict is Verdict.FAIL and stage.on_fail is None:
        verdict, reason = Verdict.RETRY, f"{reason} (no on_fail: retried)"
    if verdict is Verdict.PASS:
        jobs_state.judge(engine.db, job["id"], verdict.value)
        _entry(engine, task, job["stage"], engine.pipeline.after(job["stage"]), "PASS")
        events.record(engine.db, "passed", f"{job['stage']}: {reason}", task_id=task["id"],
                      job_id=job["id"])
        enter_stage(engine, task, engine.pipeline.after(job["stage"]), task["round"])
    elif verdict is Verdict.FAIL:
        _fail(engine, task, job, stage, reason)
    elif verdict is Verdict.RETRY:
        retry_job(engine, task, job, reason)
    elif verdict is Verdict.DEFER:
        defer_job(engine, task, job, stage, reason)
    elif verdict is Verdict.HOLD:
        hold(engine, task, job, reason)
    else:
        needs_input(engine, task, job, reason)


def _entry(engine: Engine, task: dict[str, Any], from_: str, to: str, verdict: str) -> None:
    engine.advanced.append({"task": task["id"], "from": from_, "to": to, "verdict": verdict})


def _fail(engine: Engine, task: dict[str, Any], job: dict[str, Any], stage: Stage,
          reason: str) -> None:
    move = engine.pipeline.next_move(stage.name, Verdict.FAIL, task["round"],
                                     engine.settings.max_rounds)
    jobs_state.judge(engine.db, job["id"], Verdict.FAIL.value)
    _entry(engine, task, stage.name, move.stage, "FAIL")
    events.record(engine.db, "failed-gate", f"{stage.name}: {reason}", task_id=task["id"],
                  job_id=job["id"])
    if move.stage == "failed":
        tasks.update(engine.db, task["id"], stage="failed", state="closed", admitted=0,
                     round=move.round)
        counters.bump(engine.db, "tasks_failed_total")
        events.record(engine.db, "closed",
                      f"failed: round {move.round} would exceed max_rounds "
                      f"{engine.settings.max_rounds}", task_id=task["id"])
        note(engine, "failed", task, reason)
        return
    tasks.update(engine.db, task["id"], round=move.round)
    enter_stage(engine, {**task, "round": move.round}, move.stage, move.round)


def enter_stage(engine: Engine, task: dict[str, Any], name: str, round_: int) -> None:
    """Put a task at a stage: done, a skipped stage, a human stage, or a new job."""
    db = engine.db
    while True:
        if name == "done":
            tasks.update(db, task["id"], stage="done", state="closed", admitted=0)
            counters.bump(db, "tasks_done_total")
            events.record(db, "closed", "done", task_id=task["id"])
            note(engine, "done", task, "done")
            return
        stage = engine.pipeline.get(name)
        assert stage is not None
        repo = engine.settings.repos.get(task["repo"])
        if stage.runner == "staging-runner" and (repo is None or repo.staging is None):
            following = engine.pipeline.after(name)
            _entry(engine, task, name, following, "SKIP")
            events.record(db, "skipped", f"{name}: repo {task['repo']} has no staging section",
                          task_id=task["id"])
            name = following
            continue
        break
    tasks.update(db, task["id"], stage=name)
    events.record(db, "stage", f"-> {name} (round {round_})", task_id=task["id"])
    if stage.runner == "human":
        tasks.update(db, task["id"], state="needs_input")
        events.record(db, "needs_input", f"{name}: waiting for orch approve / orch reject",
                      task_id=task["id"])
        note(engine, "needs_input", task, f"approve or reject stage {name}")
        return
    current = tasks.get(db, task["id"])
    if current is not None and current["paused_at"] is None and current["state"] == "active" \
            and current["admitted"]:
        job_id = jobs_state.enqueue(db, task["id"], name, job_runner(engine.settings, stage))
        events.record(db, "enqueued", f"job {job_id} for {name}", task_id=task["id"],
                      job_id=job_id)


def retry_job(engine: Engine, task: dict[str, Any], job: dict[str, Any], reason: str) -> None:
    """The same job again as a new attempt, or a hold after max_attempts."""
    attempt = job["attempt"] + 1
    if attempt > engine.settings.max_attempts:
        hold(engine, task, job, f"attempts used up ({job['attempt']} of "
             f"{engine.settings.max_attempts}): {reason}")
        return
    jobs_state.requeue(engine.db, job["id"], expect_status=job["status"],
                       expect_run_id=job["run_id"], attempt=attempt, defers=job["defers"],
                       not_before=later_or_now(engine.settings.retry_backoff_s), verdict="RETRY")
    _entry(engine, task, job["stage"], job["stage"], "RETRY")
    events.record(engine.db, "retry", f"attempt {attempt}: {reason}", task_id=task["id"],
                  job_id=job["id"])


def defer_job(engine: Engine, task: dict[str, Any], job: dict[str, Any], stage: Stage,
              reason: str) -> None:
    """Run the same job later (backoff doubling), or hold past the defer bound."""
    defers = job["defers"] + 1
    limit = defer_limit(engine.settings, stage, task["repo"])
    if job["run_id"]:
        jobs_state.set_run_fields(engine.db, job["run_id"], outcome="deferred")
    if defers > limit:
        hold(engine, task, job, f"defers used up ({job['defers']} of {limit}): {reason}")
        return
    wait = backoff_s(engine.settings, defers)
    jobs_state.requeue(engine.db, job["id"], expect_status=job["status"],
                       expect_run_id=job["run_id"], attempt=job["attempt"], defers=defers,
                       not_before=later_or_now(wait), verdict="DEFER")
    _entry(engine, task, job["stage"], job["stage"], "DEFER")
    events.record(engine.db, "deferred", f"defer {defers} of {limit}, next try in {wait} s: "
                  f"{reason}", task_id=task["id"], job_id=job["id"])


def hold(engine: Engine, task: dict[str, Any], job: dict[str, Any] | None, reason: str) -> None:
    """The task waits for `orch retry`; its job is judged HOLD."""
    db = engine.db
    if job is not None:
        if job["status"] in ("queued", "running"):
            jobs_state.close(db, job["id"], status="failed", verdict="HOLD",
                             expect_status=(job["status"],), error=reason)
        else:
            jobs_state.judge(db, job["id"], "HOLD")
    tasks.update(db, task["id"], state="held", hold_reason=reason)
    stage = job["stage"] if job is not None else task["stage"]
    _entry(engine, task, stage, stage, "HOLD")
    events.record(db, "held", reason, task_id=task["id"], job_id=job["id"] if job else None)
    note(engine, "hold", task, reason)


def needs_input(engine: Engine, task: dict[str, Any], job: dict[str, Any], reason: str) -> None:
    """A person must answer; with autopause the task is parked and its slot freed."""
    db = engine.db
    jobs_state.judge(db, job["id"], "NEEDS_INPUT")
    changes: dict[str, Any] = {"state": "needs_input"}
    if engine.settings.flags.analyst_needs_input_autopause_enabled:
        changes.update(paused_at=now_iso(), pause_reason="needs-input", admitted=0)
    tasks.update(db, task["id"], **changes)
    _entry(engine, task, job["stage"], job["stage"], "NEEDS_INPUT")
    events.record(db, "needs_input", reason, task_id=task["id"], job_id=job["id"])
    if "paused_at" in changes:
        events.record(db, "paused", "needs-input (slot released)", task_id=task["id"])
    note(engine, "needs_input", task, reason)


def later_or_now(seconds: float) -> str:
    """An ISO time `seconds` from now. Even 0 is "now", not NULL: the claim only takes
    jobs whose not_before is at or before the tick's start, so a job requeued in this
    tick runs at the next tick, never twice in one."""
    from orch.engine.common import later

    return later(max(0.0, seconds))


def apply_human(engine: Engine, task: dict[str, Any], approve: bool, reason: str) -> str:
    """`orch approve` (PASS) or `orch reject` (FAIL to on_fail) at a human stage."""
    db = engine.db
    stage = engine.pipeline.get(task["stage"])
    assert stage is not None
    kind = "approved" if approve else "rejected"
    events.record(db, kind, reason, task_id=task["id"])
    state = "active" if task["admitted"] else "waiting"  # no slot: wait for one first
    tasks.update(db, task["id"], state=state)
    task = {**task, "state": state}
    if approve:
        _entry(engine, task, stage.name, engine.pipeline.after(stage.name), "PASS")
        enter_stage(engine, task, engine.pipeline.after(stage.name), task["round"])
        return f"approved {stage.name}"
    if stage.on_fail is None:
        tasks.update(db, task["id"], state="needs_input")
        return f"rejected {stage.name} (no on_fail: it waits for approval again)"
    move = engine.pipeline.next_move(stage.name, Verdict.FAIL, task["round"],
                                     engine.settings.max_rounds)
    _entry(engine, task, stage.name, move.stage, "FAIL")
    if move.stage == "failed":
        tasks.update(db, task["id"], stage="failed", state="closed", admitted=0,
                     round=move.round)
        counters.bump(db, "tasks_failed_total")
        events.record(db, "closed", f"failed: round {move.round} would exceed max_rounds",
                      task_id=task["id"])
        note(engine, "failed", task, reason)
        return "rejected: the task failed (max_rounds)"
    tasks.update(db, task["id"], round=move.round)
    enter_stage(engine, {**task, "round": move.round}, move.stage, move.round)
    return f"rejected {stage.name}: back to {move.stage} (round {move.round})"


def record_error(engine: Engine, errors: list[dict[str, Any]], task_id: int | None,
                 job_id: int | None, exc: BaseException) -> None:
    """An error of one task or job: an event (when possible) and an entry in `errors`."""
    text = f"{type(exc).__name__}: {exc}"
    errors.append({"task": task_id, "job": job_id, "error": text})
    try:
        with engine.db.transaction():
            events.record(engine.db, "error", text[:2000], task_id=task_id, job_id=job_id)
    except Exception:
        pass  # the database itself is failing; the errors list still carries it
