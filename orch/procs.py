"""The one place that starts or signals processes (SPEC sections 4, 5 and 8).

Identity of a process is its pid *and* its raw start time in clock ticks since
boot (field 22 of `/proc/<pid>/stat`), never a wall-clock time: a pid can be
reused, a start time cannot. Every kill goes through a process group, and a
group is only signalled when its leader's pid still belongs to the process we
started, or no longer belongs to anything (while any member of a group lives,
the kernel gives no new process that pid, so a group whose leader is gone is
still ours).

Only the standard library is used, so importing this module is cheap for a tick.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

OUTPUT_TAIL_BYTES = 64 * 1024
STDERR_TAIL_BYTES = 16 * 1024
_POLL_S = 0.05
_KILL_SETTLE_S = 2.0  # how long to wait for SIGKILLed processes to disappear
_DRAIN_S = 2.0  # how long to read leftover output after the group is killed


# --- identity ---------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the last ')'), or None if no such process.

    The command name (field 2) may contain spaces and ')', so the split is on
    the last ')'.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:  # e.g. ESRCH while the process is being released
        return None
    tail = raw.rpartition(")")[2]
    fields = tail.split()
    return fields or None


def start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (field 22), or None if no such process."""
    if pid <= 0:
        return None
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])  # fields[0] is field 3 (state), so field 22 is index 19


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid) if pid > 0 else None
    return fields[0] if fields else None


def is_zombie(pid: int) -> bool:
    """True when `pid` exists but has exited and waits to be reaped (state Z or X)."""
    return _state(pid) in ("Z", "X")


def boot_id() -> str:
    """This boot's id; it changes when the machine reboots."""
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
        return handle.read().strip()


def hostname() -> str:
    """This machine's host name, recorded on jobs to tell local runs from remote ones."""
    return socket.gethostname()


def self_identity() -> tuple[int, int]:
    """(pid, start ticks) of the calling process, as recorded on an inline job."""
    pid = os.getpid()
    ticks = start_ticks(pid)
    if ticks is None:  # cannot happen on Linux: we are reading our own entry
        raise RuntimeError("cannot read /proc/self/stat")
    return pid, ticks


@dataclass(frozen=True)
class Identity:
    """Who a process is, as recorded on the jobs it owns: pid, start ticks, host, boot."""

    pid: int
    started: int | None
    host: str
    boot_id: str

    @staticmethod
    def here() -> Identity:
        pid, started = self_identity()
        return Identity(pid, started, hostname(), boot_id())

    def is_local(self, host: str | None, boot: str | None) -> bool:
        """Was something recorded with (host, boot) recorded on this machine and boot?"""
        return host == self.host and boot == self.boot_id


def liveness(pid: int | None, started: int | None) -> str:
    """Judge a recorded (pid, start ticks).

    Returns 'alive', 'no-process', 'zombie' or 'start-time-mismatch'.

    A missing `started` cannot be matched, so a live pid is then reported as
    'start-time-mismatch' (fail towards "not ours": a reaper never kills on it).
    """
    if pid is None or pid <= 0:
        return "no-process"
    ticks = start_ticks(pid)
    if ticks is None:
        return "no-process"
    if started is None or ticks != started:
        return "start-time-mismatch"
    if is_zombie(pid):
        return "zombie"
    return "alive"


# --- process groups -----------------------------------------------------------


def group_members(pgid: int, *, include_zombies: bool = False) -> list[int]:
    """Pids whose process group is `pgid` (scanning /proc); zombies left out by default."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None or len(fields) < 3 or int(fields[2]) != pgid:
            continue
        if include_zombies or fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def groups_with_env(markers: dict[str, str]) -> set[int]:
    """Process groups of the live processes whose environment holds every KEY=VALUE
    (only processes we may read: our own user's), never our own group."""
    wanted = {f"{key}={value}".encode() for key, value in markers.items()}
    groups: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = set(handle.read().split(b"\0"))
            if wanted <= environ and not is_zombie(int(entry)):
                groups.add(os.getpgid(int(entry)))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    groups.discard(os.getpgid(0))  # never our own group, whatever started us
    return groups


def group_alive(pgid: int) -> bool:
    """True while the group has a member that is not a zombie.

    `killpg(pgid, 0)` answers the cheap case (no member at all); zombies still
    count for the kernel, so a positive answer is checked against /proc.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(group_members(pgid))


def _wait_group_empty(pgid: int, timeout_s: float) -> bool:
    """Poll until the group has no live member or `timeout_s` passes; True when empty."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    while True:
        if not group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def terminate_group(pgid: int, grace_s: float) -> None:
    """SIGTERM the group, wait up to `grace_s` for it to empty, then SIGKILL what is left.

    Unconditional: only for a group we created ourselves and still own (its
    leader is our child, so its pid cannot have been reused). Returns once
    the group is empty, or after a short wait for SIGKILL to take effect.
    """
    if not group_alive(pgid) or not _signal_group(pgid, signal.SIGTERM):
        return
    if _wait_group_empty(pgid, grace_s):
        return
    _signal_group(pgid, signal.SIGKILL)
    _wait_group_empty(pgid, _KILL_SETTLE_S)


def _reap_if_child(pid: int) -> None:
    """Collect the exit status of `pid` if it is our own exited child (no zombie left)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child (the usual case for a reaper): nothing to collect


def kill_group(pgid: int, started: int | None, grace_s: float) -> str:
    """Kill what is left of a run's process group, never a group that is not the run's.

    - a process with pid == `pgid` exists with a start time other than
      `started`: the pid was reused, nothing is signalled -> 'refused-reused-pid';
    - otherwise (leader alive with the same start, or gone, or a zombie) the
      group is SIGTERMed, given `grace_s` to empty, then SIGKILLed -> 'killed';
    - the group has no live member -> 'gone'.
    A PermissionError (a group of another user) propagates: better an error
    than a run reported dead while it lives.
    """
    leader_ticks = start_ticks(pgid)
    if leader_ticks is not None and leader_ticks != started:
        return "refused-reused-pid"
    if not group_alive(pgid) or not _signal_group(pgid, signal.SIGTERM):
        _reap_if_child(pgid)
        return "gone"
    if not _wait_group_empty(pgid, grace_s):
        _signal_group(pgid, signal.SIGKILL)
        _wait_group_empty(pgid, _KILL_SETTLE_S)
    _reap_if_child(pgid)
    return "killed"


# --- starting processes -------------------------------------------------------


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
    """
    clock = time.monotonic()
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
        try:
            if on_start is not None:
                on_start(pgid, pgid_started if pgid_started is not None else 0)
            timed_out = _watch(proc, out, timeout_s, heartbeat, heartbeat_interval_s)
        finally:
            _finish(proc, out, feeder, grace_s)
        return GroupRun(proc.returncode, timed_out, None, time.monotonic() - clock,
                        *out.tails(), pgid=pgid, pgid_started=pgid_started)
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
            grace_s: float) -> None:
    """Kill the group, collect the leader, read the last output and close the pipes."""
    terminate_group(proc.pid, grace_s)
    proc.wait()
    if feeder is not None:
        feeder.join(timeout=_DRAIN_S)
    out.drain()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


# --- a child in our own group (the supervisor's agent) ---------------------------------


class GroupChild:
    """A process started in the caller's own process group (the supervisor is the session
    leader and the agent stays in its group), its stdout copied to our stdout (the run's
    log) as it comes and kept for parsing; stderr goes straight to the log."""

    def __init__(self, argv: list[str], *, cwd: str, env: dict[str, str],
                 stdin_text: str | None) -> None:
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env,
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=None)
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        if stdin_text is not None and self.proc.stdin is not None:
            threading.Thread(target=_feed_stdin, args=(self.proc.stdin, stdin_text),
                             daemon=True).start()

    def _pump(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        out = os.fdopen(os.dup(1), "wb", buffering=0)
        for block in iter(lambda: stdout.read1(65536), b""):  # type: ignore[attr-defined]
            self._chunks.append(block)
            try:
                out.write(block)
            except OSError:
                pass
        out.close()

    def poll(self) -> int | None:
        return self.proc.poll()

    def finish(self) -> tuple[int | None, str]:
        """Wait for the child, kill what is left of our group, return (exit, stdout)."""
        self.proc.wait()
        kill_own_group_members()
        self.proc.poll()
        self._reader.join(timeout=5)
        return self.proc.returncode, b"".join(self._chunks).decode("utf-8", "replace")


def terminate_own_group(grace_s: float, *, poll: Callable[[], object] | None = None) -> None:
    """SIGTERM our own process group (ignoring it ourselves), wait up to `grace_s` for the
    others to go, then SIGKILL every other member."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.killpg(0, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _others_in_own_group():
            if poll is not None:
                poll()
            time.sleep(_POLL_S)
        kill_own_group_members()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _others_in_own_group() -> bool:
    me = os.getpid()
    return any(pid != me for pid in group_members(os.getpgid(0)))


def kill_own_group_members() -> None:
    """SIGKILL whatever else is left in our group (background grandchildren)."""
    me = os.getpid()
    for pid in group_members(os.getpgid(0)):
        if pid != me:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def own_group() -> tuple[int, int | None]:
    """(pgid, its leader's start ticks) of the caller's process group."""
    pgid = os.getpgid(0)
    return pgid, start_ticks(pgid)
