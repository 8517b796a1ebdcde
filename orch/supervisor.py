"""The supervisor: one detached process per agent run (`orch supervise`, hidden).

It is the leader of a new session (the tick started it so); the agent and
everything it starts stay in its process group. It takes the job over from
the tick (fenced by run_id), heartbeats on both clocks, kills the whole
group at the role's timeout (SIGTERM, then SIGKILL), parses the agent's
output, and records the exit. If its run loses the job (reaped, cancelled),
its heartbeat write finds no row: it kills the agent and leaves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from orch import procs
from orch.config import Settings
from orch.engine.common import artifacts_dir, monotonic, worktree_dir
from orch.state import events, tasks
from orch.state import jobs as jobs_state
from orch.state.db import Database
from orch.timeutil import now_iso


def supervise(settings: Settings, db: Database, job_id: int, run_id: int) -> int:
    """Run one agent job to its end; returns the process exit status (0 unless broken)."""
    pid, started = procs.self_identity()
    with db.transaction():
        if not jobs_state.set_owner(db, job_id, run_id, pid=pid, pid_started=started):
            return 0  # the run was reaped or cancelled before we started: do nothing
        jobs_state.set_run_group(db, run_id, os.getpgid(0), procs.start_ticks(os.getpgid(0)))
        jobs_state.heartbeat(db, job_id, run_id, at=now_iso(), mono=monotonic())
    job = jobs_state.get(db, job_id)
    run = jobs_state.get_run(db, run_id)
    assert job is not None and run is not None
    task = tasks.get(db, job["task_id"])
    assert task is not None
    try:
        plan = _plan(settings, db, task, job, run)
    except Exception as exc:
        _finish(db, job_id, run_id, None, "failed", f"could not prepare the agent: {exc}")
        return 0
    result = _run_agent(settings, db, job_id, run_id, plan)
    if result is None:
        return 0  # lost the job: nothing to record
    exit_code, timed_out, stdout = result
    _record(settings, db, job_id, run_id, plan["output"], exit_code, timed_out, stdout)
    return 0


def _plan(settings: Settings, db: Database, task: dict[str, Any], job: dict[str, Any],
          run: dict[str, Any]) -> dict[str, Any]:
    """The argv, environment, stdin and timeout of the agent run."""
    from orch.agents import (
        load_prompt_template,
        orch_env_vars,
        prompt_context,
        render_argv,
        render_prompt,
    )
    from orch.engine.common import run_env
    from orch.engine.moves import stage_role
    from orch.pipeline import load_pipeline

    pipeline = load_pipeline(settings)
    stage = pipeline.get(job["stage"])
    if stage is None:
        raise RuntimeError(f"stage {job['stage']!r} is not in the pipeline")
    role_name = stage_role(settings, stage) or ""
    role = settings.agents[role_name]
    repo = settings.repo(task["repo"])
    artifacts = artifacts_dir(settings, task["id"])
    worktree = worktree_dir(settings, task["repo"], task["id"])
    reject = events.latest_for_task(db, task["id"], ("rejected",))
    context = prompt_context(
        task_id=task["id"], repo=task["repo"], stage=job["stage"], round_no=task["round"],
        artifacts=artifacts, worktree=worktree, branch=task["branch"] or "",
        default_branch=repo.default_branch, role=role_name,
        reject_reason=reject["detail"] if reject else None)
    prompt = render_prompt(load_prompt_template(role_name, settings.home / "templates" /
                                                "prompts"), context)
    prompt_file = Path(run["log_path"]).with_suffix(".prompt.md")
    prompt_file.write_text(prompt, encoding="utf-8")
    values = {**context, "prompt": prompt, "prompt_file": str(prompt_file)}
    argv = render_argv(role.command, values)
    env = run_env(settings, orch_env_vars(
        home=settings.home, task_id=task["id"], job_id=job["id"], run_id=run["id"],
        stage=job["stage"], round_no=task["round"], repo=task["repo"], artifacts=artifacts,
        worktree=worktree), dict(role.env))
    return {"argv": argv, "env": env, "cwd": worktree, "timeout": role.timeout_s,
            "stdin": prompt if role.stdin == "prompt" else None, "output": role.output}


def _run_agent(settings: Settings, db: Database, job_id: int, run_id: int,
               plan: dict[str, Any]) -> tuple[int | None, bool, str] | None:
    """Start the agent in our group, heartbeat, enforce the timeout; None if the job was lost."""
    try:
        child = subprocess.Popen(
            plan["argv"], cwd=plan["cwd"], env=plan["env"],
            stdin=subprocess.PIPE if plan["stdin"] is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=None)
    except OSError as exc:
        print(f"orch supervise: cannot start {plan['argv'][0]}: {exc}", flush=True)
        _finish(db, job_id, run_id, None, "failed", f"cannot start {plan['argv'][0]}: {exc}")
        return None
    chunks: list[bytes] = []
    reader = threading.Thread(target=_pump, args=(child, chunks), daemon=True)
    reader.start()
    if plan["stdin"] is not None:
        threading.Thread(target=_feed, args=(child, plan["stdin"]), daemon=True).start()
    deadline = time.monotonic() + plan["timeout"]
    next_beat = time.monotonic() + settings.heartbeat_interval_s
    timed_out = False
    while child.poll() is None:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            _kill_own_group(child, settings.cancel_grace_s)
            break
        if now >= next_beat:
            next_beat = now + settings.heartbeat_interval_s
            if not _beat(db, job_id, run_id):
                _kill_own_group(child, settings.cancel_grace_s)
                return None
        time.sleep(min(0.2, max(0.01, min(deadline, next_beat) - now)))
    child.wait()
    _clear_group(child)
    reader.join(timeout=5)
    return child.returncode, timed_out, b"".join(chunks).decode("utf-8", "replace")


def _pump(child: subprocess.Popen[bytes], chunks: list[bytes]) -> None:
    """Copy the agent's stdout into the log (our stdout) and keep it for parsing."""
    assert child.stdout is not None
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    for block in iter(lambda: child.stdout.read1(65536), b""):  # type: ignore[union-attr,attr-defined]
        chunks.append(block)
        try:
            out.write(block)
        except OSError:
            pass
    out.close()


def _feed(child: subprocess.Popen[bytes], text: str) -> None:
    assert child.stdin is not None
    try:
        child.stdin.write(text.encode("utf-8"))
    except (BrokenPipeError, OSError):
        pass
    finally:
        try:
            child.stdin.close()
        except OSError:
            pass


def _beat(db: Database, job_id: int, run_id: int) -> bool:
    try:
        return jobs_state.heartbeat(db, job_id, run_id, at=now_iso(), mono=monotonic())
    except Exception:
        return True  # a locked database is not a lost job; try again next beat


def _kill_own_group(child: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the group (we ignore it ourselves), then SIGKILL every other member."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.killpg(0, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _others_alive():
            child.poll()
            time.sleep(0.05)
        _clear_group(child)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _others_alive() -> bool:
    me = os.getpid()
    return any(pid != me for pid in procs.group_members(os.getpgid(0)))


def _clear_group(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever else is left in our group (background grandchildren)."""
    me = os.getpid()
    for pid in procs.group_members(os.getpgid(0)):
        if pid != me:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    child.poll()


def _record(settings: Settings, db: Database, job_id: int, run_id: int, output: str | None,
            exit_code: int | None, timed_out: bool, stdout: str) -> None:
    from orch.agents import judge_agent_run, parse_output

    report = parse_output(output, stdout)
    outcome, verdict = judge_agent_run(exit_code, timed_out, report)
    error = report.error
    if timed_out:
        error = "timed out"
    elif exit_code not in (0, None) and not error:
        error = f"exit {exit_code}"
    kind = "deferred" if verdict is not None and verdict.value == "DEFER" else outcome.value
    _finish(db, job_id, run_id, exit_code, kind, error, report.session_id, report.cost_usd,
            report.tokens)


def _finish(db: Database, job_id: int, run_id: int, exit_code: int | None, outcome: str,
            error: str | None, session_id: str | None = None, cost_usd: float | None = None,
            tokens: int | None = None) -> None:
    with db.transaction():
        jobs_state.finish_run(db, job_id, run_id, exit_code=exit_code, outcome=outcome,
                              error=error[:2000] if error else None, session_id=session_id,
                              cost_usd=cost_usd, tokens=tokens)
