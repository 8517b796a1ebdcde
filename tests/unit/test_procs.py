"""orch.procs against real processes, real process groups and real signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from orch import procs
from orch.procs.run import OUTPUT_TAIL_BYTES


def wait_until(predicate, timeout_s: float = 5.0) -> bool:
    """Poll `predicate` until true or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def dead(pid: int) -> bool:
    """Gone or a zombie (init may take a moment to collect an orphan)."""
    return procs.liveness(pid, procs.start_ticks(pid)) != "alive"


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def spawned(tmp_path):
    """spawn_detached, with every group it made killed at the end."""
    groups: list[int] = []

    def spawn(script: str) -> int:
        pid = procs.spawn_detached(["sh", "-c", script], cwd=tmp_path, env=dict(os.environ),
                                   log_path=tmp_path / "detached.log")
        groups.append(pid)
        return pid

    yield spawn
    for pgid in groups:
        procs.terminate_group(pgid, 0.2)
        try:
            os.waitpid(pgid, os.WNOHANG)
        except ChildProcessError:
            pass


def child_pids(output: str) -> list[int]:
    return [int(word) for word in output.split() if word.isdigit()]


# --- identity -------------------------------------------------------------------


def test_start_ticks_of_self_and_of_a_dead_pid():
    pid, ticks = procs.self_identity()
    assert pid == os.getpid()
    assert procs.start_ticks(pid) == ticks > 0
    assert procs.start_ticks(dead_pid()) is None
    assert procs.start_ticks(0) is None


def test_start_ticks_parses_after_the_last_parenthesis(tmp_path):
    weird = tmp_path / "a) b ) c"
    shutil.copy(shutil.which("sleep"), weird)
    before = procs.self_identity()[1]
    proc = subprocess.Popen([str(weird), "5"])
    try:
        ticks = procs.start_ticks(proc.pid)
        assert ticks is not None and ticks >= before
        assert procs.liveness(proc.pid, ticks) == "alive"
    finally:
        proc.kill()
        proc.wait()


def test_boot_id_and_hostname():
    assert len(procs.boot_id()) == 36
    assert procs.boot_id() == procs.boot_id()
    assert procs.hostname()


def test_liveness_alive_no_process_and_mismatch():
    pid, ticks = procs.self_identity()
    assert procs.liveness(pid, ticks) == "alive"
    assert procs.liveness(pid, ticks + 1) == "start-time-mismatch"
    assert procs.liveness(pid, None) == "start-time-mismatch"
    assert procs.liveness(dead_pid(), ticks) == "no-process"
    assert procs.liveness(None, None) == "no-process"


def test_liveness_zombie():
    child = os.fork()
    if child == 0:
        os._exit(0)
    try:
        ticks = procs.start_ticks(child)
        assert wait_until(lambda: procs.is_zombie(child))
        assert procs.liveness(child, ticks) == "zombie"
    finally:
        os.waitpid(child, 0)
    assert not procs.is_zombie(child)
    assert procs.liveness(child, ticks) == "no-process"


# --- kill_group -------------------------------------------------------------------


def test_kill_group_refuses_a_reused_pid(spawned):
    pgid = spawned("sleep 30")
    ticks = procs.start_ticks(pgid)
    assert procs.kill_group(pgid, ticks + 1, 0.2) == "refused-reused-pid"
    assert procs.kill_group(pgid, None, 0.2) == "refused-reused-pid"
    assert procs.liveness(pgid, ticks) == "alive"
    assert procs.kill_group(pgid, ticks, 0.5) == "killed"
    assert procs.liveness(pgid, ticks) == "no-process"  # our own child: reaped too


def test_kill_group_kills_the_whole_group_with_a_grandchild(spawned):
    pgid = spawned("sleep 30 & sleep 30")
    ticks = procs.start_ticks(pgid)
    assert wait_until(lambda: len(procs.group_members(pgid)) >= 2)  # sh may exec the last
    members = procs.group_members(pgid)
    assert os.getsid(pgid) == pgid
    assert procs.kill_group(pgid, ticks, 1.0) == "killed"
    assert not procs.group_alive(pgid)
    assert all(dead(pid) for pid in members)
    assert wait_until(lambda: _killpg_gone(pgid))
    assert procs.kill_group(pgid, ticks, 0.2) == "gone"


def _killpg_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_kill_group_whose_leader_is_gone_still_kills_the_members(spawned):
    pgid = spawned("trap '' TERM; sleep 30 & echo started")
    ticks = procs.start_ticks(pgid)
    try:
        os.waitpid(pgid, 0)  # leader exited and reaped: only the grandchild is left
    except ChildProcessError:
        pass  # Python's subprocess module reaped the dropped Popen first
    assert wait_until(lambda: procs.start_ticks(pgid) is None)
    members = procs.group_members(pgid)
    assert members, "the background sleep should still be in the group"
    started = time.monotonic()
    assert procs.kill_group(pgid, ticks, 0.3) == "killed"
    assert time.monotonic() - started >= 0.3  # SIGTERM was ignored: needed SIGKILL
    assert all(dead(pid) for pid in members)


def test_kill_group_with_a_zombie_leader(spawned):
    pgid = spawned("sleep 30 & exit 0")
    ticks = procs.start_ticks(pgid)
    # a zombie until reaped; Python's subprocess may reap a dropped Popen on its own
    assert wait_until(lambda: procs.is_zombie(pgid) or procs.start_ticks(pgid) is None)
    members = procs.group_members(pgid)
    assert procs.kill_group(pgid, ticks, 0.5) == "killed"
    assert all(dead(pid) for pid in members)
    assert procs.start_ticks(pgid) is None  # the zombie was our child, now reaped


# --- spawn_detached -------------------------------------------------------------


def test_spawn_detached_new_session_log_and_stdin(tmp_path):
    log = tmp_path / "logs" / "run.log"
    log.parent.mkdir()
    log.write_text("earlier\n")
    env = dict(os.environ, ORCH_X="42")
    pid = procs.spawn_detached(["sh", "-c", "echo out $ORCH_X; echo err >&2; cat; pwd"],
                               cwd=tmp_path, env=env, log_path=log)
    assert os.getsid(pid) == pid
    os.waitpid(pid, 0)
    assert log.read_text() == f"earlier\nout 42\nerr\n{tmp_path}\n"


# --- run_in_group ---------------------------------------------------------------


def run(argv, tmp_path, **kwargs) -> procs.GroupRun:
    kwargs.setdefault("timeout_s", 10)
    kwargs.setdefault("grace_s", 0.5)
    return procs.run_in_group(argv, cwd=tmp_path, env=None, **kwargs)


def test_timeout_kills_leader_and_grandchild(tmp_path):
    result = run(["sh", "-c", "sleep 300 & echo $!; wait"], tmp_path, timeout_s=0.5)
    assert result.timed_out
    assert result.exit_code == -signal.SIGTERM
    assert 0.5 <= result.duration_s < 3
    [grandchild] = child_pids(result.output_tail)
    assert dead(grandchild)
    assert not procs.group_alive(result.pgid)


def test_timeout_sigkills_a_grandchild_that_traps_sigterm(tmp_path):
    script = "(trap '' TERM; exec sleep 300) & echo $!; wait"
    result = run(["sh", "-c", script], tmp_path, timeout_s=0.5, grace_s=0.5)
    assert result.timed_out
    assert result.duration_s >= 1.0  # timeout + the whole grace
    [grandchild] = child_pids(result.output_tail)
    assert dead(grandchild)
    assert not procs.group_alive(result.pgid)


def test_timeout_sigkills_a_leader_that_traps_sigterm(tmp_path):
    result = run([sys.executable, "-c",
                  "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                  "print('ready', flush=True); time.sleep(300)"],
                 tmp_path, timeout_s=1.0, grace_s=0.3)
    assert result.timed_out
    assert result.exit_code == -signal.SIGKILL
    assert "ready" in result.output_tail


def test_background_grandchild_dies_after_the_leader_exits(tmp_path):
    result = run(["sh", "-c", "sleep 300 & echo $!; exit 3"], tmp_path)
    assert result.exit_code == 3
    assert not result.timed_out
    assert result.duration_s < 3
    [grandchild] = child_pids(result.output_tail)
    assert dead(grandchild)


def test_missing_command_and_missing_cwd_are_start_errors(tmp_path):
    result = run(["nosuchcmd-orch"], tmp_path, log_path=tmp_path / "run.log")
    assert result.exit_code is None
    assert not result.timed_out
    assert result.start_error == "[Errno 2] No such file or directory: 'nosuchcmd-orch'"
    assert "nosuchcmd-orch" in (tmp_path / "run.log").read_text()
    script = tmp_path / "noexec.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    assert "Permission denied" in run([str(script)], tmp_path).start_error
    gone = procs.run_in_group(["true"], cwd=tmp_path / "nope", env=None, timeout_s=5)
    assert gone.start_error and gone.exit_code is None
    assert "null byte" in run(["echo", "a\0b"], tmp_path).start_error


def test_stdin_text_reaches_the_child_and_default_stdin_is_devnull(tmp_path):
    assert run(["cat"], tmp_path, stdin_text="hello\nworld\n").output_tail == "hello\nworld\n"
    big = "x" * 200_000 + "\n"  # larger than a pipe buffer
    result = run(["wc", "-c"], tmp_path, stdin_text=big)
    assert result.output_tail.strip() == str(len(big))
    assert run(["cat"], tmp_path, timeout_s=3).output_tail == ""  # /dev/null: no hang


def test_heartbeat_and_on_start(tmp_path):
    beats: list[float] = []
    started: list[tuple[int, int]] = []
    result = run(["sleep", "0.6"], tmp_path, heartbeat=lambda: beats.append(time.monotonic()),
                 heartbeat_interval_s=0.1, on_start=lambda pg, ticks: started.append((pg, ticks)))
    assert result.exit_code == 0
    assert len(beats) >= 3
    assert started == [(result.pgid, result.pgid_started)]
    assert result.pgid_started is not None


def test_on_start_error_kills_the_group_and_propagates(tmp_path):
    seen: list[int] = []

    def boom(pgid: int, ticks: int) -> None:
        seen.append(pgid)
        raise RuntimeError("database locked")

    with pytest.raises(RuntimeError, match="database locked"):
        run(["sh", "-c", "sleep 300"], tmp_path, on_start=boom)
    assert not procs.group_alive(seen[0])


def test_output_tails_and_log_file(tmp_path):
    log = tmp_path / "logs" / "run.log"
    code = ("import sys\n"
            "for i in range(20000): print(f'line {i}')\n"
            "sys.stdout.flush()\n"
            "print('problem', file=sys.stderr)\n")
    result = run([sys.executable, "-c", code], tmp_path, log_path=log)
    assert result.exit_code == 0
    assert len(result.output_tail.encode()) <= OUTPUT_TAIL_BYTES
    assert "line 19999\n" in result.output_tail
    assert "line 0\n" not in result.output_tail
    assert result.stderr_tail == "problem\n"
    text = log.read_text()
    assert text.startswith("line 0\n") and "line 19999\n" in text and "problem\n" in text
    run(["echo", "again"], tmp_path, log_path=log)
    assert log.read_text().endswith("again\n")  # appended, not replaced
