"""Serial gate, pause/resume, freeze and the blocking-questions flow (issue 4, SPEC §4-5, §7).

Real homes, real git repos, real ticks; agents are small scripts. A `command`
pipeline keeps the gate tests fast; the questions tests use a scripted analyst.
Every test runs on both backends: on PostgreSQL the homes get `ORCH_STATE`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support.engine import EngineHome, finished, wait_for, write_script

from orch.cli import run as cli_run
from orch.config import load_settings
from orch.engine.commands.actions import approve_or_reject, pause, resume
from orch.engine.commands.init import open_state
from orch.engine.tick import run_tick
from orch.pipeline import load_pipeline

PY = sys.executable


@pytest.fixture(autouse=True)
def backend(state_url: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state of every home of the test: its orch.db, or the PostgreSQL database."""
    if state_url is not None:
        monkeypatch.setenv("ORCH_STATE", state_url)


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["config", "user.name", "t"],
                 ["config", "user.email", "t@t.invalid"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    (path / "README").write_text("x\n")
    subprocess.run(["git", "add", "."], cwd=path, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "init"], cwd=path, check=True)
    return path


NOOP_AGENT = "  noop: {command: ['true']}"


def make_home(tmp_path: Path, pipeline: str, *, flags: str = "", repos: str | None = None,
              agents: str = "") -> Path:
    home = tmp_path / "home"
    home.mkdir()
    if repos is None:
        repo = make_repo(tmp_path / "repo")
        repos = f"  app: {{path: {repo}, max_active: 1}}\n"
    (home / "pipeline.yaml").write_text(pipeline)
    (home / "orch.yaml").write_text(
        "max_concurrency: 4\nretry_backoff_s: 0\nheartbeat_interval_s: 1\n"
        "heartbeat_timeout_s: 30\npipeline: pipeline.yaml\n"
        f"flags:\n{flags or '  serial_gate_enabled: true'}\n"
        f"agents:\n{agents or NOOP_AGENT}\n"
        f"repos:\n{repos}")
    return home


GATE_PIPELINE = textwrap.dedent("""\
    stages:
      - {name: work, runner: command, command: [sh, -c, 'test ! -e "$ORCH_ARTIFACTS/hold-me"']}
      - {name: check, runner: human, on_fail: work}
""")


class Orch:
    """A home driven in-process: ticks and CLI calls."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def tick(self, claims: int = 10) -> dict:
        settings = load_settings(self.home)
        db = open_state(settings)
        try:
            return run_tick(settings, load_pipeline(settings), db, max_claims=claims).as_dict()
        finally:
            db.close()

    def cli(self, *args: str) -> int:
        return cli_run(["--home", str(self.home), *args])

    def add(self, title: str, priority: int = 0, repo: str = "app") -> int:
        settings = load_settings(self.home)
        db = open_state(settings)
        try:
            from orch.engine.commands.tasks import NewTask, add_task

            task = add_task(settings, db, NewTask(repo, title, "", priority),
                            load_pipeline(settings).first.name)
            return task.id
        finally:
            db.close()

    def rows(self, sql: str, *params) -> list[dict]:
        db = open_state(load_settings(self.home))
        try:
            return db.all(sql, params)
        finally:
            db.close()

    def task(self, task_id: int) -> dict:
        return self.rows("SELECT * FROM tasks WHERE id = ?", task_id)[0]

    def admitted(self) -> list[int]:
        return [r["id"] for r in self.rows(
            "SELECT id FROM tasks WHERE admitted = 1 AND state != 'closed' ORDER BY id")]


@pytest.fixture
def gate_home(tmp_path):
    return Orch(make_home(tmp_path, GATE_PIPELINE))


def test_one_at_a_time_in_fifo_order_by_priority_then_id(gate_home):
    o = gate_home
    low, high, also_high = o.add("low"), o.add("high", priority=5), o.add("also", priority=5)
    o.tick()
    assert o.admitted() == [high]
    assert o.task(high)["stage"] == "check" and o.task(high)["state"] == "needs_input"
    assert o.task(low)["state"] == "waiting" and o.task(also_high)["state"] == "waiting"
    assert o.cli("approve", str(high)) == 0
    o.tick()
    assert o.task(high)["stage"] == "done"
    assert o.admitted() == [also_high]
    o.cli("approve", str(also_high))
    o.tick()
    assert o.admitted() == [low]


def test_a_paused_head_lets_the_next_in_only_once_its_job_has_finished(tmp_path):
    pipeline = ("stages:\n  - {name: work, runner: command, command: [sh, -c, 'sleep 1.5']}\n"
                "  - {name: check, runner: human}\n")
    o = Orch(make_home(tmp_path, pipeline))
    first, second = o.add("first"), o.add("second")
    runner = subprocess.Popen([PY, "-m", "orch", "--home", str(o.home), "tick"],
                              stdout=subprocess.DEVNULL)
    deadline = time.time() + 10
    while not o.rows("SELECT id FROM jobs WHERE status = 'running'") and time.time() < deadline:
        time.sleep(0.05)
    assert o.cli("pause", str(first), "--reason", "look later") == 0
    o.tick()  # the head is paused but its job still runs: it keeps the slot
    assert o.admitted() == [first]
    assert o.task(second)["state"] == "waiting"
    runner.wait(timeout=20)
    assert o.task(first)["stage"] == "check"  # its verdict was applied while paused
    o.tick()  # the job finished: slot released, second admitted
    assert o.task(first)["admitted"] == 0
    assert o.task(first)["state"] == "needs_input"  # a paused task keeps its state
    assert o.task(second)["admitted"] == 1


def test_paused_tasks_are_skipped_and_resume_returns_them_to_their_fifo_place(gate_home):
    o = gate_home
    first, second, third = o.add("a"), o.add("b"), o.add("c")
    o.cli("pause", str(first))
    o.tick()
    assert o.admitted() == [second]
    o.cli("resume", str(first))
    assert o.task(first)["state"] == "waiting"
    o.cli("approve", str(second))
    o.tick()
    assert o.task(second)["stage"] == "done"
    assert o.admitted() == [first]  # its FIFO place is ahead of `third`
    assert o.task(third)["state"] == "waiting"


def test_freeze_stops_admission_and_unfreeze_restarts_it(gate_home):
    o = gate_home
    task = o.add("a")
    assert o.cli("freeze", "app") == 0
    o.tick()
    assert o.admitted() == []
    assert o.cli("unfreeze", "--all") == 0
    o.tick()
    assert o.admitted() == [task]
    assert o.cli("freeze", "nope") == 3


def test_gate_off_admits_every_task(tmp_path):
    o = Orch(make_home(tmp_path, GATE_PIPELINE, flags="  serial_gate_enabled: false"))
    ids = [o.add(str(i)) for i in range(4)]
    o.tick()
    assert o.admitted() == ids


def test_held_tasks_keep_their_slot_and_retry_brings_them_back(tmp_path):
    o = Orch(make_home(tmp_path, GATE_PIPELINE))
    held, other = o.add("held"), o.add("other")
    artifacts = o.home / "tasks" / str(held)
    (artifacts / "hold-me").write_text("x")  # the command fails: FAIL with no on_fail -> RETRY
    for _ in range(4):
        o.tick()
    assert o.task(held)["state"] == "held"
    assert "attempts used up" in o.task(held)["hold_reason"]
    assert o.admitted() == [held]
    assert o.task(other)["state"] == "waiting"
    (artifacts / "hold-me").unlink()
    assert o.cli("retry", str(held)) == 0
    assert o.cli("retry", str(held)) == 1  # not held any more
    o.tick()
    assert o.task(held)["stage"] == "check"


def test_pause_resume_refused_on_closed_tasks_and_idempotent(gate_home):
    o = gate_home
    task = o.add("a")
    assert o.cli("pause", str(task)) == 0
    assert o.cli("pause", str(task)) == 0
    assert o.cli("resume", str(task)) == 0
    assert o.cli("resume", str(task)) == 0
    assert o.cli("cancel", str(task)) == 0
    assert o.cli("pause", str(task)) == 1
    assert o.cli("resume", str(task)) == 1
    assert o.cli("pause", str(task), "999") == 3
    kinds = [r["kind"] for r in o.rows("SELECT kind FROM events WHERE task_id = ?", task)]
    assert kinds.count("paused") == 1 and kinds.count("resumed") == 1


def test_reject_sends_the_task_back_with_the_reason_in_an_event(gate_home):
    o = gate_home
    task = o.add("a")
    o.tick()
    assert o.cli("reject", str(task), "--reason", "not like this") == 0
    assert o.task(task)["stage"] == "work" and o.task(task)["round"] == 1
    details = [r["detail"] for r in o.rows(
        "SELECT detail FROM events WHERE task_id = ? AND kind = 'rejected'", task)]
    assert details == ["not like this"]
    assert o.cli("approve", str(task)) == 1  # not at a human stage now


ANALYST = textwrap.dedent("""\
    import os, pathlib, sys
    art = pathlib.Path(os.environ["ORCH_ARTIFACTS"])
    q = art / "01-questions.md"
    mode = os.environ.get("ANALYST_MODE", "ask")
    if mode == "ask" and not (q.exists() and "ANSWER" in q.read_text()):
        q.write_text("---\\nblocking: true\\n---\\n1. Which database?\\n")
        sys.exit(0)
    (art / "02-analysis.md").write_text("analysis\\n")
""")

QUESTION_PIPELINE = textwrap.dedent("""\
    stages:
      - {name: analysis, runner: agent, role: analyst, gate: analysis_ready, questions: true,
         deliverables: [02-analysis.md]}
      - {name: check, runner: human}
""")


def question_home(tmp_path: Path, flags: str = "") -> Orch:
    script = tmp_path / "analyst.py"
    script.write_text(ANALYST)
    agents = f"  analyst: {{command: [{PY}, {script}], timeout_s: 30}}"
    return Orch(make_home(tmp_path, QUESTION_PIPELINE, agents=agents,
                          flags=flags or "  serial_gate_enabled: true"))


def tick_until(o: Orch, predicate, limit: float = 20.0) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        o.tick()
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached")


def test_needs_input_parks_the_task_and_frees_the_slot_then_resume_reruns(tmp_path):
    o = question_home(tmp_path)
    asking, next_task = o.add("asks"), o.add("next")
    tick_until(o, lambda: o.task(asking)["state"] == "needs_input")
    task = o.task(asking)
    assert task["paused_at"] and task["pause_reason"] == "needs-input"
    assert task["admitted"] == 0
    tick_until(o, lambda: o.task(next_task)["admitted"] == 1)
    # the person answers, then resumes: the analyst runs again and writes its analysis
    questions = o.home / "tasks" / str(asking) / "01-questions.md"
    questions.write_text(questions.read_text() + "\nANSWER: sqlite\n")
    assert o.cli("resume", str(asking)) == 0
    assert o.task(asking)["state"] == "waiting"
    o.cli("approve", str(next_task))
    tick_until(o, lambda: o.task(asking)["stage"] == "check")
    analysis_jobs = o.rows("SELECT * FROM jobs WHERE task_id = ? AND stage = 'analysis'", asking)
    assert [j["verdict"] for j in analysis_jobs] == ["NEEDS_INPUT", "PASS"]


def test_with_autopause_off_the_next_task_stays_waiting(tmp_path):
    o = question_home(tmp_path, flags="  analyst_needs_input_autopause_enabled: false")
    asking, next_task = o.add("asks"), o.add("next")
    tick_until(o, lambda: o.task(asking)["state"] == "needs_input")
    for _ in range(3):
        o.tick()
    assert o.task(asking)["paused_at"] is None
    assert o.task(next_task)["state"] == "waiting"
    assert o.cli("resume", str(asking)) == 0
    assert o.task(asking)["state"] == "active"  # it kept its slot


def test_with_the_questions_gate_off_questions_are_ignored(tmp_path):
    o = question_home(tmp_path, flags="  analyst_questions_gate_enabled: false")
    task = o.add("asks")
    # no analysis is written while asking: the plain gate sees a missing deliverable (RETRY)
    tick_until(o, lambda: bool(o.rows(
        "SELECT 1 FROM jobs WHERE task_id = ? AND verdict = 'RETRY'", task)))
    assert o.task(task)["state"] == "active"
    assert o.task(task)["paused_at"] is None


def test_overlapping_ticks_never_exceed_max_active(tmp_path):
    repos = ""
    for name in ("a", "b"):
        path = make_repo(tmp_path / name)
        repos += f"  {name}: {{path: {path}, max_active: 2}}\n"
    pipeline = "stages:\n  - {name: work, runner: command, command: [sh, -c, 'sleep 0.2']}\n"
    o = Orch(make_home(tmp_path, pipeline, repos=repos))
    for i in range(24):
        o.add(f"t{i}", repo="ab"[i % 2])
    env = {**os.environ, "ORCH_MAX_CONCURRENCY": "8"}
    loops = [subprocess.Popen(
        [PY, "-c", "import sys\nfrom orch.cli import run\nfor _ in range(40): run(sys.argv[1:])",
         "--home", str(o.home), "tick", "--max-claims", "3", "--quiet"], env=env)
        for _ in range(4)]
    worst = 0
    while any(loop.poll() is None for loop in loops):
        rows = o.rows("SELECT repo, count(*) AS n FROM tasks WHERE admitted = 1 "
                      "AND paused_at IS NULL AND state != 'closed' GROUP BY repo")
        worst = max([worst, *[r["n"] for r in rows]])
        time.sleep(0.01)
    assert all(loop.returncode == 0 for loop in loops)
    assert worst <= 2
    assert o.rows("SELECT count(*) AS n FROM tasks WHERE stage = 'done'")[0]["n"] == 24


# Pause and resume in the window between a job's end and its judging (an EngineHome, `eh`).

def _working(eh: EngineHome) -> set[int]:
    """Tasks of the repo that hold a slot or have work queued or running."""
    admitted = {r["id"] for r in eh.rows(
        "SELECT id FROM tasks WHERE admitted = 1 AND paused_at IS NULL AND state != 'closed'")}
    with_jobs = {r["task_id"] for r in eh.rows(
        "SELECT task_id FROM jobs WHERE status IN ('queued', 'running')")}
    return admitted | with_jobs


def test_approve_after_pause_resume_in_the_unjudged_window_bypasses_the_serial_gate(eh):
    """Pause + resume of a task whose agent job finished but is not judged yet makes it
    `waiting` (slot released). The next advance moves it to the human stage anyway
    (needs_input, admitted=0), the slot goes to the next task, and `orch approve` then
    sets the task `active` with admitted=0: it gets a job and runs beside the admitted
    task in a max_active=1 repo (serial gate bypassed, invariant 5 in spirit)."""
    agent = write_script(eh.bin / "agent", """#!/bin/sh
if [ "$ORCH_STAGE" = final ]; then exec sleep 30; fi
exit 0
""")
    worker = {"command": [str(agent)], "timeout_s": 120}
    eh.configure(stages=[
        {"name": "work", "runner": "agent", "role": "worker", "gate": "exit_zero"},
        {"name": "check", "runner": "human"},
        {"name": "final", "runner": "agent", "role": "worker", "gate": "exit_zero"},
    ], agents={"worker": worker}, max_concurrency=4)
    first, second = eh.add_task("first"), eh.add_task("second")
    eh.tick()
    [job] = eh.jobs(first)
    wait_for(lambda: finished(eh, job["id"]), 15, "the first agent to finish")
    assert eh.job(job["id"])["judged"] == 0  # finished, waiting for the next advance

    settings = eh.settings()
    with eh.database() as db:
        pause(db, first, "a look")
        resume(db, first)
    assert eh.task(first)["state"] == "waiting" and eh.task(first)["admitted"] == 0

    eh.tick()  # advance: PASS -> check (needs_input); admission gives the slot to `second`
    assert eh.task(first)["stage"] == "check"
    with eh.database() as db:
        approve_or_reject(settings, eh.pipeline(settings), db, first, True)
    first_row = eh.task(first)
    eh.tick(max_claims=4)
    running = {r["task_id"] for r in eh.rows("SELECT task_id FROM jobs WHERE status = 'running'")}
    assert len(_working(eh)) <= 1, (
        f"two tasks work in a max_active=1 repo: {sorted(_working(eh))} (running: "
        f"{sorted(running)}, second={second}); "
        f"tasks {eh.rows('SELECT id, stage, state, admitted FROM tasks')}")
    assert not (first_row["state"] == "active" and not first_row["admitted"]), \
        f"task {first} is active without a slot: {first_row}"
