"""Phase 3, advance: each finished job's gate gives one verdict and the task moves.

A run that did not finish normally never reaches the gate: a failed, timed
out or hollow agent run is a RETRY, a deferred one a DEFER. Everything else
is judged by the stage's gate over the artifacts (orch.gates, pure). The
stage machine turns the verdict into a Move, which `orch.engine.moves`
carries out.
"""

from __future__ import annotations

from typing import NamedTuple

from orch.engine.context import Engine, isolate
from orch.engine.moves import apply_verdict
from orch.machine import stage_gone_reason
from orch.model import HoldKind, RunOutcome, Verdict
from orch.state import jobs, runs, tasks
from orch.state.records import Job, Task
from orch.timeutil import epoch_of

FAULT_AUTH = "auth"  # orch.agent_output.FAULT_AUTH, without importing it in every tick

RETRY_OUTCOMES = {RunOutcome.FAILED: "the run failed", RunOutcome.TIMEOUT: "the run timed out",
                  RunOutcome.HOLLOW_SUCCESS: "the agent exited 0 but reported an error",
                  RunOutcome.REAPED: "the run died", RunOutcome.CANCELLED: "the run was cancelled"}


def advance_all(engine: Engine) -> None:
    """Judge every finished, unjudged job; one whose judging raises gets a RETRY naming the
    error (`judge_job`), and one that cannot even be given that is recorded and skipped."""
    for _ in isolate(engine, jobs.unjudged(engine.db, engine.pinned_host),
                     lambda job: judge_job(engine, job),
                     lambda job: (job.task_id, job.id)):
        pass


class Decision(NamedTuple):
    """A finished job's verdict, one line of why, and the kind of a HOLD."""

    verdict: Verdict
    reason: str
    hold_kind: HoldKind = HoldKind.VERDICT


def decide(engine: Engine, job: Job) -> Decision:
    """The verdict for a finished job's latest run, with one line of why."""
    from orch.gates import GateContext, run_gate

    task = tasks.get(engine.db, job.task_id)
    assert task is not None
    stage = engine.pipeline.get(job.stage)
    if stage is None:
        return Decision(Verdict.HOLD, stage_gone_reason(job.stage))
    run = runs.get(engine.db, job.run_id) if job.run_id else None
    outcome = run.outcome if run else None
    error = job.error or ""
    if run is not None and run.fault == FAULT_AUTH:  # a key a person must fix
        return Decision(Verdict.HOLD, error or "agent authentication failed", HoldKind.AUTH)
    if outcome == RunOutcome.DEFERRED:
        return Decision(Verdict.DEFER, error or "deferred")
    # a command stage's non-zero exit is judged by its gate (FAIL); a crash or timeout is not
    if outcome in RETRY_OUTCOMES and not _command_exit(job, outcome):
        return Decision(Verdict.RETRY, RETRY_OUTCOMES[outcome] + (f": {error}" if error else ""))
    ctx = GateContext(
        artifacts=engine.home.artifacts(task.id),
        run_started=epoch_of(run.started_at) if run else 0.0,
        deliverables=stage.deliverables,
        questions=stage.questions,
        questions_gate_enabled=engine.settings.flags.analyst_questions_gate_enabled,
        new_commits=_new_commits(engine, task, job) if stage.gate == "dev_done" else None,
        exit_code=job.exit_code,
    )
    result = run_gate(stage.gate, ctx)
    return Decision(result.verdict, result.reason)


def push_developer_commits(engine: Engine, job: Job) -> None:
    """After a developer run (a `dev_done` stage) of a repo with `merge.push_branches`, push
    the task branch to the remote, so that another host can take the task over (SPEC
    section 11); a failed push is recorded as an event and judging goes on."""
    from orch import gitops
    from orch.state import events

    stage = engine.pipeline.get(job.stage)
    task = tasks.get(engine.db, job.task_id)
    if stage is None or stage.gate != "dev_done" or task is None or not task.branch:
        return
    repo = engine.settings.repos.get(task.repo)
    if repo is None or not repo.push_branches \
            or not engine.home.worktree(task.repo, task.id).exists():
        return
    pushed, detail = gitops.push_task_branch(repo.path, task.branch)
    with engine.db.transaction():
        events.record(engine.db, "pushed" if pushed else "push-failed", detail,
                      task_id=task.id, job_id=job.id)


def _command_exit(job: Job, outcome: str | None) -> bool:
    """A command stage that ran and exited non-zero: the gate judges it (FAIL)."""
    return job.runner == "command" and outcome == RunOutcome.FAILED \
        and job.exit_code is not None and job.exit_code >= 0


def _new_commits(engine: Engine, task: Task, job: Job) -> int:
    """Commits added to the task branch during the job, by any of its attempts: counted
    from the head when its first run started (0 when unknown). A RETRY after a run that
    committed but was judged hollow can pass without committing again."""
    from orch import gitops

    base = runs.job_base_commit(engine.db, job.id)
    if not base:
        return 0
    path = engine.home.worktree(task.repo, task.id)
    try:
        return gitops.count_commits(path, base, task.branch or "HEAD")
    except Exception:
        return 0


def judge_job(engine: Engine, job: Job) -> tuple[Verdict, str] | None:
    """Decide and apply the verdict of one finished job (once); on a state shared by several
    hosts the task's artifacts are stored first, so every host reads what was judged.

    Judging that raises (a bug, a MemoryError from a hostile artifact, git failing) is
    recorded as an error of this job and turns into a RETRY naming it (SPEC section 5),
    bounded by `max_attempts` like any other: never a job that every tick judges again.
    """
    from orch.engine.stored import store_artifacts

    try:
        store_artifacts(engine, job.task_id, job.run_id)
        push_developer_commits(engine, job)
        verdict, reason, hold_kind = decide(engine, job)
    except Exception as exc:
        engine.record_error(job.task_id, job.id, exc)
        verdict, reason, hold_kind = Decision(
            Verdict.RETRY, f"judging the run raised {_error_line(exc)}")
    if apply_verdict(engine, job, verdict, reason, hold_kind):
        return verdict, reason
    return None


def _error_line(exc: BaseException) -> str:
    """`Type: message`, one line of at most QUOTE_LIMIT characters."""
    from orch.artifacts import quote

    return quote(f"{type(exc).__name__}: {exc}")
