"""The supervisor: one detached process per agent run (`orch supervise`, hidden).

It is the leader of a new session (the tick started it so); the agent and
everything it starts stay in its process group. It reads its plan (argv,
environment, bounds) from the tick on stdin, takes the job over (fenced by
run_id), heartbeats on both clocks, kills the whole group at the role's
timeout (SIGTERM, then SIGKILL), parses the agent's output, and records the
exit. If its run loses the job (reaped, cancelled), its heartbeat write
finds no row: it kills the agent and leaves.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from orch import procs
from orch.engine.run.plan import AgentPlan
from orch.model import RunOutcome, Verdict
from orch.state import jobs, runs
from orch.state.db import Database
from orch.timeutil import monotonic, now_iso

ERROR_LIMIT = 2000


def supervise(db: Database, plan: AgentPlan) -> int:
    """Run one agent job to its end; returns the process exit status (0 unless broken)."""
    if not _take_over(db, plan):
        return 0  # the run was reaped or cancelled before we started: do nothing
    result = _run_agent(db, plan)
    if result is None:
        return 0  # lost the job: nothing to record
    exit_code, timed_out, stdout = result
    _record(db, plan, exit_code, timed_out, stdout)
    if plan.kick:  # the exit is recorded and the run's processes are gone: judge it now
        from orch.engine.kick import kick_home

        kick_home(Path(plan.home), os.environ, f"run {plan.run_id} ended", db)
    return 0


def _take_over(db: Database, plan: AgentPlan) -> bool:
    """Record ourselves (pid and group) as the run's owner, in one transaction."""
    pid, started = procs.self_identity()
    pgid, pgid_started = procs.own_group()
    with db.transaction():
        if not jobs.set_owner(db, plan.job_id, plan.run_id, pid=pid, pid_started=started):
            return False
        runs.set_group(db, plan.run_id, pgid, pgid_started)
        jobs.heartbeat(db, plan.job_id, plan.run_id, at=now_iso(), mono=monotonic())
    return True


def _run_agent(db: Database, plan: AgentPlan) -> tuple[int | None, bool, str] | None:
    """Start the agent in our group, heartbeat, enforce the timeout; None if the job was lost."""
    try:
        child = procs.GroupChild(plan.argv, cwd=plan.cwd, env=plan.env, stdin_text=plan.stdin)
    except OSError as exc:
        print(f"orch supervise: cannot start {plan.argv[0]}: {exc}", flush=True)
        _finish(db, plan, None, RunOutcome.FAILED, f"cannot start {plan.argv[0]}: {exc}")
        return None
    deadline = time.monotonic() + plan.timeout_s
    next_beat = time.monotonic() + plan.heartbeat_interval_s
    timed_out = False
    while child.poll() is None:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            procs.terminate_own_group(plan.cancel_grace_s, poll=child.poll)
            break
        if now >= next_beat:
            next_beat = now + plan.heartbeat_interval_s
            if not _beat(db, plan):
                procs.terminate_own_group(plan.cancel_grace_s, poll=child.poll)
                return None
        time.sleep(min(0.2, max(0.01, min(deadline, next_beat) - now)))
    exit_code, stdout = child.finish()
    return exit_code, timed_out, stdout


def _beat(db: Database, plan: AgentPlan) -> bool:
    try:
        return jobs.heartbeat(db, plan.job_id, plan.run_id, at=now_iso(), mono=monotonic())
    except Exception:
        return True  # a locked database is not a lost job; try again next beat


def _record(db: Database, plan: AgentPlan, exit_code: int | None, timed_out: bool,
            stdout: str) -> None:
    from orch.agent_output import classify_agent_run, parse_output

    report = parse_output(plan.output, stdout)
    outcome, verdict = classify_agent_run(exit_code, timed_out, report)
    error = report.error
    if timed_out:
        error = "timed out"
    elif exit_code not in (0, None) and not error:
        error = f"exit {exit_code}"
    kind = RunOutcome.DEFERRED if verdict is Verdict.DEFER else outcome
    _finish(db, plan, exit_code, kind, error, report.session_id, report.cost_usd, report.tokens)


def _finish(db: Database, plan: AgentPlan, exit_code: int | None, outcome: str,
            error: str | None, session_id: str | None = None, cost_usd: float | None = None,
            tokens: int | None = None) -> None:
    tail = None
    if db.multi_host:  # another host's `orch logs` reads it from the state
        from orch.engine.stored import log_tail

        tail = log_tail(plan.log_path)
    with db.transaction():
        jobs.finish_run(db, plan.job_id, plan.run_id, exit_code=exit_code, outcome=outcome,
                        error=error[:ERROR_LIMIT] if error else None, session_id=session_id,
                        cost_usd=cost_usd, tokens=tokens, log_tail=tail)
