"""Reading /proc and finding every process of a run: by its mark and by its tree.

A process is the run's when its environment carries the run's mark, or when
it descends (parent links from `/proc/<pid>/stat`) from the run's root or a
marked process without carrying another run's mark. The caller and its
ancestors, pid 1, kernel threads and zombies are never the run's. See
docs/processes.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from orch.procs.marks import MARK_VAR, check_mark, marks_of

_PF_KTHREAD = 0x00200000
ZOMBIE = ("Z", "X")

Identity = tuple[int, int]  # (pid, start ticks)


class Proc(NamedTuple):
    """One process as a scan saw it; `evidence` says why it is the run's."""

    pid: int
    started: int  # start ticks since boot (field 22): with pid, the identity
    ppid: int
    pgid: int
    sid: int
    state: str
    comm: str
    kthread: bool = False
    evidence: str = ""  # 'mark', 'tree', 'root' or 'cgroup'
    hidden: bool = False  # its environment was unreadable: another user's, or non-dumpable

    @property
    def identity(self) -> Identity:
        return self.pid, self.started


def read_proc(pid: int) -> Proc | None:
    """Parse /proc/<pid>/stat, or None when there is no such process (any more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode("utf-8", "replace")
    except OSError:  # gone (ENOENT, ESRCH) or being released
        return None
    head, _, tail = raw.rpartition(")")
    fields = tail.split()
    if len(fields) < 20:
        return None
    return Proc(pid=pid, started=int(fields[19]), ppid=int(fields[1]), pgid=int(fields[2]),
                sid=int(fields[3]), state=fields[0], comm=head.partition("(")[2],
                kthread=bool(int(fields[6]) & _PF_KTHREAD))


def start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot, or None if no such process."""
    proc = read_proc(pid) if pid > 0 else None
    return proc.started if proc else None


def snapshot() -> dict[int, Proc]:
    """Every process visible in /proc now (those that exit mid-scan are left out)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = read_proc(int(entry))
            if proc is not None:
                table[proc.pid] = proc
    return table


class _Unreadable:
    """The environment of a process we may not read (another user, non-dumpable)."""


UNREADABLE = _Unreadable()


def env_marks(pid: int) -> list[str] | _Unreadable | None:
    """The marks in the process's initial environment: a list when ORCH_RUN_MARK is set
    (maybe empty), None when it is not, UNREADABLE when /proc refuses, or [] for a
    process that has gone meanwhile (so it is neither the run's nor walked into)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            data = handle.read()
    except PermissionError:
        return UNREADABLE
    except OSError:
        return []
    prefix = MARK_VAR.encode() + b"="
    for entry in data.split(b"\0"):
        if entry.startswith(prefix):  # the first one is what getenv() sees
            return marks_of(entry[len(prefix):].decode("utf-8", "replace"))
    return None


def self_and_ancestors(table: Mapping[int, Proc]) -> set[int]:
    """Our pid and our ancestors' (never signalled, whatever their environment says)."""
    mine: set[int] = set()
    pid = os.getpid()
    while pid > 0 and pid not in mine:
        mine.add(pid)
        proc = table.get(pid) or read_proc(pid)
        pid = proc.ppid if proc else 0
    return mine


# --- finding a run's processes -----------------------------------------------------


@dataclass
class Scan:
    """One pass over /proc: the run's processes and every process seen. `partial` when
    the pass stopped at its deadline (then `table` is incomplete: no group is judged
    safe from it, and an empty `procs` does not mean the run is over)."""

    procs: list[Proc]
    table: dict[int, Proc]
    partial: bool = False


def find_run_processes(mark: str | None, root: Identity | None = None, *,
                       cgroup: Path | None = None) -> list[Proc]:
    """The live processes of the run: marked with `mark`, in `cgroup`, or descendants of
    `root` (pid, start ticks) or of a marked process; sorted by pid.

    Never lists the caller, its ancestors, pid 1, kernel threads or zombies. A root
    whose start time differs from the one given is someone else's: it and its tree
    are ignored. A descendant marked for another run (or started outside every run
    of this home) is not walked into. `mark=None` finds by `root` (and `cgroup`) only.
    """
    return scan_run(mark, root, cgroup=cgroup).procs


Marks = list[str] | _Unreadable | None  # what env_marks() returns


def scan_run(mark: str | None, root: Identity | None = None, *, cgroup: Path | None = None,
             on_mark: Callable[[Proc], None] | None = None, deadline: float | None = None,
             env_cache: dict[Identity, Marks] | None = None) -> Scan:
    """`find_run_processes` in one pass over /proc, calling `on_mark` on each marked
    process as soon as it is seen (so a freeze need not wait for the whole pass) and
    stopping at `deadline` (time.monotonic()) with a partial result. `env_cache` keeps
    what each process's environment said across scans: a process's initial
    environment does not change, and reading it is the slow part of a scan (under
    a fork storm, ~100 ms per process)."""
    if mark is not None:
        check_mark(mark)
    cache: dict[Identity, Marks] = {} if env_cache is None else env_cache
    barred = self_and_ancestors({})
    table: dict[int, Proc] = {}
    envs: dict[int, Marks] = {}
    found: dict[int, Proc] = {}
    partial = False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        if deadline is not None and time.monotonic() > deadline:
            partial = True
            break
        proc = read_proc(int(entry))
        if proc is None:
            continue
        table[proc.pid] = proc
        if not _eligible(proc, barred):
            continue
        envs[proc.pid] = marks = _marks_of_proc(proc, cache)
        if marks is UNREADABLE:
            table[proc.pid] = proc = proc._replace(hidden=True)
        if mark is not None and _has_mark(marks, mark):
            found[proc.pid] = proc._replace(evidence="mark")
            if on_mark is not None:
                on_mark(found[proc.pid])
    _add_cgroup_and_root(table, cgroup, root, barred, found)
    _walk_down(table, list(found), mark, envs, barred, found, root)
    return Scan(sorted(found.values(), key=lambda proc: proc.pid), table, partial)


def _marks_of_proc(proc: Proc, cache: dict[Identity, Marks]) -> Marks:
    """env_marks() of this very process (pid and start time), through the cache. A
    pid reused between the stat read and the environ read is caught by reading the
    start time again; that answer is then "gone" ([]), so nothing is decided on it."""
    if proc.identity in cache:
        return cache[proc.identity]
    marks = env_marks(proc.pid)
    if isinstance(marks, list) and marks and start_ticks(proc.pid) != proc.started:
        return []
    cache[proc.identity] = marks
    return marks


def _add_cgroup_and_root(table: Mapping[int, Proc], cgroup: Path | None,
                         root: Identity | None, barred: set[int],
                         found: dict[int, Proc]) -> None:
    """Add the members of `cgroup` and the root itself (when its start time matches)."""
    for pid in cgroup_pids(cgroup) if cgroup is not None else ():
        member = table.get(pid)
        if member is not None and _eligible(member, barred):
            found.setdefault(pid, member._replace(evidence="cgroup"))
    root_proc = table.get(root[0]) if root is not None else None
    if root is not None and root_proc is not None and root_proc.started == root[1] \
            and _eligible(root_proc, barred):
        found.setdefault(root_proc.pid, root_proc._replace(evidence="root"))


def _eligible(proc: Proc, barred: set[int]) -> bool:
    """A process that may be the run's at all: alive, no kernel thread, not us or ours."""
    return (proc.pid > 1 and proc.pid not in barred and not proc.kthread
            and proc.state not in ZOMBIE)


def _has_mark(marks: Marks, mark: str) -> bool:
    return isinstance(marks, list) and mark in marks


def _walk_down(table: Mapping[int, Proc], starts: list[int], mark: str | None,
               envs: Mapping[int, Marks], barred: set[int],
               found: dict[int, Proc], root: Identity | None) -> None:
    """Add the descendants of `starts` and of the root (when its start time matches:
    it may be the caller itself, never listed but walked from) to `found`, not
    entering other runs' processes."""
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    queue = list(starts)
    if root is not None and root[0] in table and table[root[0]].started == root[1]:
        queue.append(root[0])
    seen = set(queue)
    while queue:
        for pid in children.get(queue.pop(), ()):
            proc = table[pid]
            if pid in seen or not _eligible(proc, barred):
                continue
            seen.add(pid)
            marks = envs.get(pid)
            if mark is not None and isinstance(marks, list) and mark not in marks:
                continue  # set for another run, or outside every run: not ours
            found.setdefault(pid, proc._replace(evidence="tree"))
            queue.append(pid)




def cgroup_pids(path: Path) -> list[int]:
    """Pids in the cgroup at `path` and its sub-cgroups ([] when it is gone)."""
    pids: list[int] = []
    for directory, _, _ in os.walk(path):
        try:
            text = (Path(directory) / "cgroup.procs").read_text(encoding="ascii")
        except OSError:
            continue
        pids.extend(int(word) for word in text.split())
    return pids
