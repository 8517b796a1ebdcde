"""The reaper's evidence: is a running job's owner alive? (SPEC section 5.2)

`check_liveness` reads /proc through orch.procs; these tests give it the
identities of real processes: ourselves, a child that exited (a zombie), a
pid that no process has, and our own pid with another start time (a reused
pid).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from orch import procs
from orch.engine.tick.reap import Liveness, check_liveness
from orch.model import JobStatus
from orch.procs import Identity
from orch.state.records import Job

HERE = Identity.here()
NOW = "2026-12-02T00:00:00.000000Z"


def job(pid: int | None, started: int | None, *, host: str | None = HERE.host,
        boot: str | None = HERE.boot_id, mono: float | None = None,
        beat_at: str | None = NOW) -> Job:
    return Job(id=1, task_id=1, stage="analysis", runner="agent", status=JobStatus.RUNNING,
               attempt=1, defers=0, verdict=None, run_id=1, pid=pid, pid_started=started,
               host=host, boot_id=boot, started_at=NOW, heartbeat_at=beat_at,
               heartbeat_mono=time.monotonic() if mono is None else mono, finished_at=None,
               not_before=None, exit_code=None, error=None, created_at=NOW, judged=True)


def judge(row: Job, timeout: float = 60.0, now_wall: float | None = None) -> Liveness:
    return check_liveness(row, HERE, timeout, time.monotonic(),
                          time.time() if now_wall is None else now_wall)


def test_a_live_process_with_its_start_time_is_alive() -> None:
    got = judge(job(HERE.pid, HERE.started))
    assert not got.dead and got.local


def test_no_process_with_that_pid_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    got = judge(job(child.pid, 1))
    assert got.dead and "no process" in got.evidence


def test_a_reused_pid_is_dead_and_named_so() -> None:
    got = judge(job(HERE.pid, (HERE.started or 0) + 1))
    assert got.dead and "pid reused" in got.evidence


def test_a_zombie_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while not procs.is_zombie(child.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        got = judge(job(child.pid, procs.start_ticks(child.pid)))
        assert got.dead and "zombie" in got.evidence
    finally:
        child.wait()


def test_a_stale_monotonic_heartbeat_is_dead_even_if_the_pid_lives() -> None:
    got = judge(job(HERE.pid, HERE.started, mono=time.monotonic() - 120), timeout=60)
    assert got.dead and "monotonic" in got.evidence


def test_another_boot_is_dead_and_not_local() -> None:
    got = judge(job(HERE.pid, HERE.started, boot="another-boot"))
    assert got.dead and not got.local and "rebooted" in got.evidence


@pytest.mark.parametrize(("age", "dead"), [(10.0, False), (120.0, True)])
def test_another_host_is_judged_by_its_wall_clock_heartbeat(age: float, dead: bool) -> None:
    from orch.timeutil import epoch_of

    got = judge(job(os.getpid(), 1, host="elsewhere"), timeout=60,
                now_wall=epoch_of(NOW) + age)
    assert got.dead is dead and not got.local
