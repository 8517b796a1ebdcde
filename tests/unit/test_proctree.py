"""orch.procs (marks, scan, ending, subreaper, shim) against real processes, sessions,
signals, subreapers and users.

Nothing is mocked: every test starts real processes (shells, sleeps, Python
helpers that fork), ends them through the module, and checks /proc afterwards.
When run as root, `test_unprivileged_rerun` runs this file again as `nobody`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.unpriv import Sandbox

from orch.procs import tree as pt

# Where the orch package this test imported lives (the checkout, or a copy an
# unprivileged user can read): children import orch.procs from there.
ROOT = Path(pt.__file__).resolve().parents[2]
IMPORTS = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
PY = sys.executable


# --- helpers ---------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll `predicate` until true or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def alive(ident: tuple[int, int]) -> bool:
    """The process (pid, start ticks) still exists and is not a zombie."""
    proc = pt.read_proc(ident[0])
    return proc is not None and proc.started == ident[1] and proc.state not in ("Z", "X")


def ident_of(pid: int) -> tuple[int, int]:
    ticks = pt.start_ticks(pid)
    assert ticks is not None, f"pid {pid} is not alive"
    return pid, ticks


def read_pids(path: Path, count: int = 1, timeout_s: float = 5.0) -> list[int]:
    """Wait for `path` to hold `count` pids (one a line) and return them."""
    def ready() -> bool:
        return path.exists() and len(path.read_text().split()) >= count
    assert wait_until(ready, timeout_s), f"{path} never got {count} pid(s)"
    return [int(word) for word in path.read_text().split()[:count]]


def new_mark() -> str:
    return pt.run_mark(secrets.token_hex(8), 1)


@pytest.fixture
def ended() -> Iterator[list[str]]:
    """Marks used by a test; whatever is left of them is killed at teardown."""
    marks: list[str] = []
    yield marks
    for mark in marks:  # no SIGTERM: a process may answer it by forking
        pt.end_run_tree(mark, grace_s=0, kill_bound_s=10)


@pytest.fixture
def mark(ended: list[str]) -> str:
    value = new_mark()
    ended.append(value)
    return value


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_helper_left() -> Iterator[None]:
    """A test that fails half-way leaves none of the helpers it started running."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def popen(argv: list[str], **kwargs) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, text=True, **kwargs)
    _STARTED.append(proc)
    return proc


def start(script: str, env: dict[str, str], **kwargs) -> subprocess.Popen[str]:
    return popen(["sh", "-c", script], env=env, **kwargs)


def python_helper(code: str, env: dict[str, str], **kwargs) -> subprocess.Popen[str]:
    """A Python child that can import orch.procs, running `code`."""
    env = {**env, "PYTHONPATH": IMPORTS}
    return popen([PY, "-c", textwrap.dedent(code)], env=env, **kwargs)


# --- marks ---------------------------------------------------------------------


def test_marks_nest_and_a_home_has_one_mark_per_process() -> None:
    outer, first, second = "aaaa:1", "bbbb:7", "bbbb:8"
    env = pt.marked_env({"PATH": "/bin"}, outer)
    env = pt.marked_env(env, first)
    assert pt.marks_of(env[pt.MARK_VAR]) == [outer, first]
    env = pt.marked_env(env, second)  # a run of home bbbb is never inside another of bbbb
    assert pt.marks_of(env[pt.MARK_VAR]) == [outer, second]
    kicked = pt.outside_run_env(env, "bbbb")
    assert kicked[pt.MARK_VAR] == outer  # still inside the outer home's run
    assert pt.outside_run_env({}, "bbbb") == {pt.MARK_VAR: ""}  # present, empty: no run's
    with pytest.raises(ValueError):
        pt.marked_env({}, "no colon")
    assert pt.adhoc_mark() != pt.adhoc_mark()


def test_home_id_is_per_directory_and_survives_paths_but_not_copies(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    first = pt.home_id(one)
    assert first == pt.home_id(one)
    assert first != pt.home_id(two)
    (tmp_path / "link").symlink_to(one)
    assert pt.home_id(tmp_path / "link") == first  # the same home by another path
    shutil.copytree(one, tmp_path / "copy")  # salt copied, another directory
    assert pt.home_id(tmp_path / "copy") != first
    shutil.rmtree(two)
    two.mkdir()  # re-created at the same path (maybe the same inode): a new salt
    assert (two / pt.SALT_FILE).exists() is False
    assert pt.home_id(two) != first


def test_home_id_agrees_between_concurrent_first_callers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    code = ("import sys; from orch.procs import tree as proctree; "
            "print(proctree.home_id(sys.argv[1]))")
    procs = [subprocess.Popen([PY, "-c", code, str(home)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": IMPORTS}) for _ in range(8)]
    ids = {proc.communicate()[0].strip() for proc in procs}
    assert len(ids) == 1 and ids == {pt.home_id(home)}
    assert sorted(p.name for p in home.iterdir()) == [pt.SALT_FILE]  # no temp file left


# --- finding and ending --------------------------------------------------------------


def test_setsid_grandchild_of_an_exited_child_is_found_and_killed(mark: str) -> None:
    child = start("setsid sleep 999 >/dev/null 2>&1 & echo $!", pt.marked_env(os.environ, mark),
                  stdout=subprocess.PIPE)
    pid = int(child.communicate()[0])
    assert child.returncode == 0
    assert wait_until(lambda: pt.read_proc(pid).comm == "sleep")  # type: ignore[union-attr]
    sleeper = ident_of(pid)
    found = pt.find_run_processes(mark)
    assert [(p.pid, p.evidence) for p in found] == [(sleeper[0], "mark")]
    assert found[0].sid == sleeper[0]  # its own session: a group kill would miss it
    result = pt.end_run_tree(mark, grace_s=2)
    assert result.complete and result.found == 1 and result.terminated == 1
    assert result.killed == 0
    assert not alive(sleeper)


def test_run_of_a_sigkilled_supervisor_is_ended_by_another_process(tmp_path: Path,
                                                                     mark: str) -> None:
    pids = tmp_path / "pids"
    supervisor = python_helper(f"""
        import os, subprocess, time
        from orch.procs import tree as proctree
        proctree.become_subreaper()
        env = proctree.marked_env(os.environ, {mark!r})
        subprocess.Popen(["sh", "-c", "setsid sleep 999 & echo $! >> {pids}; "
                          "echo $$ >> {pids}; sleep 999"], env=env)
        time.sleep(999)
    """, dict(os.environ), start_new_session=True)
    tool, agent = (ident_of(pid) for pid in read_pids(pids, 2))
    supervisor.kill()
    supervisor.wait()
    assert wait_until(lambda: pt.read_proc(agent[0]).ppid != supervisor.pid)  # type: ignore
    reaper = python_helper(f"""
        import json
        from orch.procs import tree as proctree
        result = proctree.end_run_tree({mark!r}, grace_s=2)
        print(json.dumps({{"found": result.found, "complete": result.complete}}))
    """, dict(os.environ), stdout=subprocess.PIPE)
    out = json.loads(reaper.communicate(timeout=30)[0])
    assert out == {"found": 3, "complete": True}  # sh, its sleep, the setsid sleep
    assert not alive(tool) and not alive(agent)


def test_two_homes_with_the_same_run_id_do_not_touch_each_other(tmp_path: Path,
                                                                 ended: list[str]) -> None:
    homes = [tmp_path / "a", tmp_path / "b"]
    marks = []
    for home in homes:
        home.mkdir()
        marks.append(pt.run_mark(pt.home_id(home), 1))
    ended.extend(marks)
    assert marks[0] != marks[1]
    sleepers = []
    for mark in marks:
        child = start("setsid sleep 999 >/dev/null 2>&1 & echo $!",
                      pt.marked_env(os.environ, mark), stdout=subprocess.PIPE)
        sleepers.append(ident_of(int(child.communicate()[0])))
    result = pt.end_run_tree(marks[0], grace_s=2)
    assert result.complete and result.found == 1
    assert not alive(sleepers[0])
    assert alive(sleepers[1])
    assert pt.end_run_tree(marks[1], grace_s=2).found == 1
    assert not alive(sleepers[1])


def test_a_root_whose_start_time_differs_is_never_signalled(mark: str) -> None:
    stranger = subprocess.Popen(["sh", "-c", "sleep 999 & wait"], start_new_session=True)
    try:
        me = ident_of(stranger.pid)
        assert wait_until(lambda: any(p.ppid == stranger.pid for p in pt.snapshot().values()))
        impostor = (stranger.pid, me[1] + 1)  # what a recorded root looks like after pid reuse
        assert pt.find_run_processes(mark, impostor) == []
        result = pt.end_run_tree(mark, impostor, grace_s=0.5)
        assert result.found == 0 and result.complete
        assert pt.signal_process(stranger.pid, me[1] - 1, signal.SIGKILL) == "reused"
        assert alive(me)
        children = [p for p in pt.snapshot().values() if p.ppid == stranger.pid]
        assert children and all(alive(p.identity) for p in children)
    finally:
        os.killpg(stranger.pid, signal.SIGKILL)
        stranger.wait()


def test_a_process_that_ignores_sigterm_gets_sigkill_after_the_grace(tmp_path: Path,
                                                                   mark: str) -> None:
    ready = tmp_path / "ready"
    stubborn = python_helper(f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").write(str(os.getpid()))
        time.sleep(999)
    """, pt.marked_env(os.environ, mark), start_new_session=True)
    ident = ident_of(read_pids(ready)[0])
    result = pt.end_run_tree(mark, grace_s=0.5)
    stubborn.wait()
    assert result.complete and result.terminated == 1 and result.killed == 1
    assert result.elapsed_s >= 0.5
    assert stubborn.returncode == -signal.SIGKILL
    assert not alive(ident)


def test_a_process_that_honours_sigterm_is_not_killed(mark: str) -> None:
    child = popen(["sleep", "999"], env=pt.marked_env(os.environ, mark),
                  start_new_session=True)
    result = pt.end_run_tree(mark, grace_s=5)
    child.wait()
    assert child.returncode == -signal.SIGTERM
    assert result.terminated == 1 and result.killed == 0 and result.elapsed_s < 2
    assert result.groups == (child.pid,)  # its group held nothing else: signalled whole


def test_a_zombie_is_not_a_live_process_of_the_run(mark: str) -> None:
    child = popen(["true"], env=pt.marked_env(os.environ, mark))
    assert wait_until(lambda: pt.read_proc(child.pid).state == "Z")  # type: ignore[union-attr]
    assert pt.find_run_processes(mark) == []
    child.wait()


def test_the_caller_and_its_ancestors_are_never_signalled(mark: str) -> None:
    env = pt.marked_env(os.environ, mark)
    killer = python_helper(f"""
        import json, subprocess
        from orch.procs import tree as proctree
        child = subprocess.Popen(["sleep", "999"])  # marked too: it inherits our environment
        result = proctree.end_run_tree({mark!r}, grace_s=2)
        child.wait()
        print(json.dumps([result.found, child.returncode]))
    """, env, stdout=subprocess.PIPE)
    out = json.loads(killer.communicate(timeout=30)[0])
    assert killer.returncode == 0  # it survived its own mark, and so did we (marked parent)
    assert out == [1, -signal.SIGTERM]


def test_the_tree_finds_a_cleared_environment_but_stops_at_other_runs(tmp_path: Path,
                                                                      mark: str) -> None:
    home = mark.partition(":")[0]
    other = pt.run_mark(home, 2)
    pids = tmp_path / "pids"
    kick_env = pt.outside_run_env(pt.marked_env(os.environ, mark), home)
    script = (f"env -i sleep 997 & echo $! >> {pids}; "
              f"env {pt.MARK_VAR}={kick_env[pt.MARK_VAR]} sleep 998 & echo $! >> {pids}; "
              f"env {pt.MARK_VAR}={other} sleep 999 & echo $! >> {pids}; wait")
    root = popen(["sh", "-c", script], start_new_session=True,
                 env=pt.marked_env(os.environ, mark))
    trio = read_pids(pids, 3)
    # until it execs, a forked child still has the shell's (marked) environment
    assert wait_until(lambda: all(pt.read_proc(pid).comm == "sleep" for pid in trio))  # type: ignore
    cleared, kicked, foreign = (ident_of(pid) for pid in trio)
    try:
        found = {p.pid: p.evidence for p in pt.find_run_processes(mark, ident_of(root.pid))}
        assert found == {root.pid: "mark", cleared[0]: "tree"}
        result = pt.end_run_tree(mark, ident_of(root.pid), grace_s=2)
        root.wait()
        assert result.complete and not alive(cleared)
        assert alive(kicked) and alive(foreign)
    finally:
        for ident in (kicked, foreign):
            pt.signal_process(*ident, signal.SIGKILL)


def test_a_fork_loop_in_new_sessions_is_ended_within_the_bound(tmp_path: Path,
                                                              mark: str) -> None:
    ready = tmp_path / "ready"
    forker = python_helper(f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").write("go")
        while True:
            if os.fork() == 0:
                os.setsid()
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                time.sleep(999)
                os._exit(0)
            time.sleep(0.002)
    """, pt.marked_env(os.environ, mark), start_new_session=True)
    read_pids(ready, 0)
    time.sleep(0.3)
    result = pt.end_run_tree(mark, grace_s=0.3, kill_bound_s=5)
    forker.wait()
    assert result.complete, result
    assert result.found > 20 and result.elapsed_s < 0.3 + 5 + 1.5
    assert pt.find_run_processes(mark) == []


def test_a_tree_that_reforks_when_terminated_is_frozen_and_killed(tmp_path: Path,
                                                                 mark: str) -> None:
    """Each process keeps two children alive, down to depth 5 (63 processes), and answers
    SIGTERM by forking a replacement tree (7 processes, in a new session) before it
    exits; the replacements refill their children as fast as they are killed."""
    ready = tmp_path / "ready"
    python_helper(f"""
        import os, signal, time
        def hydra(signum, frame):
            if os.fork() == 0:
                os.setsid()
                grow(2, hydra=False)
            os._exit(0)
        def grow(depth, hydra=True):
            signal.signal(signal.SIGTERM, hydra_handler if hydra else signal.SIG_DFL)
            kids = set()
            while True:
                for pid in list(kids):
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        kids.discard(pid)
                while depth > 0 and len(kids) < 2:
                    pid = os.fork()
                    if pid == 0:
                        depth, kids = depth - 1, set()
                        continue
                    kids.add(pid)
                time.sleep(0.05)
        hydra_handler = hydra
        open({str(ready)!r}, "w").write("go")
        grow(5)
    """, pt.marked_env(os.environ, mark), start_new_session=True)
    read_pids(ready, 0)
    assert wait_until(lambda: len(pt.find_run_processes(mark)) >= 63, 20)
    result = pt.end_run_tree(mark, grace_s=0.5, kill_bound_s=10)
    assert result.complete, result
    assert result.terminated >= 63 and result.killed > 63 and result.found > 200
    assert result.elapsed_s < 0.5 + 10 + 1.5
    assert wait_until(lambda: pt.find_run_processes(mark) == [], 2)


# --- subreaper and shim -------------------------------------------------------------


def test_a_subreaper_adopts_an_orphan_that_left_everything_and_reaps_it(mark: str) -> None:
    helper = python_helper(f"""
        import json, os, subprocess, time
        from orch.procs import tree as proctree
        from orch.procs.subreaper import is_subreaper
        assert not is_subreaper()
        assert proctree.become_subreaper() and is_subreaper()
        out = subprocess.run(["sh", "-c", "env -i setsid sleep 999 >/dev/null 2>&1 & echo $!"],
                             capture_output=True, text=True).stdout
        orphan = int(out)
        time.sleep(0.1)
        me = (os.getpid(), proctree.start_ticks(os.getpid()))
        found = proctree.find_run_processes({mark!r}, me)
        by_mark = proctree.find_run_processes({mark!r})
        result = proctree.end_run_tree({mark!r}, me, grace_s=2)
        time.sleep(0.1)
        reaped = proctree.reap_adopted()
        print(json.dumps({{"parent": proctree.read_proc(orphan).ppid if proctree.read_proc(orphan)
                          else None, "orphan": orphan, "found": [p.pid for p in found],
                          "by_mark": by_mark, "complete": result.complete,
                          "reaped": reaped}}))
    """, dict(os.environ), stdout=subprocess.PIPE)
    out = json.loads(helper.communicate(timeout=30)[0])
    assert out["found"] == [out["orphan"]]  # found through the tree alone: no environment
    assert out["by_mark"] == []
    assert out["complete"] and out["reaped"] == [out["orphan"]]
    assert out["parent"] is None  # reaped: gone from /proc


def shim(mark: str, *command: str, grace: float = 2.0, **kwargs) -> subprocess.Popen[str]:
    return popen([PY, "-m", "orch.procs.shim", "--mark", mark, "--grace", str(grace),
                  "--", *command], cwd=ROOT, **kwargs)


def test_the_shim_ends_the_tree_and_exits_as_its_command(mark: str) -> None:
    proc = shim(mark, "sh", "-c", "env -i setsid sleep 999 >/dev/null & echo $!; exit 3",
                stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": IMPORTS})
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert pt.read_proc(int(out)) is None  # killed and reaped by the shim
    proc = shim(mark, "sh", "-c", "kill -9 $$", env={**os.environ, "PYTHONPATH": IMPORTS})
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc = shim(mark, "sh", "-c", "kill -SEGV $$", env={**os.environ, "PYTHONPATH": IMPORTS})
    assert proc.wait(timeout=30) == -signal.SIGSEGV  # as the test-runner would see it bare
    proc = shim(mark, "no-such-command-here", env={**os.environ, "PYTHONPATH": IMPORTS},
                stderr=subprocess.PIPE)
    assert proc.wait(timeout=30) == 127 and "cannot start" in proc.communicate()[1]


def test_the_shim_on_sigterm_ends_its_command_and_dies_of_it(tmp_path: Path,
                                                             mark: str) -> None:
    pids = tmp_path / "pids"
    proc = shim(mark, "sh", "-c", f"setsid sleep 999 & echo $! > {pids}; sleep 999",
                env={**os.environ, "PYTHONPATH": IMPORTS}, start_new_session=True)
    sleeper = ident_of(read_pids(pids)[0])
    os.kill(proc.pid, signal.SIGTERM)  # the shim alone, as a tick's timeout would not do
    assert proc.wait(timeout=30) == -signal.SIGTERM
    assert not alive(sleeper)


# --- other users ----------------------------------------------------------------


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make another user's "
                                "processes (the unprivileged case is this file run as-is)")


@needs_root
def test_a_process_of_another_user_in_the_tree_is_reported_denied(tmp_path: Path, mark: str,
                                                                 unpriv: Sandbox) -> None:
    """A root child under a process that became the unprivileged user: that user can
    neither read it nor signal it, but the tree shows it: it is reported, never silently
    left."""
    uid, gid = unpriv.user.uid, unpriv.user.gid
    pids = tmp_path / "pids"
    tmp_path.chmod(0o777)
    parent = python_helper(f"""
        import os, subprocess, time
        child = subprocess.Popen(["sleep", "999"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}}\\n{{child.pid}}\\n")
        os.setresgid({gid}, {gid}, {gid})
        os.setresuid({uid}, {uid}, {uid})
        time.sleep(999)
    """, pt.marked_env(os.environ, mark), start_new_session=True)
    root_ident, child_ident = (ident_of(pid) for pid in read_pids(pids, 2))
    assert wait_until(lambda: os.stat(f"/proc/{parent.pid}").st_uid == uid)
    killer = unpriv.run(
        [unpriv.python, "-c", "import json, sys; from orch.procs import tree as proctree; "
         f"r = proctree.end_run_tree({mark!r}, ({root_ident[0]}, {root_ident[1]}), "
         "grace_s=0.5, kill_bound_s=1); print(json.dumps([r.denied, r.complete]))"],
        timeout=30)
    assert killer.returncode == 0, killer.stderr
    denied, complete = json.loads(killer.stdout)
    parent.wait(timeout=5)
    assert denied == [child_ident[0]] and complete is False
    assert not alive(root_ident) and alive(child_ident)
    pt.signal_process(*child_ident, signal.SIGKILL)


@needs_root
def test_unprivileged_rerun(unpriv: Sandbox) -> None:
    """This file again as an unprivileged user (an unprivileged crontab's user): must pass
    unchanged, from a copy the user can read, with the interpreter and packages the
    sandbox gives it."""
    copy = unpriv.give(Path(shutil.copy2(__file__, unpriv.work / "test_proctree_copy.py")))
    proc = unpriv.run([unpriv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       "--basetemp", str(unpriv.tmp / "base"), str(copy),
                       "-k", "not unprivileged_rerun and not denied"],
                      env={"PYTHONDONTWRITEBYTECODE": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
    print(f"\nas {unpriv.user.name}: {proc.stdout.strip().splitlines()[-1]}")


# --- optional cgroup and cost ------------------------------------------------------------


def test_a_run_cgroup_catches_what_left_both_the_mark_and_the_tree(tmp_path: Path,
                                                                   mark: str) -> None:
    path = pt.make_run_cgroup(mark)
    if path is None:
        pytest.skip("no writable cgroup v2 here (the cgroup path is an optional extra)")
    try:
        out = subprocess.run(
            ["sh", "-c", "env -i setsid sleep 999 >/dev/null 2>&1 & echo $!"],
            capture_output=True, text=True, preexec_fn=lambda: pt.join_cgroup(path),
            check=True).stdout
        orphan = ident_of(int(out))
        assert pt.find_run_processes(mark) == []  # no mark, no known root
        found = pt.find_run_processes(mark, cgroup=path)
        assert [(p.pid, p.evidence) for p in found] == [(orphan[0], "cgroup")]
        result = pt.end_run_tree(mark, cgroup=path, grace_s=0.5)
        assert result.complete and not alive(orphan)
        assert wait_until(lambda: not path.exists() or pt.remove_run_cgroup(path))
    finally:
        pt.kill_cgroup(path)
        wait_until(lambda: pt.remove_run_cgroup(path))


def test_one_scan_of_about_300_processes_is_cheap(mark: str) -> None:
    extra = max(0, 310 - len(pt.snapshot()))
    sleepers = [subprocess.Popen(["sleep", "999"]) for _ in range(extra)]
    try:
        count = len(pt.snapshot())
        started = time.perf_counter()
        for _ in range(20):
            pt.find_run_processes(mark)
        per_scan_ms = (time.perf_counter() - started) / 20 * 1000
        print(f"\none scan of {count} processes: {per_scan_ms:.1f} ms")
        assert count >= 290 and per_scan_ms < 250
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
