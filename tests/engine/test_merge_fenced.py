"""The merge is a fenced run (SPEC section 8): its git and hooks in the run's recorded
process group, stopped by `orch cancel` and the reaper; the default branch moved (and
pushed) only by a run that still owns its job, checked under the repo lock that
`orch cancel` takes too. Real git, a real slow `pre-rebase` hook, real `orch tick`
and `orch cancel` processes.

Reproduced on the build before this: `orch cancel` during a slow pre-rebase hook said
"cancelled" and the task's commit was fast-forwarded onto main anyway (and pushed with
`merge.push: true`); a tick SIGKILLed during a merge left its git and hook running
while the reaper requeued the job, so two rebases ran in one worktree at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.engine import EngineHome, alive, wait_for, write_script
from support.git import run_git

WORK = {"name": "work", "runner": "command",
        "command": ["sh", "-c", "echo work > work.txt && git add work.txt && "
                    "git commit -qm 'the task commit'"]}
MERGE = {"name": "merge", "runner": "merge", "on_fail": "work"}
HOOK_S = 4  # how long the pre-rebase hook takes


def merge_home(eh: EngineHome, *, push: bool = False) -> Path | None:
    """Pipeline work -> merge; the repo has an identity and a slow pre-rebase hook that
    logs `start PID` and `end PID` lines; with `push`, a bare `origin`."""
    run_git(eh.repo, "config", "user.name", "repo owner")
    run_git(eh.repo, "config", "user.email", "owner@repo.invalid")
    hooklog = eh.root / "hook.log"
    write_script(eh.repo / ".git" / "hooks" / "pre-rebase", f"""#!/bin/sh
echo "start $$ $(date +%s.%N)" >> "{hooklog}"
sleep {HOOK_S}
echo "end $$ $(date +%s.%N)" >> "{hooklog}"
""")
    remote = None
    if push:
        remote = eh.root / "origin.git"
        run_git(eh.root, "init", "-q", "--bare", str(remote))
        run_git(eh.repo, "remote", "add", "origin", str(remote))
        run_git(eh.repo, "push", "-q", "origin", "main")
    eh.configure(stages=[WORK, MERGE], repo={"merge": {"push": push}})
    return remote


def hook_lines(eh: EngineHome) -> list[tuple[str, int, float]]:
    path = eh.root / "hook.log"
    if not path.exists():
        return []
    return [(kind, int(pid), float(at)) for kind, pid, at in
            (line.split() for line in path.read_text().splitlines())]


def main_of(repo: Path) -> str:
    return run_git(repo, "rev-parse", "refs/heads/main")


def tick_process(eh: EngineHome) -> subprocess.Popen[str]:
    return subprocess.Popen(eh.orch_argv("tick", "--json"), env=eh.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def at_merge(eh: EngineHome) -> int:
    """A task whose work stage has committed; its merge job is queued, and main has moved
    on meanwhile (so the merge rebases, and git runs the pre-rebase hook)."""
    task = eh.add_task("fenced merge")
    eh.tick()
    assert eh.task(task)["stage"] == "merge", eh.task(task)
    (eh.repo / "other.txt").write_text("someone else's change\n")
    run_git(eh.repo, "add", "other.txt")
    run_git(eh.repo, "commit", "-qm", "main moves on")
    return task


def test_orch_cancel_during_a_slow_hook_stops_the_merge_and_nothing_lands(
        eh: EngineHome) -> None:
    remote = merge_home(eh, push=True)
    assert remote is not None
    task = at_merge(eh)
    before, remote_before = main_of(eh.repo), main_of(remote)
    tick = tick_process(eh)
    wait_for(lambda: hook_lines(eh), 30, "the pre-rebase hook to start")
    [(_, hook_pid, _)] = hook_lines(eh)
    done = eh.cli("cancel", str(task))
    assert done.returncode == 0 and "cancelled" in done.stdout, done.stderr
    out, err = tick.communicate(timeout=60)
    assert tick.returncode == 0, err
    wait_for(lambda: not alive(hook_pid), 10, "the hook to be stopped by the cancel")
    time.sleep(HOOK_S + 1)  # had anything survived, it would have landed by now
    assert main_of(eh.repo) == before
    assert main_of(remote) == remote_before
    assert [kind for kind, _, _ in hook_lines(eh)] == ["start"]  # killed, never finished
    assert eh.task(task)["state"] == "closed" and eh.task(task)["stage"] == "cancelled"
    assert not (eh.home / "tasks" / str(task) / "15-merge-report.md").exists()
    assert json.loads(out)["errors"] == []


def test_a_tick_killed_mid_merge_never_lets_two_merges_run_at_once(eh: EngineHome) -> None:
    merge_home(eh)
    task = at_merge(eh)
    before = main_of(eh.repo)
    tick = tick_process(eh)
    wait_for(lambda: hook_lines(eh), 30, "the pre-rebase hook to start")
    [(_, first_hook, _)] = hook_lines(eh)
    tick.send_signal(signal.SIGKILL)
    tick.communicate(timeout=30)
    assert alive(first_hook)  # the tick is gone, its run's processes are not (yet)
    reaper = eh.tick_cli()  # reaps the dead run: its git and hook are ended first
    assert reaper["reaped"], reaper
    assert not alive(first_hook)
    eh.tick_until(lambda: eh.task(task)["stage"] == "done", timeout=90,
                  what="the merge to go through on its next attempt")
    lines = hook_lines(eh)
    starts = [(pid, at) for kind, pid, at in lines if kind == "start"]
    ends = {pid: at for kind, pid, at in lines if kind == "end"}
    assert len(starts) == 2 and first_hook not in ends, lines  # the first never finished
    assert starts[1][1] > max(ends.values(), default=starts[0][1]) or \
        set(ends) == {starts[1][0]}
    log = run_git(eh.repo, "log", "--format=%s", f"{before}..main").splitlines()
    assert log == ["the task commit"]  # on main exactly once


def test_orch_cancel_takes_the_repo_lock(eh: EngineHome) -> None:
    merge_home(eh)
    task = at_merge(eh)
    lock = eh.home / "worktrees" / ".app.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # as a merge moving main holds it
        cancel = subprocess.Popen(eh.orch_argv("cancel", str(task)), env=eh.env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert cancel.poll() is None  # waits for the lock
        assert eh.task(task)["state"] != "closed"
    _out, err = cancel.communicate(timeout=30)
    assert cancel.returncode == 0, err
    assert eh.task(task)["state"] == "closed"


def test_a_merge_run_that_no_longer_owns_its_job_changes_nothing(eh: EngineHome) -> None:
    from orch.engine.run.merge_run import EXIT_LOST, MergePlan

    merge_home(eh)
    task = at_merge(eh)
    before = main_of(eh.repo)
    row = eh.task(task)
    job = next(j for j in eh.jobs(task) if j["stage"] == "merge")
    assert job["status"] == "queued" and job["run_id"] is None
    plan = MergePlan(job_id=job["id"], run_id=999, task_id=task,
                     state=eh.location, home=str(eh.home), repo="app",
                     repo_path=str(eh.repo), worktree=str(eh.home / "worktrees" / "app" /
                                                          str(task)),
                     branch=row["branch"], default_branch="main", push=False,
                     report=str(eh.home / "tasks" / str(task) / "15-merge-report.md"))
    done = subprocess.run([sys.executable, "-m", "orch.engine.run.merge_run"],
                          input=plan.to_json(), capture_output=True, text=True, timeout=60,
                          env=eh.env())
    assert done.returncode == EXIT_LOST, done.stdout + done.stderr
    assert "run 999 no longer owns job" in done.stdout
    assert "stopped before moving main" in done.stdout
    assert main_of(eh.repo) == before
    assert not Path(plan.report).exists()


def test_the_merge_group_is_recorded_on_the_run(eh: EngineHome) -> None:
    merge_home(eh)
    task = at_merge(eh)
    tick = tick_process(eh)
    wait_for(lambda: hook_lines(eh), 30, "the pre-rebase hook to start")
    [(_, hook_pid, _)] = hook_lines(eh)
    job = eh.running_job(task)
    assert job is not None
    run = eh.run(job["run_id"])
    assert run["pgid"] and run["pgid"] != os.getpid()
    assert os.getpgid(hook_pid) == run["pgid"]  # git's hook runs in the run's group
    with open(f"/proc/{hook_pid}/environ", "rb") as handle:
        assert b"ORCH_RUN_MARK=" in handle.read()
    _out, err = tick.communicate(timeout=60)
    assert tick.returncode == 0, err
    assert eh.task(task)["stage"] == "done"
