"""Process identity: a pid *and* its start time, never a pid alone (SPEC section 5.2).

The start time is the raw value in clock ticks since boot (field 22 of
`/proc/<pid>/stat`), never a wall-clock time: a pid can be reused, a start
time cannot, and a clock step moves nothing.
"""

from __future__ import annotations

import os
import socket

from orch.frozen import frozen_record


def stat_fields(pid: int) -> list[str] | None:
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
    fields = stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])  # fields[0] is field 3 (state), so field 22 is index 19


def _state(pid: int) -> str | None:
    fields = stat_fields(pid) if pid > 0 else None
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


@frozen_record
class Identity:
    """Who a process is, as recorded on the jobs it owns: pid, start ticks, host, boot."""

    pid: int
    started: int | None
    host: str
    boot_id: str

    @staticmethod
    def here(host: str | None = None) -> Identity:
        """This process; HOST is the home's host name (`host:`), default the hostname."""
        pid, started = self_identity()
        return Identity(pid, started, host or hostname(), boot_id())

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


