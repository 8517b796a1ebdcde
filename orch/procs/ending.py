"""Ending a run's tree: SIGTERM, a grace period, then freeze and SIGKILL, bounded.

Every signal goes through a pidfd opened before the start time is checked
again, so a pid reused between the scan and the signal is never hit; a whole
group is signalled only when every live member of it is the run's. It never
reaps. See docs/processes.md.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orch.procs.scan import (
    ZOMBIE,
    Identity,
    Marks,
    Proc,
    Scan,
    read_proc,
    scan_run,
    self_and_ancestors,
    snapshot,
)
from orch.procs.subreaper import holds_us, kill_cgroup, remove_run_cgroup

_POLL_S = 0.1
_FREEZE_PASSES = 20
_SETTLE_S = 1.0


def signal_process(pid: int, started: int, sig: int) -> str:
    """Send `sig` to the process (pid, started) and to no other.

    Returns 'sent', 'gone' (no such process, or a zombie), 'reused' (the pid
    now belongs to a process with another start time: nothing is sent) or
    'denied' (PermissionError). The pidfd is opened before the start time is
    checked, so the signal reaches the process that was checked, never a
    newcomer that got its pid in between.
    """
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return "gone"
    except OSError:  # no pidfd in this kernel: a plain kill after the check
        pidfd = None
    try:
        proc = read_proc(pid)
        if proc is None or proc.state in ZOMBIE:
            return "gone"
        if proc.started != started:
            return "reused"
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
        return "sent"
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return "denied"
    finally:
        if pidfd is not None:
            os.close(pidfd)


def safe_groups(run: Iterable[Proc], table: Mapping[int, Proc] | None = None) -> list[int]:
    """Process groups that hold nothing but the run's processes (safe to signal whole).

    Not our own group nor an ancestor's, not a group whose id is the pid of a live
    process that is not the run's, and not a group with a member whose environment
    we could not read (maybe another user's: killpg() succeeds when it reaches any
    member, so a member it may not signal would be missed without a word).
    """
    table = snapshot() if table is None else table
    members = {proc.pid for proc in run}
    barred = {table[pid].pgid for pid in self_and_ancestors(table) if pid in table}
    live: dict[int, list[int]] = {}
    for proc in table.values():
        if proc.state not in ZOMBIE:
            live.setdefault(proc.pgid, []).append(-1 if proc.hidden else proc.pid)
    groups = []
    for pgid in sorted({table[pid].pgid for pid in members if pid in table}):
        if pgid <= 1 or pgid in barred:
            continue
        leader = table.get(pgid)
        leader_ok = leader is None or leader.pid in members or leader.state in ZOMBIE
        if leader_ok and all(pid in members for pid in live.get(pgid, ())):
            groups.append(pgid)
    return groups


def signal_group(pgid: int, member: Proc, sig: int) -> str:
    """killpg(pgid, sig), after checking through a pidfd that `member` (a verified
    process of the run) is still alive in that group: while it is, the group id
    cannot have been given to anyone else. Returns like `signal_process`."""
    try:
        pidfd = os.pidfd_open(member.pid)
    except OSError:
        return "gone"
    try:
        now = read_proc(member.pid)
        if now is None or now.state in ZOMBIE or now.started != member.started \
                or now.pgid != pgid:
            return "gone"
        os.killpg(pgid, sig)
        return "sent"
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return "denied"
    finally:
        os.close(pidfd)


# --- ending a run's tree ------------------------------------------------------------


@dataclass(frozen=True)
class TreeEnd:
    """What `end_run_tree` did. Anything in `denied` or `left`, or `partial`, means the
    run may not be over (the caller holds the task rather than start a new run)."""

    found: int  # distinct processes of the run seen
    terminated: int  # sent SIGTERM
    killed: int  # needed SIGKILL
    groups: tuple[int, ...]  # process groups signalled as a whole
    denied: tuple[int, ...]  # could not be signalled (PermissionError)
    left: tuple[int, ...]  # still alive when the bound was reached
    rounds: int  # SIGKILL rounds
    elapsed_s: float
    partial: bool = False  # the bound cut the last scan short: more may be left

    @property
    def complete(self) -> bool:
        """True when nothing of the run is left."""
        return not self.denied and not self.left and not self.partial

    def summary(self) -> str:
        """One line for an event or a log."""
        if not self.found:
            return "no process of the run was left"
        text = (f"ended {self.found} process(es) of the run: {self.terminated} sent SIGTERM, "
                f"{self.killed} needed SIGKILL, in {self.elapsed_s:.1f}s")
        if self.denied:
            text += f"; not permitted to signal pid(s) {list(self.denied)}"
        if self.left:
            text += f"; still alive: pid(s) {list(self.left)}"
        if self.partial:
            text += "; the time bound cut the last scan short: more may be left"
        return text


@dataclass
class _Book:
    """Running record of one end_run_tree call."""

    mark: str | None
    root: Identity | None
    cgroup: Path | None
    seen: set[Identity] = field(default_factory=set)
    termed: set[Identity] = field(default_factory=set)
    killed: set[Identity] = field(default_factory=set)
    groups: set[int] = field(default_factory=set)
    denied: dict[Identity, Proc] = field(default_factory=dict)
    rounds: int = 0
    envs: dict[Identity, Marks] = field(default_factory=dict)

    def scan(self, deadline: float | None = None,
             on_mark: Callable[[Proc], None] | None = None) -> Scan:
        """The run's live processes now, less those we may not signal."""
        scan = scan_run(self.mark, self.root, cgroup=self.cgroup, on_mark=on_mark,
                        deadline=deadline, env_cache=self.envs)
        scan.procs = [p for p in scan.procs if p.identity not in self.denied]
        self.seen.update(p.identity for p in scan.procs)
        return scan


def _over(scan: Scan) -> bool:
    """True when a complete scan found nothing of the run."""
    return not scan.procs and not scan.partial


def end_run_tree(mark: str | None, root: Identity | None = None, *, grace_s: float = 5.0,
                 kill_bound_s: float = 5.0, cgroup: Path | None = None) -> TreeEnd:
    """End every process of the run (see `find_run_processes`) and say what was done.

    SIGTERM (+ SIGCONT) to all, wait up to `grace_s` for them to go (no SIGTERM when
    `grace_s` is 0), then rounds of freeze (SIGSTOP until a scan finds nothing new)
    and SIGKILL until nothing is left or `kill_bound_s` more seconds pass, plus one
    last check of up to a second. Never reaps: an adopted zombie is left for
    `reap_adopted` (reaping here could steal a Popen child's exit status).
    """
    clock = time.monotonic()
    book = _Book(mark, root, cgroup)
    scan = book.scan(clock + grace_s + kill_bound_s)
    if scan.procs and grace_s > 0:
        _send(scan, signal.SIGTERM, book, book.termed)
        _send(scan, signal.SIGCONT, book, None)
        scan = _wait_gone(book, clock + grace_s)
    if not _over(scan):
        scan = _kill_rounds(book, scan, time.monotonic() + kill_bound_s)
    if cgroup is not None and _over(scan):
        remove_run_cgroup(cgroup)
    return TreeEnd(found=len(book.seen), terminated=len(book.termed), killed=len(book.killed),
                   groups=tuple(sorted(book.groups)),
                   denied=tuple(sorted(pid for pid, _ in book.denied)),
                   left=tuple(p.pid for p in scan.procs), rounds=book.rounds,
                   elapsed_s=time.monotonic() - clock, partial=scan.partial)


def _send(scan: Scan, sig: int, book: _Book, record: set[Identity] | None,
          skip: Iterable[Identity] = ()) -> None:
    """`sig` to each safe group whole, and to every other process one by one (a
    process gets it once: a second SIGTERM can cut a graceful shutdown short).
    Processes in `skip` got it already. No group is judged from a partial scan."""
    skip = set(skip)
    covered: set[int] = set()
    by_group: dict[int, list[Proc]] = {}
    for proc in scan.procs:
        by_group.setdefault(proc.pgid, []).append(proc)
    for pgid in [] if scan.partial else safe_groups(scan.procs, scan.table):
        if signal_group(pgid, by_group[pgid][0], sig) == "sent":
            book.groups.add(pgid)
            covered.add(pgid)
            if record is not None:
                record.update(p.identity for p in by_group[pgid])
    for proc in scan.procs:
        if proc.pgid not in covered and proc.identity not in skip:
            _send_one(proc, sig, book, record)


def _send_one(proc: Proc, sig: int, book: _Book, record: set[Identity] | None) -> None:
    outcome = signal_process(proc.pid, proc.started, sig)
    if outcome == "sent" and record is not None:
        record.add(proc.identity)
    elif outcome == "denied":
        book.denied[proc.identity] = proc


def _wait_gone(book: _Book, deadline: float) -> Scan:
    """Rescan until the run has no process left or `deadline` passes; the last scan."""
    pause = 0.01
    while True:
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        scan = book.scan(deadline)
        if _over(scan) or time.monotonic() >= deadline:
            return scan
        pause = min(pause * 2, _POLL_S)


def _kill_rounds(book: _Book, last: Scan, deadline: float) -> Scan:
    """Freeze and SIGKILL until the run is gone or `deadline` passes; the last scan
    (taken within a second after the last SIGKILL, whatever the deadline)."""
    while True:
        book.rounds += 1
        scan, frozen = _freeze(book, last, deadline)
        if _over(scan):
            return scan
        if book.cgroup is not None and not holds_us(book.cgroup):
            kill_cgroup(book.cgroup)
        _send(scan, signal.SIGKILL, book, book.killed)
        in_scan = {p.identity for p in scan.procs}
        for proc in frozen:  # stopped earlier but missed by a scan cut short: kill them too
            if proc.identity not in in_scan:
                _send_one(proc, signal.SIGKILL, book, book.killed)
        last = _wait_gone(book, time.monotonic() + _SETTLE_S)  # returns once they are gone
        if _over(last) or time.monotonic() >= deadline:
            return last


def _freeze(book: _Book, last: Scan, deadline: float) -> tuple[Scan, list[Proc]]:
    """SIGSTOP the run's processes until a scan finds none that is not stopped yet: a
    stopped process cannot fork, so a re-forking tree stops growing. What `last` saw is
    stopped first, and each marked process the moment a scan meets it (under a heavy
    load a scan is slow, and every process stopped makes the rest of it faster).
    Returns the last scan and every process stopped."""
    stopped: dict[Identity, Proc] = {}

    def stop_now(proc: Proc) -> None:
        if proc.identity not in stopped:
            stopped[proc.identity] = proc
            _send_one(proc, signal.SIGSTOP, book, None)

    for proc in last.procs:
        stop_now(proc)
    scan = book.scan(deadline, stop_now)
    for _ in range(_FREEZE_PASSES):
        fresh = [p for p in scan.procs if p.identity not in stopped]
        _send(scan, signal.SIGSTOP, book, None, skip=stopped)
        stopped.update((p.identity, p) for p in fresh)
        if (not fresh and not scan.partial) or time.monotonic() >= deadline:
            break
        scan = book.scan(deadline, stop_now)
    return scan, list(stopped.values())


