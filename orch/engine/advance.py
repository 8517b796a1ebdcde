"""The advance phase: each finished job's gate gives one verdict and the task moves.

A run that did not finish normally never reaches the gate: a failed, timed
out or hollow agent run is a RETRY, a deferred one a DEFER. Everything else
is judged by the stage's gate over the artifacts (orch.gates, pure).
"""

from __future__ import annotations

from typing import Any

from orch.engine.common import artifacts_dir, epoch_of, worktree_dir
from orch.engine.moves import Engine, apply_verdict
from orch.model import Verdict
from orch.state import jobs as jobs_state
from orch.state import tasks

RETRY_OUTCOMES = {"failed": "the run failed", "timeout": "the run timed out",
                  "hollow-success": "the agent exited 0 but reported an error",
                  "reaped": "the run died", "cancelled": "the run was cancelled"}


def advance_all(engine: Engine, errors: list[dict[str, Any]]) -> None:
    """Judge every finished, unjudged job; one that raises is recorded and skipped."""
    from orch.engine.moves import record_error

    for job in jobs_state.unjudged(engine.db):
        try:
            judge_job(engine, job)
        except Exception as exc:
            record_error(engine, errors, job["task_id"], job["id"], exc)


def decide(engine: Engine, job: dict[str, Any]) -> tuple[Verdict, str]:
    """The verdict for a finished job's latest run, with one line of why."""
    from orch.gates import GateContext, judge

    task = tasks.get(engine.db, job["task_id"])
    assert task is not None
    stage = engine.pipeline.get(job["stage"])
    if stage is None:
        return Verdict.HOLD, f"stage {job['stage']!r} is no longer in the pipeline"
    run = jobs_state.get_run(engine.db, job["run_id"]) if job["run_id"] else None
    outcome = run["outcome"] if run else None
    error = job["error"] or ""
    if outcome == "deferred":
        return Verdict.DEFER, error or "deferred"
    # a command stage's non-zero exit is judged by its gate (FAIL); a crash or timeout is not
    if outcome in RETRY_OUTCOMES and not _command_exit(job, outcome):
        return Verdict.RETRY, f"{RETRY_OUTCOMES[outcome]}" + (f": {error}" if error else "")
    started = epoch_of(run["started_at"]) if run else 0.0
    ctx = GateContext(
        artifacts=artifacts_dir(engine.settings, task["id"]),
        run_started=started,
        deliverables=stage.deliverables,
        questions=stage.questions,
        questions_gate_enabled=engine.settings.flags.analyst_questions_gate_enabled,
        new_commits=_new_commits(engine, task, run) if stage.gate == "dev_done" else None,
        exit_code=job["exit_code"],
    )
    result = judge(stage.gate, ctx)
    return result.verdict, result.reason


def _command_exit(job: dict[str, Any], outcome: str | None) -> bool:
    """A command stage that ran and exited non-zero: the gate judges it (FAIL)."""
    code = job["exit_code"]
    return job["runner"] == "command" and outcome == "failed" and code is not None \
        and code >= 0


def _new_commits(engine: Engine, task: dict[str, Any], run: dict[str, Any] | None) -> int:
    """Commits added to the task branch during the run (0 when unknown)."""
    from orch import gitops

    if run is None or not run["base_commit"]:
        return 0
    path = worktree_dir(engine.settings, task["repo"], task["id"])
    try:
        return gitops.count_commits(path, run["base_commit"], task["branch"] or "HEAD")
    except Exception:
        return 0


def judge_job(engine: Engine, job: dict[str, Any]) -> tuple[Verdict, str] | None:
    """Decide and apply the verdict of one finished job (once)."""
    verdict, reason = decide(engine, job)
    if apply_verdict(engine, job, verdict, reason):
        return verdict, reason
    return None
