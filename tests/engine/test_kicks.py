"""Kicks: a tick starts the moment work is ready (SPEC section 5, "No waiting for the clock").

Everything here is real processes: `orch task add` and `orch tick` as separate
programs, supervisors and the ticks they kick detached in their own sessions.
No test calls `orch tick` after adding its task unless it says so: only kicks
move the work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.engine import EngineHome, kicked_ticks, settle_kicks, wait_for

KICKS_ON = {"ORCH_KICK_ENABLED": "true"}
THREE_STAGES = [{"name": name, "runner": "command", "command": ["true"]}
                for name in ("build", "check", "ship")]


def settle(eh: EngineHome) -> None:
    settle_kicks(eh.home)


@pytest.fixture
def kicks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_KICK_ENABLED", "true")


def test_a_pipeline_reaches_done_on_kicks_alone(eh: EngineHome, kicks: None) -> None:
    """An agent stage (its supervisor kicks when the run ends) and two command stages
    (each inline run judged kicks): `task add` is the only command anyone runs."""
    eh.configure(stages=[{"name": "think", "runner": "agent", "role": "thinker",
                          "gate": "exit_zero"}, *THREE_STAGES[1:]],
                 agents={"thinker": {"command": ["sh", "-c", "sleep 0.2"]}})
    started = time.monotonic()
    added = eh.cli("task", "add", "--repo", "app", "--title", "kicked")
    assert added.returncode == 0, added.stderr
    task = int(added.stdout)
    wait_for(lambda: eh.task(task)["stage"] == "done", 60, "the task to finish on kicks")
    took = time.monotonic() - started
    settle(eh)
    jobs = eh.rows("SELECT * FROM jobs WHERE task_id = ? ORDER BY id", (task,))
    assert [j["stage"] for j in jobs] == ["think", "check", "ship"]
    assert all(j["verdict"] == "PASS" for j in jobs)
    assert eh.counter("ticks_total") >= 3
    assert took < 30, f"{took:.1f} s from task add to done"
    eh.check_invariants()


def test_with_kicks_off_nothing_moves_without_the_scheduler(eh: EngineHome) -> None:
    eh.configure(stages=THREE_STAGES)
    added = eh.cli("task", "add", "--repo", "app", "--title", "still",
                   env={"ORCH_KICK_ENABLED": "false"})
    task = int(added.stdout)
    time.sleep(3)
    assert eh.task(task)["state"] == "waiting"
    assert eh.counter("ticks_total") == 0
    assert not kicked_ticks(eh.home)


def test_kicks_never_pile_up(eh: EngineHome, kicks: None) -> None:
    """20 quick `task add`s: at most two kicked ticks alive at any sample (one waiting to
    start, one running), and every task admitted in the end."""
    eh.configure(stages=THREE_STAGES, max_concurrency=0)  # nothing runs: only admissions
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(kicked_ticks(eh.home)))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for i in range(20):
            done = eh.cli("task", "add", "--repo", "app", "--title", f"quick {i}")
            assert done.returncode == 0, done.stderr
        settle(eh)
    finally:
        stop.set()
        sampler.join()
    assert 1 <= peak[0] <= 2, peak[0]
    # the last add came after every earlier kicked tick had read the state, or was
    # absorbed by one that had not: nothing waits for the scheduler
    wait_for(lambda: eh.value("SELECT count(*) FROM tasks WHERE state = 'active'") == 1, 10,
             "the head of the serial gate to be admitted")
    assert not eh.rows("SELECT id FROM events WHERE kind = 'kick-failed'")


def test_a_kick_that_cannot_start_is_an_event_and_the_verdict_stands(
        eh: EngineHome, kicks: None, tmp_path: Path) -> None:
    """The tick runs from an interpreter path that the stage's own command removes: the
    kick after the inline run is judged cannot start a tick (sys.executable is gone)."""
    python = tmp_path / "python-gone"
    python.symlink_to(sys.executable)
    # the link is no virtualenv's interpreter: it finds orch through our import path
    imports = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    env = eh.env({**KICKS_ON, "PYTHONPATH": imports})
    eh.configure(stages=[{"name": "only", "runner": "command",
                          "command": ["rm", "-f", str(python)]}])
    task = eh.add_task()
    eh.tick(max_claims=0)  # admitted and enqueued (in-process: kicks off here)
    done = subprocess.run([str(python), "-m", "orch", "--home", str(eh.home), "tick", "--json"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert eh.task(task)["stage"] == "done"
    [job] = eh.rows("SELECT * FROM jobs WHERE task_id = ?", (task,))
    assert (job["status"], job["verdict"]) == ("succeeded", "PASS")
    failed = eh.rows("SELECT detail FROM events WHERE kind = 'kick-failed'")
    assert failed and "cannot start a tick" in failed[0]["detail"], failed
    assert '"errors": []' in done.stdout


def test_inline_stages_chain_in_one_tick_up_to_max_claims(eh: EngineHome) -> None:
    eh.configure(stages=THREE_STAGES, retry_backoff_s=0)
    task = eh.add_task()
    report = eh.tick(max_claims=3)
    assert [entry["to"] for entry in report.advanced] == ["check", "ship", "done"]
    assert len(report.claimed) == 3
    assert eh.task(task)["stage"] == "done"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_tick_every_runs_in_the_foreground_until_a_signal(eh: EngineHome, sig: int) -> None:
    """`orch tick --every S` where there is no cron: ticks at that period, and a signal
    ends it after the tick in progress with exit 0."""
    eh.configure(stages=THREE_STAGES)
    proc = subprocess.Popen(eh.orch_argv("tick", "--every", "0.3", "--quiet"), env=eh.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        task = eh.add_task()
        wait_for(lambda: eh.task(task)["stage"] == "done", 30, "the task to finish")
        ticks = eh.counter("ticks_total")
        assert ticks >= 3  # one stage a tick (max-claims 1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert err == "" and out == ""
    eh.check_invariants()


def test_inline_stages_chain_within_one_tick(eh: EngineHome) -> None:
    """Kicks off: one tick with `--max-claims 3` admits the task and runs all three
    command stages: judging an inline run moves the task and queues the next stage's
    job in the same transaction, so the next claim can take it."""
    eh.configure(stages=THREE_STAGES)
    task = int(eh.cli("task", "add", "--repo", "app", "--title", "chained").stdout)
    report = eh.tick_cli("--max-claims", "3")
    assert [c["task"] for c in report["claimed"]] == [task] * 3
    assert eh.task(task)["stage"] == "done"
    eh.check_invariants()


def test_one_claim_per_tick_stays_the_default(eh: EngineHome) -> None:
    eh.configure(stages=THREE_STAGES)
    task = int(eh.cli("task", "add", "--repo", "app", "--title", "stepwise").stdout)
    report = eh.tick_cli()
    assert len(report["claimed"]) == 1
    assert eh.task(task)["stage"] == "check"
