"""A run's processes end with it, and its supervisor stays small (SPEC sections 5, 6).

Real ticks, real supervisors, real processes checked in /proc afterwards: a `command`
stage that leaves a `setsid` child, an agent whose supervisor is SIGKILLed as an
unprivileged user, an agent printing 300 MB, a developer whose committing attempt
was judged hollow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.engine import EngineHome, claude_result, wait_for, write_script
from support.unpriv import Sandbox, chown_tree

from orch.home import Home
from orch.procs import tree

WORK = {"name": "work", "runner": "agent", "role": "worker", "gate": "exit_zero"}
MIB = 1024 * 1024


def marked(home: Path, run_id: int) -> list[int]:
    return [proc.pid for proc in tree.find_run_processes(Home(home).run_mark(run_id))]


def test_a_command_stage_leaves_nothing_in_another_session(eh: EngineHome) -> None:
    pids = eh.root / "pids"
    eh.configure(stages=[{"name": "run", "runner": "command", "command": [
        "sh", "-c", f"setsid sleep 999 & echo $! > {pids}; true"]}])
    task = eh.add_task()
    eh.tick_until(lambda: eh.task(task)["state"] == "closed", timeout=30, what="done")
    sleeper = int(pids.read_text())
    assert tree.start_ticks(sleeper) is None or marked(eh.home, 1) == []
    assert marked(eh.home, 1) == []


def test_supervisor_memory_stays_flat_and_the_log_is_capped(eh: EngineHome) -> None:
    """An agent prints 300 MB; the supervisor's peak RSS (VmHWM) stays under 100 MB and
    the log keeps its head and tail within log_max_mb, saying where it cut."""
    done = eh.root / "printed"
    write_script(eh.bin / "loud", f"""#!{sys.executable}
import os, sys, time
block = (b"x" * 1023 + b"\\n") * 1024
out = sys.stdout.buffer
out.write(b"HEAD-OF-OUTPUT\\n")
for _ in range(300):
    out.write(block)
out.write(b"TAIL-OF-OUTPUT\\n")
out.flush()
open({str(done)!r}, "w").close()
time.sleep(2)
""")
    eh.configure(stages=[WORK], log_max_mb=4,
                 agents={"worker": {"command": [str(eh.bin / "loud")], "timeout_s": 300}})
    task = eh.add_task()
    eh.tick()
    job, run = eh.wait_registered(task)
    wait_for(done.exists, 240, "the agent to print 300 MB")
    peak = _vm_hwm_kib(job["pid"])
    eh.tick_until(lambda: eh.task(task)["state"] == "closed", timeout=60, what="done")
    assert peak is not None and peak < 100 * 1024, f"supervisor peak RSS {peak} KiB"
    log = Path(run["log_path"])
    size = log.stat().st_size
    assert 4 * MIB <= size < 4 * MIB + 4096, size
    text = log.read_bytes()
    assert text.startswith(b"HEAD-OF-OUTPUT\n") and b"TAIL-OF-OUTPUT\n" in text[-MIB:]
    assert b"bytes of output were cut here" in text


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def test_a_commit_of_an_earlier_attempt_counts_for_dev_done(eh: EngineHome) -> None:
    """Attempt 1 commits, then reports an error (hollow: RETRY); attempt 2 only writes
    the report. The commit was made during the job: PASS."""
    count = eh.root / "count"
    write_script(eh.bin / "dev", f"""#!/bin/sh
n=$(cat {count} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {count}
if [ "$n" = 1 ]; then
  echo change > change.txt && git add change.txt && git -c user.name=t -c user.email=t@t \\
    commit -q -m change
  echo '{claude_result(is_error=True, result="something broke after the commit")}'
  exit 0
fi
echo report > "$ORCH_ARTIFACTS/10-dev-report.md"
echo '{claude_result()}'
""")
    eh.configure(stages=[{"name": "development", "runner": "agent", "role": "developer",
                          "gate": "dev_done", "deliverables": ["10-dev-report.md"]}],
                 agents={"developer": {"command": [str(eh.bin / "dev")],
                                       "output": "claude-json", "timeout_s": 60}})
    task = eh.add_task()
    eh.tick_until(lambda: eh.task(task)["state"] == "closed", timeout=60, what="done")
    assert eh.task(task)["stage"] == "done"
    assert [e["detail"].split(":")[0] for e in eh.events(task, "retry")] == ["attempt 2"]
    assert "1 new commit(s)" in eh.events(task, "passed")[0]["detail"]


def test_unprivileged_a_sigkilled_supervisor_leaves_nothing_after_the_next_tick(
        unpriv: Sandbox) -> None:
    """As an unprivileged user running orch from a crontab would: an agent that starts
    `setsid sleep 999` and blocks; SIGKILL it and its supervisor; the next tick (as that
    user) ends the sleep by the run's mark."""
    root = unpriv.work
    repo, home = root / "repo", root / "home"
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t.invalid",
           "ORCH_HEARTBEAT_INTERVAL_S": "1", "ORCH_HEARTBEAT_TIMEOUT_S": "3",
           "ORCH_RETRY_BACKOFF_S": "0", "ORCH_CANCEL_GRACE_S": "1",
           "ORCH_KICK_ENABLED": "false", "ORCH_MAX_CONCURRENCY": "1"}
    for argv in (["git", "init", "-q", "-b", "main", str(repo)],
                 ["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "init"]):
        assert unpriv.run(argv, env=env).returncode == 0
    agent = root / "agent.sh"
    agent.write_text("#!/bin/sh\nsetsid sleep 999 &\nexec tail -f /dev/null\n")
    agent.chmod(0o755)
    pipeline = root / "pipeline.yaml"
    pipeline.write_text('{"stages": [' + str(WORK).replace("'", '"') + "]}\n")
    chown_tree(root, unpriv.user)
    orch = [unpriv.python, "-m", "orch", "--home", str(home)]
    assert unpriv.run([*orch, "init", "--repo", f"app={repo}"], env=env).returncode == 0
    config = home / "orch.yaml"
    config.write_text(config.read_text().replace(
        "agents:\n", f"agents:\n  worker: {{command: [{agent}], timeout_s: 600}}\n", 1))
    env["ORCH_PIPELINE"] = str(pipeline)
    assert unpriv.run([*orch, "task", "add", "--repo", "app", "--title", "t"],
                      env=env).returncode == 0
    ticked = unpriv.run([*orch, "tick"], env=env)
    assert ticked.returncode == 0, ticked.stderr
    mark = _mark_as_root(home, 1)
    pids = wait_for(lambda: (found := [p for p in tree.find_run_processes(mark)])
                    and len(found) >= 3 and found, 30, "supervisor, agent and sleep")
    comms = {p.pid: p.comm for p in pids}
    assert "sleep" in comms.values()
    for pid, comm in comms.items():
        if comm != "sleep":  # the supervisor (python) and the agent (tail)
            os.kill(pid, signal.SIGKILL)
    time.sleep(4)  # the heartbeat goes stale
    reaped = unpriv.run([*orch, "tick", "--json"], env={**env, "ORCH_MAX_CONCURRENCY": "0"})
    assert reaped.returncode == 0, reaped.stderr
    assert '"reaped": [1]' in reaped.stdout
    assert tree.find_run_processes(mark) == []


def _mark_as_root(home: Path, run_id: int) -> str:
    """The run's mark, from the salt the user's tick wrote into the home."""
    assert (home / "run-mark-salt").exists()
    return Home(home).run_mark(run_id)


def test_unprivileged_a_leftover_it_may_not_signal_holds_the_task(unpriv: Sandbox,
                                                                  tmp_path: Path) -> None:
    """A dead run whose tree holds a process of another user (root's, below a process that
    became the unprivileged user): the user's reaper can neither read nor signal it, so
    the task is held with kind `leftover` and the job no longer counts as running."""
    from support.leftover import claim_as_dead

    if os.geteuid() != 0:
        pytest.skip("needs root to make another user's process")
    root = unpriv.work
    repo, home = root / "repo", root / "home"
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t.invalid",
           "ORCH_CANCEL_GRACE_S": "1", "ORCH_KICK_ENABLED": "false"}
    for argv in (["git", "init", "-q", "-b", "main", str(repo)],
                 ["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "init"]):
        assert unpriv.run(argv, env=env).returncode == 0
    orch = [unpriv.python, "-m", "orch", "--home", str(home)]
    pipeline = root / "pipeline.yaml"
    pipeline.write_text('{"stages": [{"name": "run", "runner": "command", '
                        '"command": ["true"]}]}\n')
    chown_tree(pipeline, unpriv.user)
    env["ORCH_PIPELINE"] = str(pipeline)
    assert unpriv.run([*orch, "init", "--repo", f"app={repo}"], env=env).returncode == 0
    assert unpriv.run([*orch, "task", "add", "--repo", "app", "--title", "t"],
                      env=env).returncode == 0
    assert unpriv.run([*orch, "tick"], env={**env, "ORCH_MAX_CONCURRENCY": "0"}
                      ).returncode == 0  # admitted and enqueued
    pids = tmp_path / "pids"
    tmp_path.chmod(0o777)
    uid, gid = unpriv.user.uid, unpriv.user.gid
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '999'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        f"os.setresgid({gid}, {gid}, {gid}); os.setresuid({uid}, {uid}, {uid})\n"
        "time.sleep(999)\n")], start_new_session=True)
    try:
        wait_for(lambda: pids.exists() and pids.read_text(), 10, "the helper's pids")
        leader, child = (int(word) for word in pids.read_text().split())
        wait_for(lambda: os.stat(f"/proc/{leader}").st_uid == uid, 10, "the user change")
        run_id = unpriv.call(claim_as_dead, str(home), leader, tree.start_ticks(leader))
        reaped = unpriv.run([*orch, "tick", "--json"], env={**env, "ORCH_MAX_CONCURRENCY": "0"})
        assert reaped.returncode == 0, reaped.stderr
        shown = unpriv.run([*orch, "task", "show", "1", "--json"], env=env)
        task = json.loads(shown.stdout)["task"]
        assert task["state"] == "held" and task["hold_kind"] == "leftover", task
        assert f"a leftover of run {run_id} could not be ended" in task["hold_reason"]
        assert f"not permitted to signal pid(s) [{child}]" in task["hold_reason"]
        jobs = json.loads(shown.stdout)["jobs"]
        assert all(job["status"] != "running" for job in jobs)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the helper and its root child, by group
        parent.wait(timeout=10)


def _detaching_agent(eh: EngineHome, pids: Path) -> Path:
    """An agent that leaves `setsid sleep 999` in a session of its own and then blocks."""
    return write_script(eh.bin / "detacher", f"""#!/bin/sh
setsid sleep 999 &
echo $! > {pids}
exec tail -f /dev/null
""")


def _sleeper_ended(pids: Path) -> bool:
    """Gone, or a zombie (its parent gone, it waits for a pid 1 that may never reap)."""
    try:
        stat = Path(f"/proc/{int(pids.read_text())}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_an_agent_timeout_ends_its_setsid_child(eh: EngineHome) -> None:
    """The agent outlives timeout_s: the supervisor ends the whole run tree, including
    the sleep in its own session."""
    pids = eh.root / "pids"
    eh.configure(stages=[WORK], agents={"worker": {
        "command": [str(_detaching_agent(eh, pids))], "timeout_s": 2}})
    task = eh.add_task()
    eh.tick()
    wait_for(pids.exists, 15, "the agent's setsid child")
    eh.tick_until(lambda: eh.events(task, "retry") or eh.events(task, "timeout"),
                  timeout=60, what="the timed-out run judged")
    assert _sleeper_ended(pids)  # ended before the run was recorded
    # the supervisor (marked too) may still be exiting after it recorded the run
    wait_for(lambda: marked(eh.home, 1) == [], 15, "the supervisor's exit")


def test_orch_cancel_ends_a_setsid_child_of_the_agent(eh: EngineHome) -> None:
    pids = eh.root / "pids"
    eh.configure(stages=[WORK], agents={"worker": {
        "command": [str(_detaching_agent(eh, pids))], "timeout_s": 600}})
    task = eh.add_task()
    eh.tick_cli()
    eh.wait_registered(task)
    wait_for(pids.exists, 15, "the agent's setsid child")
    done = eh.cli("cancel", str(task))
    assert done.returncode == 0, done.stderr
    assert _sleeper_ended(pids)
    assert marked(eh.home, 1) == []


def test_the_test_runner_leaves_nothing_in_another_session(eh: EngineHome) -> None:
    """The repo's test command starts `setsid sleep 999` and exits 0: the run's tree
    ends with the test-runner's run."""
    pids = eh.root / "pids"
    eh.configure(stages=[{"name": "testing", "runner": "test-runner", "gate": "tests_passed"}],
                 repo={"test": {"command": ["sh", "-c",
                                            f"setsid sleep 999 & echo $! > {pids}; true"]}})
    task = eh.add_task()
    eh.tick_until(lambda: eh.task(task)["state"] == "closed", timeout=60, what="done")
    assert _sleeper_ended(pids)
    assert marked(eh.home, 1) == []
