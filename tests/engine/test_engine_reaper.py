"""The reaper and the sanitizer against real processes (SPEC sections 4 and 5.1-5.2).

A supervisor's process group is killed with SIGKILL, stopped, moved to
another boot or host, or its recorded pid is pointed at an unrelated
process; each time the next tick must judge it by the right evidence, kill
only what is the run's, and requeue the job as a new attempt.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.engine import (
    EngineHome,
    alive,
    group_alive,
    start_unrelated_sleeper,
    wait_for,
    write_script,
)
from support.env import keep_env

from orch import procs

WORK = {"name": "work", "runner": "agent", "role": "worker", "gate": "exit_zero"}


def sleepy_agent(eh: EngineHome) -> Path:
    """A worker that, while $STATE/misbehave exists, starts a background `sleep` and sleeps;
    otherwise it exits 0 at once. Each run records its pid and its grandchild's."""
    state = eh.root / "state"
    state.mkdir()
    (state / "misbehave").touch()
    script = write_script(eh.bin / "sleepy-agent", """#!/bin/sh
echo $$ > "$STATE/agent-$ORCH_RUN_ID"
if [ -e "$STATE/misbehave" ]; then
  sleep 300 &
  echo $! > "$STATE/grandchild-$ORCH_RUN_ID"
  sleep 300
fi
exit 0
""")
    eh.configure(stages=[WORK], agents={"worker": {"command": [str(script)], "timeout_s": 600,
                                                   "env": {"STATE": str(state)}}})
    return state


def grandchild(state: Path, run_id: int) -> int:
    path = state / f"grandchild-{run_id}"
    wait_for(lambda: path.exists() and path.read_text().strip(), 15,
             f"run {run_id}'s agent to start its background sleep")
    return int(path.read_text())


def start_sleeping_run(eh: EngineHome, *, cli: bool) -> tuple[int, dict, dict, Path]:
    state = sleepy_agent(eh)
    task = eh.add_task("sleeps")
    report = eh.tick_cli() if cli else eh.tick().as_dict()
    assert [c["task"] for c in report["claimed"]] == [task], report
    job, run = eh.wait_registered(task)
    grandchild(state, run["id"])
    return task, job, run, state


def test_kill9_of_the_supervisor_group_is_reaped_once_and_the_task_proceeds(eh):
    task, job, run, state = start_sleeping_run(eh, cli=True)  # supervisor: not our child
    pgid = run["pgid"]
    assert job["pid"] == pgid and job["pid_started"] == procs.start_ticks(pgid)
    assert len(group_alive(pgid)) >= 3  # supervisor, agent, its background sleep

    quiet = eh.tick()  # alive and heartbeating: nothing to reap, nothing else to start
    assert quiet.reaped == [] and quiet.claimed == []
    assert eh.counter("reaped_total") == 0

    os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: not group_alive(pgid), 5, "the killed group to be gone")
    (state / "misbehave").unlink()  # the next attempt behaves

    report = eh.tick()
    assert report.reaped == [job["id"]]
    assert eh.counter("reaped_total") == 1
    reaped = eh.events(task, "reaped")
    assert len(reaped) == 1 and reaped[0]["job_id"] == job["id"]
    assert f"run {run['id']} reaped" in reaped[0]["detail"]
    assert re.search(rf"no process has pid {job['pid']}|pid {job['pid']} is a zombie",
                     reaped[0]["detail"]), reaped[0]["detail"]
    old = eh.run(run["id"])
    assert old["outcome"] == "reaped" and old["finished_at"] is not None
    assert not group_alive(pgid)

    # requeued as a new attempt, clean; it runs at the next tick, never twice in one
    assert report.claimed == []
    again = eh.job(job["id"])
    assert again["status"] == "queued" and again["attempt"] == 2 and again["run_id"] is None

    eh.tick_until(lambda: eh.task(task)["stage"] == "done", timeout=30, what="the task to pass")
    runs = eh.runs(job["id"])
    assert [r["outcome"] for r in runs] == ["reaped", "succeeded"]
    assert runs[0]["finished_at"] <= runs[1]["started_at"]  # never two live runs of the job
    assert eh.counter("reaped_total") == 1
    assert eh.processes() == []
    eh.check_invariants()


def test_a_killed_supervisor_leaves_its_agent_which_the_reaper_kills(eh):
    task, job, run, state = start_sleeping_run(eh, cli=False)  # supervisor: our child (zombie)
    pgid = run["pgid"]
    agent_pid = int((state / f"agent-{run['id']}").read_text())
    sleeper = grandchild(state, run["id"])

    os.kill(job["pid"], signal.SIGKILL)  # the supervisor alone: agent and grandchild live on
    wait_for(lambda: not alive(job["pid"]), 5, "the supervisor to die")
    assert alive(agent_pid) and alive(sleeper)

    report = eh.tick(env={"ORCH_MAX_CONCURRENCY": "0"})  # reap, start nothing new
    assert report.reaped == [job["id"]] and report.claimed == []
    detail = eh.events(task, "reaped")[0]["detail"]
    assert re.search(rf"no process has pid {job['pid']}|pid {job['pid']} is a zombie", detail)
    assert re.search(r"ended [3-9] process\(es\) of the run", detail), detail
    assert not alive(agent_pid) and not alive(sleeper)
    assert group_alive(pgid) == []
    queued = eh.job(job["id"])
    assert queued["status"] == "queued" and queued["attempt"] == 2
    assert eh.processes() == []
    eh.check_invariants()


def test_a_stopped_supervisor_is_reaped_by_its_stale_heartbeat(eh):
    task, job, run, _ = start_sleeping_run(eh, cli=False)
    pgid = run["pgid"]
    os.kill(job["pid"], signal.SIGSTOP)  # alive, same start time, but no more heartbeats
    try:
        assert eh.tick(env={"ORCH_MAX_CONCURRENCY": "0"}).reaped == []
        time.sleep(3.5)  # heartbeat_timeout_s is 3
        report = eh.tick(env={"ORCH_MAX_CONCURRENCY": "0"})
    finally:
        if alive(job["pid"]):
            os.kill(job["pid"], signal.SIGCONT)
    assert report.reaped == [job["id"]]
    detail = eh.events(task, "reaped")[0]["detail"]
    assert "heartbeat stale" in detail and "monotonic" in detail
    assert re.search(r"ended \d+ process\(es\) of the run", detail), detail
    assert group_alive(pgid) == []
    assert eh.run(run["id"])["outcome"] == "reaped"


def test_another_boot_or_host_is_judged_without_killing_and_the_old_run_is_fenced(eh):
    task, job, run, _ = start_sleeping_run(eh, cli=False)
    pgid = run["pgid"]

    # another host with a fresh heartbeat: alive, whatever /proc says here
    eh.write("UPDATE jobs SET host = 'elsewhere.invalid', heartbeat_at = ? WHERE id = ?",
             (time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()), job["id"]))
    assert eh.tick(env={"ORCH_MAX_CONCURRENCY": "0"}).reaped == []
    eh.write("UPDATE jobs SET host = ? WHERE id = ?", (job["host"], job["id"]))

    # this machine rebooted (boot id differs): dead, but nothing of it is ours to kill here
    eh.write("UPDATE jobs SET boot_id = 'another-boot' WHERE id = ?", (job["id"],))
    report = eh.tick(env={"ORCH_MAX_CONCURRENCY": "0"})
    assert report.reaped == [job["id"]]
    detail = eh.events(task, "reaped")[0]["detail"]
    assert "rebooted" in detail and "not on this machine" in detail

    # the old supervisor lost the job: its next heartbeat finds no row, it kills its agent
    # and leaves without writing anything
    wait_for(lambda: not group_alive(pgid), 10, "the fenced supervisor to kill its group")
    assert eh.run(run["id"])["outcome"] == "reaped"
    queued = eh.job(job["id"])
    assert queued["status"] == "queued" and queued["run_id"] is None
    eh.check_invariants()


@pytest.mark.parametrize("case", ["job-pid-reused", "group-leader-reused",
                                  "group-of-another-process"])
def test_a_reused_pid_is_dead_and_never_signalled(eh, case):
    task, job, run, _ = start_sleeping_run(eh, cli=False)
    os.killpg(run["pgid"], signal.SIGKILL)
    wait_for(lambda: not group_alive(run["pgid"]), 5, "the killed group to be gone")

    if case == "group-of-another-process":
        other = start_unrelated_sleeper_in_shell()
        member = wait_for(lambda: [p for p in procs.group_members(other.pid)
                                   if p != other.pid], 5, "the unrelated shell's child")[0]
    else:
        other = start_unrelated_sleeper()
        member = other.pid
    try:
        real = procs.start_ticks(member)
        assert real is not None
        if case == "job-pid-reused":
            eh.write("UPDATE jobs SET pid = ?, pid_started = ? WHERE id = ?",
                     (other.pid, real - 7, job["id"]))
        elif case == "group-of-another-process":
            eh.write("UPDATE jobs SET pid = ?, pid_started = ? WHERE id = ?",
                     (member, real - 7, job["id"]))
        eh.write("UPDATE runs SET pgid = ?, pgid_started = ? WHERE id = ?",
                 (other.pid, real - 7, run["id"]))

        report = eh.tick(env={"ORCH_MAX_CONCURRENCY": "0"})
        assert report.reaped == [job["id"]]
        detail = eh.events(task, "reaped")[0]["detail"]
        if case == "group-leader-reused":
            # a killed supervisor whose parent has not reaped it yet is a zombie: dead too
            assert re.search(rf"no process has pid {job['pid']}|pid {job['pid']} is a zombie",
                             detail), detail
        else:
            assert "start time differs: pid reused" in detail
        assert "no process of the run was left" in detail  # the other pid: never ours
        time.sleep(0.3)
        assert other.poll() is None and alive(other.pid) and alive(member)
        queued = eh.job(job["id"])
        assert queued["status"] == "queued" and queued["attempt"] == 2
        assert eh.counter("reaped_total") == 1
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait()


def start_unrelated_sleeper_in_shell() -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if keep_env(k)}
    return subprocess.Popen(["sh", "-c", "sleep 60; true"], env=env, start_new_session=True)


def queued_jobs(eh: EngineHome) -> list[dict]:
    return eh.rows("SELECT * FROM jobs WHERE status = 'queued' ORDER BY id")


def test_sanitize_repairs_corrupted_queued_rows_or_leaves_them_with_the_flag_off(eh):
    eh.configure(repo={"max_active": 2})
    first, second = eh.add_task("one"), eh.add_task("two")
    stop = {"ORCH_MAX_CONCURRENCY": "0"}  # admit and enqueue, claim nothing
    assert eh.tick(env=stop).enqueued
    a, b = queued_jobs(eh)
    corrupt = ("UPDATE jobs SET run_id = 999, pid = 4242, started_at = "
               "'2026-01-01T00:00:00.000000Z' WHERE id = ?")
    with pytest.raises(Exception, match=r"(?i)check"):
        eh.write(corrupt, (a["id"],))  # the schema refuses it...
    eh.write(corrupt, (a["id"],), ignore_checks=True)  # ...unless checks are switched off
    eh.write("UPDATE jobs SET heartbeat_mono = 12.5 WHERE id = ?", (b["id"],),
             ignore_checks=True)

    # flag off (from the environment, in a separate tick process): left alone
    off = eh.tick_cli(env={**stop, "ORCH_IMPOSSIBLE_QUEUED_SANITIZE_ENABLED": "false"})
    assert off["sanitized"] == 0
    assert eh.counter("impossible_queued_total") == 0
    assert eh.job(a["id"])["run_id"] == 999 and eh.job(b["id"])["heartbeat_mono"] == 12.5
    assert eh.events(kind="sanitized") == []

    report = eh.tick(env=stop)
    assert report.sanitized == 2
    assert eh.counter("impossible_queued_total") == 2
    events = eh.events(kind="sanitized")
    assert [(e["task_id"], e["job_id"]) for e in events] == [(first, a["id"]),
                                                             (second, b["id"])]
    assert "run_id=999" in events[0]["detail"] and "pid=4242" in events[0]["detail"]
    assert "heartbeat_mono=12.5" in events[1]["detail"]
    eh.check_invariants()
    assert eh.tick(env=stop).sanitized == 0  # nothing left to repair

    eh.tick_until(lambda: all(eh.task(t)["stage"] == "done" for t in (first, second)),
                  max_claims=2, timeout=30, what="both tasks to finish")
    assert eh.counter("impossible_queued_total") == 2


def test_a_command_whose_group_was_never_recorded_is_found_by_its_run_mark(eh):
    """A tick killed between starting an inline command and recording its group: the
    command carries the run's mark, so the reaper finds it; another home's run with the
    same run id (another mark) is left alone."""
    from orch.home import Home
    from orch.state import jobs as jobs_state
    from orch.state.jobs import Owner
    from orch.timeutil import now_iso

    task = eh.add_task()
    eh.tick(env={"ORCH_MAX_CONCURRENCY": "0"})  # admitted and enqueued
    gone = subprocess.Popen(["true"])
    gone.wait()
    with eh.database() as db:  # the real claim, by an owner that has died since
        owner = Owner(gone.pid, 1, procs.hostname(), procs.boot_id(), time.monotonic())
        claimed = jobs_state.claim_next(db, now=now_iso(), max_concurrency=1, owner=owner,
                                        log_dir=str(eh.settings().paths.logs))
    assert claimed is not None
    job, run = claimed
    env = {k: v for k, v in os.environ.items() if keep_env(k)}
    other_home = eh.root / "other"
    other_home.mkdir()
    marks = {"ORCH_HOME": str(eh.home), "ORCH_RUN_ID": str(run.id),
             "ORCH_RUN_MARK": Home(eh.home).run_mark(run.id)}
    orphan = subprocess.Popen(["sh", "-c", "sleep 60; true"], env={**env, **marks},
                              start_new_session=True)
    decoy = subprocess.Popen(["sh", "-c", "sleep 60; true"], start_new_session=True,
                             env={**env, **marks, "ORCH_HOME": str(other_home),
                                  "ORCH_RUN_MARK": Home(other_home).run_mark(run.id)})
    try:
        wait_for(lambda: len(group_alive(orphan.pid)) == 2, 5, "the orphan's sleep")
        report = eh.tick(env={"ORCH_MAX_CONCURRENCY": "0"})
        assert report.reaped == [job.id]
        detail = eh.events(task, "reaped")[0]["detail"]
        assert "ended 2 process(es) of the run" in detail, detail
        orphan.wait(timeout=5)
        assert group_alive(orphan.pid) == []
        assert decoy.poll() is None  # another home's run with the same number: not ours
    finally:
        for proc in (orphan, decoy):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_a_run_reaped_at_its_last_attempt_holds_the_task(eh):
    sleepy_agent(eh)
    eh.configure(stages=[WORK], max_attempts=1,
                 agents={"worker": {"command": [str(eh.bin / "sleepy-agent")], "timeout_s": 600,
                                    "env": {"STATE": str(eh.root / "state")}}})
    task = eh.add_task()
    eh.tick()
    job, run = eh.wait_registered(task)
    os.killpg(run["pgid"], signal.SIGKILL)
    wait_for(lambda: not group_alive(run["pgid"]), 5, "the killed group to be gone")
    report = eh.tick()
    assert report.reaped == [job["id"]] and report.claimed == []
    assert {"task": task, "from": "work", "to": "work", "verdict": "HOLD"} in report.advanced
    held = eh.task(task)
    assert held["state"] == "held"
    assert held["hold_reason"].startswith("attempts used up (1 of 1): last run reaped")
    closed = eh.job(job["id"])
    assert (closed["status"], closed["verdict"]) == ("failed", "HOLD")
    assert eh.counter("reaped_total") == 1
    eh.check_invariants()


def test_a_stopped_tick_is_reaped_its_command_killed_and_its_late_writes_fenced(eh):
    eh.configure(stages=[{"name": "run", "runner": "command",
                          "command": ["sh", "-c", "sleep 30; true"]}])
    task = eh.add_task()
    tick = subprocess.Popen(eh.orch_argv("tick", "--json"), env=eh.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job = wait_for(lambda: eh.running_job(task), 15, "the tick to claim the job")
        run = wait_for(lambda: eh.run(job["run_id"])["pgid"] and eh.run(job["run_id"]), 15,
                       "the command's group to be recorded")
        assert job["pid"] == tick.pid  # an inline job is owned by its tick
        os.kill(tick.pid, signal.SIGSTOP)
        time.sleep(3.5)  # heartbeat_timeout_s 3: the stopped tick stops heartbeating
        report = eh.tick(env={"ORCH_MAX_CONCURRENCY": "0"})
        assert report.reaped == [job["id"]]
        detail = eh.events(task, "reaped")[0]["detail"]
        assert "heartbeat stale" in detail and "of the run" in detail
        assert group_alive(run["pgid"]) == []
    finally:
        os.kill(tick.pid, signal.SIGCONT)
    out, err = tick.communicate(timeout=30)
    assert tick.returncode == 0, err
    assert json.loads(out)["advanced"] == []  # its run was reaped: no verdict from it
    assert eh.run(run["id"])["outcome"] == "reaped"
    after = eh.job(job["id"])
    assert (after["status"], after["attempt"], after["run_id"]) == ("queued", 2, None)
    eh.check_invariants()
