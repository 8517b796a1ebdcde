"""Starting processes: detached, in a new group with a timeout, or in our own group.

`run_in_group` runs a command in a new process group, marked as its run's
(`ORCH_RUN_MARK`, docs/processes.md), and makes sure nothing of it outlives the
call, even what left its group or session; `spawn_detached` starts the leader of
a new session (a supervisor) and returns at once. The supervisor's agent is
`orch.procs.child.AgentChild`.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from orch.procs.groups import terminate_group
from orch.procs.identity import start_ticks

OUTPUT_TAIL_BYTES = 64 * 1024
STDERR_TAIL_BYTES = 16 * 1024
_POLL_S = 0.05
_DRAIN_S = 2.0  # how long to read leftover output after the group is killed


def spawn_detached(argv: list[str], *, cwd: Path, env: dict[str, str], log_path: Path,
                   stdin_text: str | None = None) -> int:
    """Start `argv` as the leader of a new session and return its pid once it has its input.

    stdin is /dev/null, or a pipe that gets `stdin_text` and is closed (the
    child must read it: a text past the pipe's buffer waits for it); stdout
    and stderr are appended to `log_path`; no other descriptor is inherited.
    The caller never waits for the child: a short-lived tick exits and init
    collects it. Raises OSError when it cannot start (or died before reading).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,
        )
    if stdin_text is not None and proc.stdin is not None:
        with proc.stdin:
            proc.stdin.write(stdin_text.encode("utf-8"))
    return proc.pid


@dataclass(frozen=True)
class GroupRun:
    """What happened to one command run in its own process group."""

    exit_code: int | None  # Popen returncode (negative = killed by that signal); None: not started
    timed_out: bool
    start_error: str | None
    duration_s: float
    output_tail: str  # last ~64 KiB of stdout and stderr, interleaved as read
    stderr_tail: str  # last ~16 KiB of stderr alone
    pgid: int | None = None
    pgid_started: int | None = None
    leftover: str | None = None  # the run's processes that could not be ended (a summary)


class _Output:
    """The child's two pipes: read without blocking, kept as bounded tails, copied to the log."""

    def __init__(self, log: IO[bytes] | None) -> None:
        self.log = log
        self.output = bytearray()
        self.stderr = bytearray()
        self.selector = selectors.DefaultSelector()

    def attach(self, proc: subprocess.Popen[bytes]) -> None:
        """Watch the stdout and stderr pipes of `proc`, and its exit (a pidfd, where the
        kernel has them), so a leader that exits after closing its pipes is seen at once."""
        for pipe, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            if pipe is not None:
                self.selector.register(pipe.fileno(), selectors.EVENT_READ, name)
        try:
            self.selector.register(os.pidfd_open(proc.pid), selectors.EVENT_READ, "exit")
        except (AttributeError, OSError):
            pass  # no pidfd: the watch loop polls

    def add(self, data: bytes, *, is_stderr: bool) -> None:
        """Record a chunk of output (log file first, then the tails)."""
        if self.log is not None:
            self.log.write(data)
            self.log.flush()
        _append_bounded(self.output, data, OUTPUT_TAIL_BYTES)
        if is_stderr:
            _append_bounded(self.stderr, data, STDERR_TAIL_BYTES)

    def pump(self, timeout_s: float) -> None:
        """Read what is available within `timeout_s`; a pipe at EOF is dropped."""
        if not self.selector.get_map():
            time.sleep(timeout_s)
            return
        for key, _ in self.selector.select(timeout_s):
            if key.data == "exit":  # the leader exited: stop watching its pidfd
                self.selector.unregister(key.fd)
                os.close(key.fd)
                continue
            data = os.read(key.fd, 65536)
            if data:
                self.add(data, is_stderr=key.data == "stderr")
            else:
                self.selector.unregister(key.fd)

    def drain(self) -> None:
        """Read leftovers until both pipes are at EOF, or a short deadline passes.

        The deadline matters when a process that escaped the group (its own
        setsid) still holds a pipe open.
        """
        deadline = time.monotonic() + _DRAIN_S
        while self.selector.get_map() and time.monotonic() < deadline:
            self.pump(_POLL_S)
        for key in list(self.selector.get_map().values()):
            if key.data == "exit":
                os.close(key.fd)
        self.selector.close()

    def tails(self) -> tuple[str, str]:
        """(output tail, stderr tail) decoded, undecodable bytes replaced."""
        return _decode(self.output), _decode(self.stderr)


def _append_bounded(buffer: bytearray, data: bytes, limit: int) -> None:
    buffer.extend(data)
    if len(buffer) > limit:
        del buffer[: len(buffer) - limit]


def _decode(data: bytearray) -> str:
    return bytes(data).decode("utf-8", "replace")


def _feed_stdin(pipe: IO[bytes], text: str) -> None:
    """Write `text` to the child's stdin, then close it (in a thread: it may block)."""
    try:
        pipe.write(text.encode("utf-8"))
    except BrokenPipeError:
        pass  # the child exited or closed stdin without reading it all: its choice
    finally:
        try:
            pipe.close()
        except BrokenPipeError:
            pass  # same as above, raised again by the flush in close()


def _open_log(log_path: Path | None) -> IO[bytes] | None:
    if log_path is None:
        return None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return open(log_path, "ab")  # closed by run_in_group's finally


def _has_exited(pid: int) -> bool:
    """True once our child `pid` has exited, without reaping it (WNOWAIT)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped elsewhere (SIGCHLD ignored): it has exited
        return True


def _watch(
    proc: subprocess.Popen[bytes],
    out: _Output,
    timeout_s: float,
    heartbeat: Callable[[], None] | None,
    heartbeat_interval_s: float,
) -> bool:
    """Read output and beat the heart until the leader exits; True when the timeout struck.

    The leader is not reaped here: while it is an unreaped zombie its pid (the
    group id) cannot be reused, so killing the group afterwards is safe.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    next_beat = started + heartbeat_interval_s
    while not _has_exited(proc.pid):
        now = time.monotonic()
        if now >= deadline:
            return True
        if heartbeat is not None and now >= next_beat:
            heartbeat()
            next_beat = time.monotonic() + heartbeat_interval_s
        out.pump(min(_POLL_S, max(0.0, deadline - now)))
    return False


def run_in_group(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str] | None,
    timeout_s: float,
    log_path: Path | None = None,
    stdin_text: str | None = None,
    on_start: Callable[[int, int], None] | None = None,
    heartbeat: Callable[[], None] | None = None,
    heartbeat_interval_s: float = 10.0,
    grace_s: float = 5.0,
    mark: str | None = None,
) -> GroupRun:
    """Run `argv` in a new process group and make sure nothing of it outlives the call.

    stdin is /dev/null unless `stdin_text` is given (written, then closed).
    Both streams are appended to `log_path` and their tails kept in memory.
    `on_start(pgid, pgid_start_ticks)` is called right after the spawn (to record
    the group before anything else can go wrong), `heartbeat()` every
    `heartbeat_interval_s`. At `timeout_s` the whole group gets SIGTERM, then
    SIGKILL after `grace_s`; after a normal exit of the leader the group is
    killed the same way, so background grandchildren die too. A command that
    cannot start (missing, not executable, bad cwd) gives `start_error`.
    Exceptions from the callbacks propagate, after the group is killed.
    With `mark` (the run's `ORCH_RUN_MARK`) the command's environment carries it,
    and after the group every process with the mark or below the leader is ended
    too (a tool's `setsid` child, a test's `start_new_session=True` server); what
    could not be ended is summarised in `leftover`.
    """
    clock = time.monotonic()
    if mark is not None:
        from orch.procs.marks import marked_env

        env = marked_env(os.environ if env is None else env, mark)
    log = _open_log(log_path)
    out = _Output(log)
    try:
        try:
            proc = _start(argv, cwd, env, with_stdin=stdin_text is not None)
        except (OSError, ValueError) as exc:  # missing, not executable, bad cwd, NUL in argv
            out.add(f"orch: cannot start {argv[:1]}: {exc}\n".encode(), is_stderr=True)
            return GroupRun(None, False, str(exc), time.monotonic() - clock, *out.tails())
        out.attach(proc)
        pgid, pgid_started = proc.pid, start_ticks(proc.pid)
        feeder = _start_feeder(proc, stdin_text)
        leftover: list[str] = []
        try:
            if on_start is not None:
                on_start(pgid, pgid_started if pgid_started is not None else 0)
            timed_out = _watch(proc, out, timeout_s, heartbeat, heartbeat_interval_s)
        finally:
            _finish(proc, out, feeder, grace_s, mark, leftover)
        return GroupRun(proc.returncode, timed_out, None, time.monotonic() - clock,
                        *out.tails(), pgid=pgid, pgid_started=pgid_started,
                        leftover=leftover[0] if leftover else None)
    finally:
        if log is not None:
            log.close()


def _start(argv: list[str], cwd: Path, env: dict[str, str] | None, *,
           with_stdin: bool) -> subprocess.Popen[bytes]:
    """Spawn the leader of a new session (so a new process group), output on pipes."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if with_stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        close_fds=True,
        start_new_session=True,
    )


def _start_feeder(proc: subprocess.Popen[bytes], stdin_text: str | None) -> threading.Thread | None:
    """Feed `stdin_text` to the child from a thread (a full pipe must not block us)."""
    if stdin_text is None or proc.stdin is None:
        return None
    feeder = threading.Thread(target=_feed_stdin, args=(proc.stdin, stdin_text), daemon=True)
    feeder.start()
    return feeder


def _finish(proc: subprocess.Popen[bytes], out: _Output, feeder: threading.Thread | None,
            grace_s: float, mark: str | None = None, leftover: list[str] | None = None) -> None:
    """Kill the group, then every other process of the run (by its mark and below the
    leader, while the leader is an unreaped zombie), collect the leader, read the last
    output and close the pipes."""
    terminate_group(proc.pid, grace_s)
    if mark is not None:
        from orch.procs.ending import end_run_tree

        started = start_ticks(proc.pid)
        ended = end_run_tree(mark, (proc.pid, started) if started else None, grace_s=grace_s)
        if not ended.complete and leftover is not None:
            leftover.append(ended.summary())
    proc.wait()
    if feeder is not None:
        feeder.join(timeout=_DRAIN_S)
    out.drain()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
