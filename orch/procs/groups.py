"""Process groups: find their members, signal them safely (SPEC sections 4 and 5).

Every kill goes through a process group, and a group is only signalled when
its leader's pid still belongs to the process we started, or no longer
belongs to anything (while any member of a group lives, the kernel gives no
new process that pid, so a group whose leader is gone is still ours).
"""

from __future__ import annotations

import os
import signal
import time

from orch.procs.identity import start_ticks, stat_fields

_POLL_S = 0.05
_KILL_SETTLE_S = 2.0  # how long to wait for SIGKILLed processes to disappear


def group_members(pgid: int, *, include_zombies: bool = False) -> list[int]:
    """Pids whose process group is `pgid` (scanning /proc); zombies left out by default."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat_fields(int(entry))
        if fields is None or len(fields) < 3 or int(fields[2]) != pgid:
            continue
        if include_zombies or fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


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




def own_group() -> tuple[int, int | None]:
    """(pgid, its leader's start ticks) of the caller's process group."""
    pgid = os.getpgid(0)
    return pgid, start_ticks(pgid)
