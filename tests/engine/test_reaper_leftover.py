"""Holds that must not go wrong: a dead run's leftover that the tick may not signal
holds the task (SPEC section 5.2); a hold never reopens a task cancelled meanwhile.

Reproduced on the build before this: a tick running as an ordinary user met a
process group of another user (here: root's) left by a dead run; `killpg` raised
PermissionError on every tick, and the job stayed `running` forever, so that
`max_concurrency: 1` admitted nothing again. Needs root (to own the leftover and run
the tick as the unprivileged test user).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator

import pytest
from support import unavailable
from support.engine import EngineHome, alive, group_alive, wait_for, write_script
from support.unpriv import Sandbox, chown_tree, is_root, public_tempdir

from orch.engine.context import Engine
from orch.engine.moves import hold
from orch.model import HoldKind
from orch.state import tasks as tasks_state
from orch.state.schema import open_database

WORK = {"name": "work", "runner": "agent", "role": "worker", "gate": "exit_zero"}


@pytest.fixture
def public_eh(monkeypatch: pytest.MonkeyPatch, clean_env: None) -> Iterator[EngineHome]:
    """An EngineHome in a folder other users can reach."""
    root = public_tempdir("orch-leftover-")
    home = EngineHome(root, monkeypatch)
    try:
        yield home
    finally:
        home.close()
        shutil.rmtree(root, ignore_errors=True)


def tick_as(sandbox: Sandbox, eh: EngineHome) -> dict:
    done = sandbox.run([sandbox.python, "-m", "orch", "--home", str(eh.home), "tick", "--json"],
                       env={"ORCH_MAX_CONCURRENCY": "0"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_unsignalable_leftover_holds_the_task_and_frees_the_slot(
        public_eh: EngineHome, unpriv: Sandbox) -> None:
    if not is_root():
        unavailable("root (to run the tick as another user)", "run the suite as root")
    eh = public_eh
    script = write_script(eh.bin / "sleeper", "#!/bin/sh\nsleep 300\n")
    eh.configure(stages=[WORK], agents={"worker": {"command": [str(script)],
                                                   "timeout_s": 600}})
    task = eh.add_task("sleeps")
    eh.tick()
    job, run = eh.wait_registered(task)
    os.kill(job["pid"], signal.SIGKILL)  # the supervisor dies; its agent lives on, as root
    wait_for(lambda: not alive(job["pid"]), 10, "the supervisor to be gone")
    assert group_alive(run["pgid"])
    chown_tree(eh.root, unpriv.user)

    report = tick_as(unpriv, eh)
    assert report["errors"] == [] and report["reaped"] == [job["id"]], report
    held = eh.task(task)
    assert (held["state"], held["hold_kind"]) == ("held", "leftover")
    assert held["hold_reason"].startswith(f"a leftover of run {run['id']} could not be ended")
    assert "not permitted to signal" in held["hold_reason"]
    assert eh.job(job["id"])["status"] != "running"  # no longer counted as running
    again = tick_as(unpriv, eh)
    assert again["errors"] == [] and again["reaped"] == []
    if group_alive(run["pgid"]):
        os.killpg(run["pgid"], signal.SIGKILL)


def test_a_hold_read_before_an_orch_cancel_leaves_the_task_cancelled(eh: EngineHome) -> None:
    """A slow tick read the task (a budget check, the reaper), `orch cancel` closed it,
    then the tick's hold arrived: the task stays closed, no `held` event."""
    task = eh.add_task("races")
    settings = eh.settings()
    db = open_database(settings.db_path)
    try:
        stale = tasks_state.get(db, task)
        assert stale is not None and not stale.closed
        done = eh.cli("cancel", str(task))
        assert done.returncode == 0, done.stderr
        engine = Engine(settings, eh.pipeline(settings), db)
        assert hold(engine, stale, None, "budget", HoldKind.BUDGET_TASK) is False
    finally:
        db.close()
    after = eh.task(task)
    assert after["state"] == "closed" and after["hold_kind"] is None
    assert eh.events(task, "held") == []
