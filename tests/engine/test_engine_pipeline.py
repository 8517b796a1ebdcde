"""The whole pipeline with the demo agents, `tick --dry-run`, and an edited pipeline file.

The happy path runs the default pipeline: analysis -> development -> review
(REQUEST_CHANGES once) -> development (round 1) -> review (APPROVE) ->
testing (the real test-runner) -> staging (skipped: no staging section) ->
merge -> done, and the work lands on main of the repo.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from support.engine import PY, EngineHome, alive, wait_for, write_script
from support.git import run_git

from orch.artifacts import parse_document

ROLES = ("analyst", "developer", "reviewer")


def demo_agents() -> dict[str, dict]:
    agents = {role: {"command": [PY, "-m", "orch.demo.agent", role], "output": "claude-json",
                     "timeout_s": 60} for role in ROLES}
    agents["reviewer"]["env"] = {"ORCH_DEMO_REVIEW": "REQUEST_CHANGES_ONCE"}
    return agents


@pytest.mark.slow
def test_the_demo_agents_carry_a_task_through_the_default_pipeline_to_main(eh):
    eh.configure(agents=demo_agents(), pipeline="default",
                 repo={"test": {"command": [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                                "target": "tests", "timeout_s": 120}})
    before = run_git(eh.repo, "rev-parse", "main")
    task = eh.add_task("add a greeting")
    reports = eh.tick_until(lambda: eh.task(task)["state"] == "closed", timeout=120,
                            pause=0.05, what="the task to reach a terminal stage")
    assert not [r.errors for r in reports if r.errors]

    done = eh.task(task)
    assert (done["stage"], done["state"], done["round"]) == ("done", "closed", 1)
    jobs = eh.jobs(task)
    assert [(j["stage"], j["verdict"]) for j in jobs] == [
        ("analysis", "PASS"), ("development", "PASS"), ("review", "FAIL"),
        ("development", "PASS"), ("review", "PASS"), ("testing", "PASS"), ("merge", "PASS")]
    assert all(j["attempt"] == 1 for j in jobs)  # nothing had to be retried
    assert [j["runner"] for j in jobs] == ["agent"] * 5 + ["test-runner", "merge"]
    stages = [e["detail"] for e in eh.events(task, "stage")]
    assert stages == ["-> development (round 0)", "-> review (round 0)",
                      "-> development (round 1)", "-> review (round 1)",
                      "-> testing (round 1)", "-> merge (round 1)"]
    [failed] = eh.events(task, "failed-gate")
    assert failed["detail"].startswith("review:")
    assert len(eh.events(task, "skipped")) == 1  # staging: the repo has no staging section
    assert [e["detail"] for e in eh.events(task, "closed")] == ["done"]
    moves = [(a["from"], a["to"], a["verdict"]) for r in reports for a in r.advanced]
    assert moves == [("analysis", "development", "PASS"), ("development", "review", "PASS"),
                     ("review", "development", "FAIL"), ("development", "review", "PASS"),
                     ("review", "testing", "PASS"), ("testing", "staging", "PASS"),
                     ("staging", "merge", "SKIP"), ("merge", "done", "PASS")]
    for job in jobs:
        assert all(r["outcome"] == "succeeded" for r in eh.runs(job["id"])), job

    # the merge landed on main of the repo
    head = run_git(eh.repo, "rev-parse", "main")
    assert head != before
    subjects = run_git(eh.repo, "log", "--format=%s", "main").splitlines()
    assert subjects[:2] == ["demo: greeting (round 1)", "demo: greeting (round 0)"]
    assert "def greet" in run_git(eh.repo, "show", "main:greeting.py")
    artifacts = eh.home / "tasks" / str(task)
    report = parse_document((artifacts / "15-merge-report.md").read_text()).meta
    assert report["result"] == "merged" and str(report["commit"]) == head
    assert parse_document((artifacts / "12-review.md").read_text()).meta["verdict"] == "APPROVE"
    assert parse_document((artifacts / "13-test-report.md").read_text()).meta["result"] == "PASS"
    runs = eh.rows("SELECT runs.* FROM runs JOIN jobs ON jobs.id = runs.job_id "
                   "WHERE jobs.runner = 'agent'")
    assert {r["session_id"] for r in runs} == {f"demo-{r['id']}" for r in runs}
    assert eh.processes() == []
    eh.check_invariants()


def snapshot(eh: EngineHome) -> dict[str, list]:
    with eh.connect() as conn:
        return {name: conn.rows(f"SELECT * FROM {name} ORDER BY 1") for name in conn.tables()}


def file_hashes(home: Path) -> dict[str, str | None]:
    result = {}
    for name in ("orch.db", "orch.db-wal"):
        path = home / name
        result[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return result


def test_tick_dry_run_reports_what_it_would_do_and_writes_nothing(eh):
    state = eh.root / "state"
    state.mkdir()
    script = write_script(eh.bin / "sleepy", f"""#!/bin/sh
echo $$ > "{state}/agent-$ORCH_RUN_ID"
exec sleep 300
""")
    eh.configure(stages=[{"name": "work", "runner": "agent", "role": "worker",
                          "gate": "exit_zero"}],
                 agents={"worker": {"command": [str(script)], "timeout_s": 600}},
                 repo={"max_active": 2})
    dead, dirty = eh.add_task("dead supervisor"), eh.add_task("dirty queued job")
    eh.tick()
    job, run = eh.wait_registered(dead)
    agent_file = state / f"agent-{run['id']}"
    agent = int(wait_for(lambda: agent_file.exists() and agent_file.read_text().strip(), 10,
                         "the agent to start"))
    [queued] = eh.jobs(dirty)
    assert queued["status"] == "queued"
    eh.configure(stages=[{"name": "work", "runner": "agent", "role": "worker",
                          "gate": "exit_zero"}],
                 agents={"worker": {"command": [str(script)], "timeout_s": 600}},
                 repo={"max_active": 3})
    waiting = eh.add_task("waiting for a slot")
    os.kill(job["pid"], signal.SIGKILL)  # the supervisor dies, its agent lives on
    wait_for(lambda: not alive(job["pid"]), 5, "the supervisor to die")
    eh.write("UPDATE jobs SET pid = 4242 WHERE id = ?", (queued["id"],), ignore_checks=True)

    rows_before = snapshot(eh)
    # fold what earlier writers left in the WAL into the file first: a checkpoint when
    # the dry run's connection closes would otherwise change the file's bytes (not its data)
    if eh.backend == "sqlite":
        checkpoint = sqlite3.connect(eh.home / "orch.db")
        checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        checkpoint.close()
    files_before = file_hashes(eh.home)
    done = eh.cli("tick", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    would = json.loads(done.stdout)
    assert file_hashes(eh.home) == files_before
    assert snapshot(eh) == rows_before
    assert alive(agent)  # nothing was killed either
    assert set(eh.processes()) == {agent}  # and nothing started

    assert would["sanitized"] == 1
    assert would["reaped"] == [job["id"]]
    assert would["admitted"] == [waiting]
    assert len(would["enqueued"]) == 1
    assert [c["job"] for c in would["claimed"]] == [queued["id"]]
    assert would["errors"] == []
    human = eh.cli("tick", "--dry-run")
    assert human.returncode == 0 and human.stdout.strip()
    assert file_hashes(eh.home) == files_before

    # the real tick then does what the dry run announced
    real = eh.tick()
    assert real.sanitized == 1 and real.reaped == [job["id"]] and real.admitted == [waiting]
    assert [c["job"] for c in real.claimed] == [queued["id"]]
    assert not alive(agent)
    assert eh.counter("ticks_total") == 2


def test_a_stage_removed_from_the_pipeline_holds_its_tasks_with_that_reason(eh):
    stages = [{"name": "a", "runner": "command", "command": ["true"]},
              {"name": "b", "runner": "command", "command": ["true"]}]
    eh.configure(stages=stages)
    moved = eh.add_task("at b with a queued job")
    eh.tick()
    assert eh.task(moved)["stage"] == "b"
    assert [j["status"] for j in eh.jobs(moved)] == ["succeeded", "queued"]
    behind = eh.add_task("waiting at a")  # the slot is taken: it waits at stage a
    assert eh.task(behind)["state"] == "waiting"

    eh.configure(stages=[{"name": "c", "runner": "command", "command": ["true"]}],
                 repo={"max_active": 2})
    eh.tick_until(lambda: eh.task(moved)["state"] == eh.task(behind)["state"] == "held",
                  timeout=20, what="both tasks to hold")
    assert eh.task(moved)["stage"] == "b"
    assert eh.events(kind="error") == []  # held, not started and failed
    [_, never] = eh.jobs(moved)
    assert (never["status"], never["verdict"]) == ("failed", "HOLD")
    assert [r["outcome"] for r in eh.runs(never["id"])] in ([], ["cancelled"])
    assert eh.task(moved)["hold_reason"] == "stage 'b' is no longer in the pipeline"
    assert eh.task(behind)["stage"] == "a"
    assert eh.task(behind)["hold_reason"] == "stage 'a' is no longer in the pipeline"
    queue = eh.cli("queue", "--json")
    assert queue.returncode == 0, queue.stderr
    listed = {t["id"]: t for t in json.loads(queue.stdout)["tasks"]}
    assert "no longer in the pipeline" in listed[moved]["hold_reason"]
    assert "no longer in the pipeline" in listed[behind]["hold_reason"]
    eh.check_invariants()
