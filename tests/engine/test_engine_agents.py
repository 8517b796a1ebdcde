"""Agent runs under the supervisor, judged by more than their exit code (SPEC section 5).

Fake agents are small scripts; a fake `claude` on PATH prints the result
object of `claude -p --output-format json`. Covered: the role timeout kills
the whole group (grandchildren that ignore SIGTERM included), hollow
successes are retried and never pass, a provider limit is a DEFER, attempts
run out into a HOLD that `orch retry` lifts, the budget stops a run before
it starts, and `orch cancel` terminates a running group.
"""

from __future__ import annotations

import time
from pathlib import Path

from support.engine import (
    EngineHome,
    alive,
    claude_result,
    finished,
    group_alive,
    wait_for,
    write_script,
)

WORK = {"name": "work", "runner": "agent", "role": "worker", "gate": "exit_zero"}
CLAUDE = ["claude", "-p", "--output-format", "json", "{prompt}"]
STOP = {"ORCH_MAX_CONCURRENCY": "0"}  # a tick that reaps and judges but starts nothing


def fake_claude(eh: EngineHome, output: str, exit_code: int = 0) -> Path:
    """`claude` on PATH: counts its calls in bin/claude.calls and prints `output`."""
    calls = eh.bin / "claude.calls"
    (eh.bin / "claude.out").write_text(output + "\n", encoding="utf-8")
    write_script(eh.bin / "claude", f"""#!/bin/sh
echo "$ORCH_RUN_ID" >> "{calls}"
cat "{eh.bin / 'claude.out'}"
exit {exit_code}
""")
    return calls


def calls(eh: EngineHome) -> list[str]:
    path = eh.bin / "claude.calls"
    return path.read_text().split() if path.exists() else []


def first_job(eh: EngineHome, task: int) -> dict:
    return eh.jobs(task)[0]


def test_agent_timeout_kills_the_group_grandchildren_included_and_retries(eh):
    state = eh.root / "state"
    state.mkdir()
    script = write_script(eh.bin / "stubborn", f"""#!/bin/sh
sh -c "trap '' TERM; sleep 300; true" &
sleep 300 &
echo $$ > "{state}/agent"
wait
""")
    eh.configure(stages=[WORK], agents={"worker": {"command": [str(script)], "timeout_s": 2}})
    task = eh.add_task()
    eh.tick()
    job, run = eh.wait_registered(task)
    pgid = run["pgid"]
    wait_for(lambda: len(group_alive(pgid)) >= 5, 10,
             "the agent and its grandchildren to start")  # supervisor, sh, 2 x sleep, sh
    started = time.monotonic()
    wait_for(lambda: finished(eh, job["id"]), 15, "the supervisor to time the agent out")
    took = time.monotonic() - started
    assert took < 12, took  # timeout_s 2, then SIGKILL after cancel_grace_s 1
    wait_for(lambda: group_alive(pgid) == [], 5, "the whole group to be gone")

    ended = eh.run(run["id"])
    assert ended["outcome"] == "timeout"
    assert eh.job(job["id"])["error"] == "timed out"
    report = eh.tick(env=STOP)
    assert {"task": task, "from": "work", "to": "work", "verdict": "RETRY"} in report.advanced
    again = eh.job(job["id"])
    assert again["status"] == "queued" and again["verdict"] == "RETRY"
    assert again["attempt"] == 2
    assert eh.processes() == []
    eh.check_invariants()


def test_a_hollow_success_is_retried_and_never_passes(eh):
    fake_claude(eh, claude_result(is_error=True, result="boom"))
    eh.configure(stages=[WORK], max_attempts=2,
                 agents={"worker": {"command": CLAUDE, "output": "claude-json",
                                    "timeout_s": 30}})
    task = eh.add_task()
    eh.tick()
    job = first_job(eh, task)
    wait_for(lambda: finished(eh, job["id"]), 15, "the first run to end")
    run = eh.runs(job["id"])[0]
    assert run["outcome"] == "hollow-success" and run["exit_code"] == 0
    assert run["session_id"] == "fake-session" and run["tokens"] == 7
    assert "boom" in eh.job(job["id"])["error"]

    report = eh.tick(env=STOP)
    assert [a["verdict"] for a in report.advanced] == ["RETRY"]
    again = eh.job(job["id"])
    assert (again["status"], again["verdict"], again["attempt"]) == ("queued", "RETRY", 2)

    eh.tick_until(lambda: eh.task(task)["state"] == "held", timeout=30,
                  what="the task to hold after max_attempts")
    assert [r["outcome"] for r in eh.runs(job["id"])] == ["hollow-success"] * 2
    assert eh.job(job["id"])["verdict"] == "HOLD"
    held = eh.task(task)
    assert held["stage"] == "work" and "attempts used up (2 of 2)" in held["hold_reason"]
    assert eh.events(task, "passed") == []
    assert len(calls(eh)) == 2


def test_a_provider_limit_is_a_defer_that_burns_no_attempt(eh):
    fake_claude(eh, claude_result(is_error=True, result="Claude AI usage limit reached"))
    eh.configure(stages=[WORK], agents={"worker": {"command": CLAUDE, "output": "claude-json",
                                                   "timeout_s": 30}})
    task = eh.add_task()
    eh.tick()
    job = first_job(eh, task)
    wait_for(lambda: finished(eh, job["id"]), 15, "the run to end")
    assert eh.runs(job["id"])[0]["outcome"] == "deferred"

    report = eh.tick(env=STOP)
    assert [a["verdict"] for a in report.advanced] == ["DEFER"]
    deferred = eh.job(job["id"])
    assert (deferred["status"], deferred["verdict"]) == ("queued", "DEFER")
    assert deferred["attempt"] == 1 and deferred["defers"] == 1
    assert eh.runs(job["id"])[0]["outcome"] == "deferred"
    assert "defer 1 of 5" in eh.events(task, "deferred")[0]["detail"]
    assert eh.task(task)["state"] == "active"
    eh.check_invariants()


def test_failing_runs_hold_the_task_after_max_attempts_and_orch_retry_starts_afresh(eh):
    flag = eh.root / "behave"
    script = write_script(eh.bin / "flaky", f"""#!/bin/sh
[ -e "{flag}" ] && exit 0
echo "it went wrong" >&2
exit 1
""")
    eh.configure(stages=[WORK], max_attempts=2,
                 agents={"worker": {"command": [str(script)], "timeout_s": 30}})
    task = eh.add_task()
    eh.tick_until(lambda: eh.task(task)["state"] == "held", timeout=30,
                  what="the task to hold")
    [held_job] = eh.jobs(task)
    assert [r["outcome"] for r in eh.runs(held_job["id"])] == ["failed", "failed"]
    assert (held_job["verdict"], held_job["attempt"]) == ("HOLD", 2)
    assert "attempts used up (2 of 2)" in eh.task(task)["hold_reason"]
    assert eh.tick().claimed == []  # a held task gets no new job

    done = eh.cli("retry", str(task))
    assert done.returncode == 0, done.stderr
    assert eh.task(task)["state"] == "active" and eh.task(task)["hold_reason"] is None
    flag.touch()
    eh.tick_until(lambda: eh.task(task)["stage"] == "done", timeout=30,
                  what="the retried task to pass")
    old, new = eh.jobs(task)
    assert old["id"] == held_job["id"] and old["verdict"] == "HOLD"
    assert new["attempt"] == 1 and new["verdict"] == "PASS"
    assert [r["outcome"] for r in eh.runs(new["id"])] == ["succeeded"]
    assert eh.events(task, "retried")


def test_the_budget_holds_a_task_before_its_next_agent_run_starts(eh):
    fake_claude(eh, claude_result(cost=5))
    agent = {"command": CLAUDE, "output": "claude-json", "timeout_s": 30}
    eh.configure(stages=[{**WORK, "name": "first"}, {**WORK, "name": "second"}],
                 agents={"worker": agent}, budget={"task_usd": 4})
    task = eh.add_task()
    eh.tick_until(lambda: eh.task(task)["state"] == "held", timeout=30,
                  what="the budget hold")
    held = eh.task(task)
    assert (held["stage"], held["hold_reason"]) == ("second", "budget")
    assert len(calls(eh)) == 1  # the second agent run was never started
    first, second = eh.jobs(task)
    assert eh.runs(first["id"])[0]["cost_usd"] == 5
    assert (second["status"], second["verdict"]) == ("failed", "HOLD")
    [run] = eh.runs(second["id"])
    assert run["outcome"] == "cancelled" and "task ceiling $4 reached" in run["detail"]
    assert "task ceiling" in eh.events(task, "budget")[0]["detail"]
    for _ in range(2):  # it stays held: no run starts past the ceiling
        assert eh.tick().claimed == []
    assert len(calls(eh)) == 1
    eh.check_invariants()


def test_orch_cancel_terminates_the_running_group_and_closes_the_task(eh):
    script = write_script(eh.bin / "stubborn", """#!/bin/sh
sh -c "trap '' TERM; sleep 300; true" &
sleep 300
""")
    eh.configure(stages=[WORK], agents={"worker": {"command": [str(script)],
                                                   "timeout_s": 600}})
    task = eh.add_task()
    eh.tick_cli()
    job, run = eh.wait_registered(task)
    pgid = run["pgid"]
    wait_for(lambda: len(group_alive(pgid)) >= 4, 10, "the agent and its grandchild")

    started = time.monotonic()
    done = eh.cli("cancel", str(task))
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert group_alive(pgid) == [] and not alive(job["pid"])
    assert took < 12, took  # SIGTERM, SIGKILL after cancel_grace_s 1 for the stubborn one
    cancelled = eh.job(job["id"])
    assert cancelled["status"] == "cancelled"
    assert eh.run(run["id"])["outcome"] == "cancelled"
    closed = eh.task(task)
    assert (closed["stage"], closed["state"]) == ("cancelled", "closed")
    assert eh.events(task, "cancelled")

    report = eh.tick()
    assert report.reaped == [] and report.claimed == [] and report.enqueued == []
    assert eh.job(job["id"])["status"] == "cancelled"
    assert eh.processes() == []
    eh.check_invariants()
