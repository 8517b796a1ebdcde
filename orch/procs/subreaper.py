"""A subreaper adopts the orphans of its tree; an optional cgroup v2 holds a run.

`become_subreaper()` (prctl PR_SET_CHILD_SUBREAPER) makes the caller the
parent of every orphan below it instead of init, so while it lives a process
that cleared its environment and double-forked is still its descendant. The
cgroup is an extra, never required: it needs a delegated writable cgroup v2.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from orch.procs.marks import check_mark
from orch.procs.scan import ZOMBIE, cgroup_pids, self_and_ancestors, snapshot

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


def _prctl(option: int, arg: object) -> int:
    """prctl(2) through ctypes (imported here: the tick does not pay for it)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.prctl(ctypes.c_int(option), arg, ctypes.c_ulong(0), ctypes.c_ulong(0),
                        ctypes.c_ulong(0))
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(result)


def become_subreaper() -> bool:
    """Make the caller the parent of every orphan of its descendants (instead of init):
    they stay in its tree, whatever session or environment they have. Not inherited
    by children; kept across exec. False when the kernel refuses (not Linux >= 3.4)."""
    import ctypes

    try:
        _prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1))
    except (OSError, AttributeError):
        return False
    return True


def is_subreaper() -> bool:
    """True when the caller is a child subreaper."""
    import ctypes

    value = ctypes.c_int(0)
    try:
        _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(value))
    except (OSError, AttributeError):
        return False
    return bool(value.value)


def reap_adopted(keep: Iterable[int] = ()) -> list[int]:
    """Collect our dead children, except the pids in `keep` (children a Popen still
    waits for: reaping them would cost it the exit status). Returns the pids reaped."""
    keep = set(keep)
    me = os.getpid()
    reaped = []
    for proc in snapshot().values():
        if proc.ppid == me and proc.state in ZOMBIE and proc.pid not in keep:
            try:
                if os.waitpid(proc.pid, os.WNOHANG)[0] == proc.pid:
                    reaped.append(proc.pid)
            except ChildProcessError:
                pass  # someone else collected it meanwhile
    return reaped




def own_cgroup() -> Path | None:
    """Our cgroup v2 directory, or None (no cgroup2 mounted, or not in its namespace)."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as handle:
            rel = next((line[3:].strip() for line in handle if line.startswith("0::")), None)
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            mounts = [line.split(" - ")[0].split() for line in handle
                      if " - cgroup2 " in line]
    except OSError:
        return None
    for fields in mounts:
        root, point = fields[3], fields[4]
        if rel is not None and (rel + "/").startswith(root.rstrip("/") + "/"):
            return Path(point) / rel[len(root.rstrip("/")):].lstrip("/")
    return None


def delegated_cgroup() -> Path | None:
    """Our own cgroup v2 directory when we may create sub-cgroups in it and move
    processes (a systemd unit with `Delegate=yes`, a container's, or root's)."""
    path = own_cgroup()
    if path is not None and os.access(path, os.W_OK) \
            and os.access(path / "cgroup.procs", os.W_OK):
        return path
    return None


def make_run_cgroup(mark: str, parent: Path | None = None) -> Path | None:
    """Create the run's cgroup under `parent` (default: `delegated_cgroup()`); None when
    there is no such place or the kernel has no `cgroup.kill` (Linux < 5.14)."""
    check_mark(mark)
    parent = parent if parent is not None else delegated_cgroup()
    if parent is None:
        return None
    path = parent / f"orch-run-{mark.replace(':', '-')}"
    try:
        path.mkdir(exist_ok=True)
    except OSError:
        return None
    if not (path / "cgroup.kill").exists():
        remove_run_cgroup(path)
        return None
    return path


def join_cgroup(path: Path, pid: int = 0) -> bool:
    """Move `pid` (0: the caller) into the cgroup at `path`; False when refused."""
    try:
        (path / "cgroup.procs").write_text(f"{pid}\n", encoding="ascii")
    except OSError:
        return False
    return True


def holds_us(path: Path) -> bool:
    """True when the caller or an ancestor is in the cgroup (cgroup.kill would hit us)."""
    return bool(set(cgroup_pids(path)) & self_and_ancestors(snapshot()))


def kill_cgroup(path: Path) -> bool:
    """SIGKILL everything in the cgroup at once (`cgroup.kill`); False when refused."""
    try:
        (path / "cgroup.kill").write_text("1\n", encoding="ascii")
    except OSError:
        return False
    return True


def remove_run_cgroup(path: Path) -> bool:
    """Remove the run's cgroup (sub-cgroups first); False while something is in it."""
    try:
        for directory, _, _ in sorted(os.walk(path), key=lambda item: -len(item[0])):
            os.rmdir(directory)
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.ENOTEMPTY, errno.EACCES, errno.EPERM):
            return False
        raise
    return True
