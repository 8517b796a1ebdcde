"""Overlapping ticks and ticks killed at any instant (SPEC section 4, invariants 1-4 and 6).

Real `orch tick` processes run side by side over one state (the SQLite file, or
a PostgreSQL database: each test runs on both backends); other ticks
are SIGKILLed at random moments (a seeded RNG) while they claim, run inline
commands and write. Afterwards every job ran exactly once (or, when a tick
died under it, again as a new attempt but never beside itself), every task
finished, and nothing is left running. A tick whose list of jobs to judge went
stale while other ticks ran does not apply its verdict to a newer run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

import pytest
from support.db import RawDb
from support.engine import EngineHome, finished, settle_kicks, wait_for, write_script

from orch.engine.commands.init import open_state
from orch.engine.context import Engine
from orch.engine.tick.advance import judge_job
from orch.state import jobs as jobs_state

NO_GATE = {"serial_gate_enabled": False}


def import_tasks(eh: EngineHome, count: int) -> list[int]:
    source = eh.root / "tasks.jsonl"
    source.write_text("".join(json.dumps({"repo": "app", "title": f"task {n}"}) + "\n"
                              for n in range(count)), encoding="utf-8")
    done = eh.cli("task", "import", str(source))
    assert done.returncode == 0, done.stderr
    ids = [row["id"] for row in eh.rows("SELECT id FROM tasks ORDER BY id")]
    assert len(ids) == count
    return ids


class Sampler(threading.Thread):
    """Polls the database every few ms: the most running jobs, and open jobs per task, seen."""

    def __init__(self, eh: EngineHome) -> None:
        super().__init__(daemon=True)
        self.eh = eh
        self.stop = threading.Event()
        self.max_running = 0
        self.max_open_per_task = 0
        self.samples = 0

    def run(self) -> None:
        conn = RawDb(self.eh.location)
        try:
            while not self.stop.is_set():
                running = conn.value("SELECT count(*) FROM jobs WHERE status = 'running'")
                per_task = conn.value(
                    "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM jobs WHERE "
                    "status IN ('queued', 'running') GROUP BY task_id) AS per_task")
                self.max_running = max(self.max_running, running)
                self.max_open_per_task = max(self.max_open_per_task, per_task)
                self.samples += 1
                time.sleep(0.003)
        finally:
            conn.close()


KICKS = pytest.mark.parametrize("kicks", ["cron", "kicks"])


def with_kicks(monkeypatch: pytest.MonkeyPatch, kicks: str) -> bool:
    """Kicks on (a tick started when each run ends) beside the test's own ticks, or off."""
    monkeypatch.setenv("ORCH_KICK_ENABLED", "true" if kicks == "kicks" else "false")
    return kicks == "kicks"


@pytest.mark.slow
@KICKS
def test_overlapping_tick_processes_run_each_job_once_within_max_concurrency(eh, monkeypatch,
                                                                            kicks):
    kicking = with_kicks(monkeypatch, kicks)
    ledger = eh.root / "LEDGER"
    eh.configure(stages=[{"name": "run", "runner": "command",
                          "command": ["sh", "-c", f"echo $ORCH_JOB_ID >> {ledger}"]}],
                 max_concurrency=2, flags=NO_GATE)
    count = 150  # ~15-30 s on 2 cores; the tasks all share one repo and one SQLite file
    ids = import_tasks(eh, count)
    stop, codes = eh.root / "STOP", eh.root / "CODES"
    loop = (f'while [ ! -e "{stop}" ]; do "$@" >/dev/null 2>>"{eh.root}/ERRORS"; '
            f'echo $? >> "{codes}"; done')
    sampler = Sampler(eh)
    sampler.start()
    loops = [subprocess.Popen(["sh", "-c", loop, "loop",
                               *eh.orch_argv("tick", "--max-claims", "5", "--quiet")],
                              env=eh.env()) for _ in range(4)]
    try:
        wait_for(lambda: eh.value("SELECT count(*) FROM tasks WHERE stage = 'done'") == count,
                 150, "every task to finish", pause=0.2)
    finally:
        stop.touch()
        for proc in loops:
            proc.wait(timeout=60)
        sampler.stop.set()
        sampler.join()

    settle_kicks(eh.home)
    exits = Counter(codes.read_text().split())
    assert set(exits) == {"0"}, (exits, (eh.root / "ERRORS").read_text()[-3000:])
    jobs = [row["id"] for row in eh.rows("SELECT id FROM jobs ORDER BY id")]
    assert len(jobs) == count  # one job per task: nothing enqueued twice
    assert sorted(int(line) for line in ledger.read_text().split()) == jobs  # each ran once
    assert all(eh.task(t)["state"] == "closed" for t in ids)
    assert sampler.samples > 100
    assert sampler.max_running <= 2, sampler.max_running
    assert sampler.max_open_per_task <= 1
    assert [e["detail"] for e in eh.events(kind="error")] == []
    assert eh.counter("claims_total") == count  # no job needed a second run
    if kicking:  # the kicked ticks count too
        assert eh.counter("ticks_total") > sum(exits.values())
    else:
        assert eh.counter("ticks_total") == sum(exits.values())
    assert eh.counter("reaped_total") == 0
    eh.check_invariants()
    assert eh.processes() == []


def fork_tick(eh: EngineHome, max_claims: int) -> int:
    """A tick in a forked child (a real separate process, without the interpreter start-up).

    The parent holds no SQLite connection while it forks (every helper query opens and
    closes its own), so the child shares no SQLite state with it.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            eh.tick(max_claims=max_claims)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


@pytest.mark.slow
@KICKS
def test_ticks_killed_at_random_moments_leave_the_invariants_true(eh, monkeypatch, kicks):
    with_kicks(monkeypatch, kicks)
    ledger, locks = eh.root / "LEDGER", eh.root / "locks"
    locks.mkdir()
    # Each run holds an flock on its job's lock file for as long as any process of it
    # lives: a second run of the same job beside it finds the lock taken and says so.
    script = (f'exec 9>"{locks}/$ORCH_JOB_ID.lock"\n'
              f'if ! flock -n 9; then echo "OVERLAP $ORCH_JOB_ID $ORCH_RUN_ID" >> "{ledger}"; '
              'exit 3; fi\n'
              f'echo "RUN $ORCH_JOB_ID $ORCH_RUN_ID" >> "{ledger}"\n'
              'sleep 0.05\n'
              f'echo "END $ORCH_JOB_ID $ORCH_RUN_ID" >> "{ledger}"\n')
    eh.configure(stages=[{"name": "run", "runner": "command", "command": ["sh", "-c", script]}],
                 max_concurrency=2, max_attempts=1000, flags=NO_GATE)
    count = 40
    ids = import_tasks(eh, count)
    rng = random.Random(20261125)
    kills, finished_alone = 0, 0

    # a few real `orch tick` processes first (interpreter start-up included) ...
    for _ in range(15):
        proc = subprocess.Popen(eh.orch_argv("tick", "--max-claims", "2", "--quiet"),
                                env=eh.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 0.6))
        if proc.poll() is None:
            kills += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # ... then many forked ticks, each SIGKILLed after a random delay
    ticks = 300
    for _ in range(ticks):
        pid = fork_tick(eh, max_claims=2)
        time.sleep(rng.uniform(0.0, 0.12))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            kills += 1
        else:
            finished_alone += 1
    # a sanity check that the loop did kill ticks mid-way; how many finish first depends
    # on the machine's speed once the work is done, so only a floor is asserted
    assert kills >= ticks // 10, (kills, finished_alone)

    eh.tick_until(lambda: eh.value("SELECT count(*) FROM tasks WHERE state = 'closed'")
                  == count, max_claims=5, timeout=120, pause=0.05,
                  what="every task to finish after the killing")
    settle_kicks(eh.home)
    wait_for(lambda: eh.processes() == [], 5, "no process of any run to be left")

    lines = ledger.read_text().splitlines()
    assert not [line for line in lines if line.startswith("OVERLAP")], \
        "two runs of one job ran at the same time"
    assert all(eh.task(t)["stage"] == "done" for t in ids)  # invariant 6: nothing lost
    eh.check_invariants()  # invariants 1, 2; no run left open
    assert eh.rows("SELECT id FROM runs WHERE outcome IS NULL OR finished_at IS NULL") == []
    assert eh.rows("SELECT id FROM jobs WHERE status IN ('queued', 'running')") == []
    # at-least-once: every job finished a run of its command (an END line of its final run)
    ended = {(int(job), int(run)) for kind, job, run in (line.split() for line in lines)
             if kind == "END"}
    for job in eh.rows("SELECT id, run_id FROM jobs"):
        assert (job["id"], job["run_id"]) in ended, job
    # a run that was reaped is counted, and a reaped run never ended normally
    reaped = eh.rows("SELECT id FROM runs WHERE outcome = 'reaped'")
    assert eh.counter("reaped_total") == len(reaped)
    assert eh.counter("reaped_total") > 0


def hold_repo_lock(eh: EngineHome):
    """Take the repo's worktree lock as a tick would (blocks ticks in prepare_worktree)."""
    import fcntl

    path = eh.home / "worktrees" / ".app.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a")  # noqa: SIM115 - released by the caller
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def ledger_stage(eh: EngineHome) -> Path:
    ledger = eh.root / "LEDGER"
    eh.configure(stages=[{"name": "run", "runner": "command",
                          "command": ["sh", "-c", f"echo $ORCH_RUN_ID >> {ledger}"]}])
    return ledger


def test_a_tick_that_waits_on_the_repo_keeps_its_claim_alive(eh):
    ledger = ledger_stage(eh)
    task = eh.add_task()
    lock = hold_repo_lock(eh)
    try:
        proc = subprocess.Popen(eh.orch_argv("tick", "--json"), env=eh.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        job = wait_for(lambda: eh.running_job(task), 10, "the tick to claim the job")
        time.sleep(4.5)  # longer than heartbeat_timeout_s (3): the tick heartbeats meanwhile
        report = eh.tick()
        assert report.reaped == [] and report.claimed == []
        assert proc.poll() is None
    finally:
        lock.close()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out)["advanced"][0]["verdict"] == "PASS"
    assert ledger.read_text().split() == [str(job["run_id"])]
    assert eh.task(task)["stage"] == "done"


def test_a_job_cancelled_before_its_inline_command_starts_never_runs(eh):
    ledger = ledger_stage(eh)
    task = eh.add_task()
    lock = hold_repo_lock(eh)
    try:
        proc = subprocess.Popen(eh.orch_argv("tick", "--json"), env=eh.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        job = wait_for(lambda: eh.running_job(task), 10, "the tick to claim the job")
        done = eh.cli("cancel", str(task))
        assert done.returncode == 0, done.stderr
    finally:
        lock.close()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not ledger.exists()  # the claimed run found the job cancelled and did nothing
    assert eh.job(job["id"])["status"] == "cancelled"
    assert eh.task(task)["stage"] == "cancelled"
    assert json.loads(out)["errors"] == []
    eh.check_invariants()


@pytest.mark.slow
def test_ticks_killed_while_they_start_supervisors_never_run_an_agent_twice(eh):
    ledger, locks = eh.root / "LEDGER", eh.root / "locks"
    locks.mkdir()
    agent = write_script(eh.bin / "locked-agent", f"""#!/bin/sh
exec 9>"{locks}/$ORCH_JOB_ID.lock"
if ! flock -n 9; then echo "OVERLAP $ORCH_JOB_ID $ORCH_RUN_ID" >> "{ledger}"; exit 3; fi
echo "RUN $ORCH_JOB_ID $ORCH_RUN_ID" >> "{ledger}"
sleep 0.3
echo "END $ORCH_JOB_ID $ORCH_RUN_ID" >> "{ledger}"
""")
    eh.configure(stages=[{"name": "work", "runner": "agent", "role": "worker",
                          "gate": "exit_zero"}],
                 agents={"worker": {"command": [str(agent)], "timeout_s": 60}},
                 max_concurrency=2, max_attempts=1000, flags=NO_GATE)
    count = 6
    ids = import_tasks(eh, count)
    rng = random.Random(7)
    for _ in range(40):
        pid = fork_tick(eh, max_claims=2)
        time.sleep(rng.uniform(0.0, 0.6))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    eh.tick_until(lambda: eh.value("SELECT count(*) FROM tasks WHERE state = 'closed'")
                  == count, max_claims=2, timeout=60, pause=0.1,
                  what="every task to finish after the killing")
    wait_for(lambda: eh.processes() == [], 10, "every supervisor and agent to exit")
    lines = ledger.read_text().splitlines()
    assert not [line for line in lines if line.startswith("OVERLAP")]
    assert all(eh.task(t)["stage"] == "done" for t in ids)
    eh.check_invariants()
    assert eh.rows("SELECT id FROM runs WHERE outcome IS NULL OR finished_at IS NULL") == []
    # every run that was not reaped was recorded by its own supervisor exactly once
    assert eh.counter("reaped_total") == len(
        eh.rows("SELECT id FROM runs WHERE outcome = 'reaped'"))


def test_a_stale_verdict_is_not_applied_to_a_newer_run_of_the_same_job(eh):
    """`apply_verdict` re-reads the job but does not check that it is still the run the
    verdict was decided for. A tick whose advance list is stale (another tick judged the
    job RETRY, a third claimed it and its new run finished meanwhile) applies the old
    run's RETRY to the new, successful run: with max_attempts 2 the successful run is
    judged HOLD and the task is held instead of done."""
    flag = eh.root / "fail-once"
    flag.write_text("x")
    agent = write_script(eh.bin / "agent", f"""#!/bin/sh
if [ -e "{flag}" ]; then rm -f "{flag}"; exit 1; fi
exit 0
""")
    eh.configure(stages=[{"name": "work", "runner": "agent", "role": "worker",
                          "gate": "exit_zero"}],
                 agents={"worker": {"command": [str(agent)], "timeout_s": 60}},
                 max_attempts=2)
    task = eh.add_task()
    eh.tick()  # claim attempt 1 (it fails)
    [job] = eh.jobs(task)
    wait_for(lambda: finished(eh, job["id"]), 15, "attempt 1 to end")

    settings = eh.settings()
    db = open_state(settings)
    try:
        [stale] = jobs_state.unjudged(db)  # a slow tick's advance list, read now
        eh.tick()  # another tick: RETRY, requeued as attempt 2
        assert eh.job(job["id"])["attempt"] == 2
        eh.tick()  # a third tick claims attempt 2, which succeeds
        wait_for(lambda: eh.job(job["id"])["status"] == "succeeded", 15, "attempt 2 to end")
        # the slow tick reaches its stale row only now
        judge_job(Engine(settings, eh.pipeline(settings), db), stale)
    finally:
        db.close()
    after = eh.job(job["id"])
    assert after["status"] == "succeeded" and after["judged"] == 0, (
        f"the verdict of run {stale['run_id']} was applied to run {after['run_id'] or '?'}: "
        f"{after}")
    eh.tick()
    assert eh.task(task)["stage"] == "done"
