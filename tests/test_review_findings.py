"""Review findings on the engine (pause/resume windows, verdict fencing).

Each test drives a real home (git repo, SQLite file, supervisors and agents
as processes) into an interleaving that the engine mishandles. The tests
that fail mark bugs still to fix; they are not xfailed on purpose.
"""

from __future__ import annotations

from support.engine import EngineHome, wait_for, write_script

from orch.engine.actions import approve_or_reject, pause, resume
from orch.engine.advance import judge_job
from orch.engine.moves import Engine
from orch.state import jobs as jobs_state
from orch.state.schema import open_database


def _finished(eh: EngineHome, job_id: int) -> bool:
    return eh.job(job_id)["status"] != "running"


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
    wait_for(lambda: _finished(eh, job["id"]), 15, "the first agent to finish")
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
    wait_for(lambda: _finished(eh, job["id"]), 15, "attempt 1 to end")

    settings = eh.settings()
    db = open_database(settings.db_path)
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
