"""The supervisor: one detached process per agent run (`orch supervise`, hidden).

It is the leader of a new session (the tick started it so) and a child
subreaper, and it carries the run's mark, as does the agent and everything it
starts (docs/processes.md). It reads its plan (argv, environment, bounds) from
the tick on stdin, takes the job over (fenced by run_id), heartbeats on both
clocks, and when the agent exits, at the role's timeout, or when its run loses
the job (reaped, cancelled: its heartbeat write finds no row), ends the run's
whole tree (SIGTERM, then SIGKILL after cancel_grace_s), including the tools
that started their own sessions. Its memory stays flat whatever the agent
prints (a bounded tail is kept for parsing, the rest streams to the capped log).
Then it parses the agent's output and records the exit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from orch import procs
from orch.engine.run.plan import AgentPlan
from orch.model import RunOutcome, Verdict
from orch.state import events, jobs, runs
from orch.state.db import Database
from orch.timeutil import monotonic, now_iso

ERROR_LIMIT = 2000
MIB = 1024 * 1024


def supervise(db: Database, plan: AgentPlan) -> int:
    """Run one agent job to its end; returns the process exit status (0 unless broken)."""
    if not _take_over(db, plan):
        return 0  # the run was reaped or cancelled before we started: do nothing
    from orch.procs import tree

    tree.become_subreaper()  # orphans of the run stay below us, whatever their session
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
    """Start the agent, heartbeat, enforce the timeout, end the run's tree when the agent
    is done; None if the job was lost."""
    try:
        child = procs.AgentChild(plan.argv, cwd=plan.cwd, env=plan.env, stdin_text=plan.stdin,
                                 log_max_bytes=plan.log_max_mb * MIB)
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
            break
        if now >= next_beat:
            next_beat = now + plan.heartbeat_interval_s
            if not _beat(db, plan):
                _end_tree(plan, child)
                child.finish()
                return None
        time.sleep(min(0.2, max(0.01, min(deadline, next_beat) - now)))
    _end_tree(plan, child)
    exit_code, stdout = child.finish()
    _reap()
    return exit_code, timed_out, stdout


def _end_tree(plan: AgentPlan, child: procs.AgentChild) -> None:
    """End every process of the run but us (SIGTERM, cancel_grace_s, SIGKILL): the agent
    if it still runs, and whatever it left, by the run's mark and below us."""
    from orch.procs import tree

    me, started = procs.self_identity()
    ended = tree.end_run_tree(plan.mark or None, (me, started), grace_s=plan.cancel_grace_s)
    tree.reap_adopted(keep=(child.pid,))
    if ended.found:
        print(f"orch supervise: {ended.summary()}", flush=True)


def _reap() -> None:
    from orch.procs import tree

    tree.reap_adopted()


def _beat(db: Database, plan: AgentPlan) -> bool:
    try:
        return jobs.heartbeat(db, plan.job_id, plan.run_id, at=now_iso(), mono=monotonic())
    except Exception:
        return True  # a locked database is not a lost job; try again next beat


def _record(db: Database, plan: AgentPlan, exit_code: int | None, timed_out: bool,
            stdout: str) -> None:
    """Judge what the agent printed (orch.agent_output) and record it on the run: the
    outcome, the error (an authentication failure names itself for the HOLD), the
    session, cost, tokens, permission denials and the fault the CLI named."""
    from orch.agent_output import FAULT_AUTH, auth_reason, classify_agent_run, parse_output

    report = parse_output(plan.output, stdout)
    outcome, verdict = classify_agent_run(exit_code, timed_out, report)
    error = report.error
    if verdict is Verdict.HOLD:
        error = auth_reason(report)
    elif timed_out:
        error = "timed out" + (f" waiting on the network: {error}" if report.waiting else "")
    elif exit_code not in (0, None) and not error:
        error = f"exit {exit_code}"
    kind = RunOutcome.DEFERRED if verdict is Verdict.DEFER else outcome
    fault = FAULT_AUTH if verdict is Verdict.HOLD else report.fault
    _finish(db, plan, exit_code, kind, error, report.session_id, report.cost_usd, report.tokens,
            denials=(report.denials, report.denied_tools), fault=fault)


def _finish(db: Database, plan: AgentPlan, exit_code: int | None, outcome: str,
            error: str | None, session_id: str | None = None, cost_usd: float | None = None,
            tokens: int | None = None, denials: tuple[int, tuple[str, ...]] = (0, ()),
            fault: str | None = None) -> None:
    """End the run in one transaction (fenced by run_id); permission denials get an
    event naming the tools; on a state shared by several hosts the log's tail is stored
    with the run (another host's `orch logs` reads it)."""
    tail = None
    if db.multi_host:
        from orch.engine.stored import log_tail

        tail = log_tail(plan.log_path)
    with db.transaction():
        ended = jobs.finish_run(db, plan.job_id, plan.run_id, exit_code=exit_code,
                                outcome=outcome, error=error[:ERROR_LIMIT] if error else None,
                                session_id=session_id, cost_usd=cost_usd, tokens=tokens,
                                denials=denials[0], fault=fault, log_tail=tail)
        job = jobs.get(db, plan.job_id) if ended and denials[0] else None
        if job is not None:
            tools = ", ".join(denials[1]) or "unnamed tools"
            events.record(db, "denied", f"run {plan.run_id}: {denials[0]} permission "
                          f"denial(s) ({tools}); left to the gate", task_id=job.task_id,
                          job_id=job.id)
