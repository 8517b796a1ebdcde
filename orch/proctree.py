"""Find and end every process of a run, wherever it went (SPEC sections 5 and 8).

A run's processes are not only its process group: Claude Code starts each Bash
tool in a new session, a test may `Popen(start_new_session=True)`, an agent
may `setsid sleep 999 &` and exit. This module finds them by two independent
kinds of evidence and ends them with SIGTERM, a grace period, then SIGKILL.

How a process is recognised as the run's
----------------------------------------
1. **The mark** (survives everything but a cleared environment). Every run's
   environment carries `ORCH_RUN_MARK=<home id>:<run id>` (`marked_env`). The
   kernel copies the environment into every child and keeps it through
   `setsid`, `setpgid`, double forks and the death of every ancestor, and
   `/proc/<pid>/environ` shows a process's initial environment to its own
   user. So a scan of `/proc/*/environ` finds the run's processes even after
   its supervisor or tick was SIGKILLed. The home id (`home_id`) is a hash of
   a random salt written once into the home (`run-mark-salt`) and of the home
   directory's device and inode: two homes never share it (their run ids do:
   each home counts its own), a copied home (`cp -a`, salt included) gets a
   new one, the same home reached through a symlink keeps it, and it needs
   nothing that dies with a tick. Marks nest: the variable holds a
   comma-separated list, a new run appends its mark and drops marks of the
   same home (a run of a home is never inside another run of that home), so a
   test suite that runs orch under orch keeps the outer run's mark on every
   inner process. A process orch starts *outside* any run (a kicked tick)
   gets the variable with this home's marks removed (`outside_run_env`), so it
   is never taken for the run that started it.
2. **The tree** (covers a cleared environment while an ancestor lives).
   Parent links from `/proc/<pid>/stat` are walked down from a known root
   (the supervisor itself, or an inline command's leader) and from every
   marked process. A descendant whose environment has the variable *without*
   this mark is someone else's (another run's supervisor, a kicked tick) and
   is not walked into; a descendant without the variable (`env -i`) or whose
   environment cannot be read is the run's.
   `become_subreaper()` (prctl PR_SET_CHILD_SUBREAPER) makes the supervisor
   the parent of every orphan of its tree instead of init, so while it lives
   an orphan that cleared its environment *and* double-forked is still its
   descendant. `reap_adopted()` collects those adopted children once dead.
3. **A cgroup** (optional extra, never required): when our own cgroup v2
   directory is writable (a systemd unit with `Delegate=yes`, or root),
   `make_run_cgroup()` creates one per run, `join_cgroup()` puts the run in
   it, and `end_run_tree(..., cgroup=...)` counts its members as the run's and
   ends it with `cgroup.kill`. No process leaves a cgroup by itself.

Never a process that is not the run's
-------------------------------------
A process is identified by its pid *and* its start time in clock ticks since
boot (field 22 of `/proc/<pid>/stat`). Every signal goes through a pidfd
opened *before* the start time is checked again, so a pid reused between the
scan and the signal is never hit. The caller and its ancestors are never
signalled, nor pid 1, nor kernel threads, nor a process that only *looks*
like a root (a root whose start time differs is ignored, with its tree). A
whole process group is signalled (atomic against forks inside it) only when
every live member of it is the run's and readable by us (killpg() reports
success when it reaches *any* member, so a member of another user would be
skipped without a word), it is not the caller's or an ancestor's group, and
one of its verified members still belongs to it at the moment of sending (so
the group id cannot have been reused).

Ending
------
`end_run_tree()` sends SIGTERM (and SIGCONT, so a stopped process can act on
it) to every process and safe group, rescans until the run is gone or
`grace_s` passes, then freezes what is left with SIGSTOP (rescanning until a
scan finds nothing new, so a process that re-forks cannot outrun it: a
stopped process cannot fork) and SIGKILLs the frozen set, in rounds, until
`kill_bound_s` more seconds pass; a last check waits up to a second more.
`grace_s=0` sends no SIGTERM at all (a process may answer it by forking). It
returns a `TreeEnd`: counts, the pids it could not signal (PermissionError: a
process that changed user), the pids still alive at the bound, and whether
the bound cut the last scan short. Anything in those means the run is not
over: the caller holds the task (or tries again) instead of starting a new
run beside it. It never reaps: a subreaper collects adopted children with
`reap_adopted()` (reaping them blindly could steal a Popen's exit status).

Runs with no supervisor of their own (an inline command of a tick, `orch
test-run`) can be started under the shim `python -m orch.proctree --mark M
-- COMMAND...`: a subreaper that runs COMMAND marked, ends its whole tree
when it exits or on SIGTERM/SIGINT/SIGHUP, and exits as COMMAND did.

What it needs
-------------
Linux `/proc` (pidfds from Linux 5.3; without them the start time is
checked just before a plain kill()); the run's processes running as the
caller's user (or the caller being root): `/proc/<pid>/environ` is readable
by the process's own user only, and signals need the same. No privilege, no
cgroup, no systemd: an unprivileged user's crontab is enough. Python's
standard library only; importing this module is cheap (ctypes, hashlib,
argparse and subprocess are imported on first use).

Cost: one scan reads `/proc/<pid>/stat` and `/proc/<pid>/environ` of every
visible process: about 5-15 ms for 300 processes, 30 ms for 1000 (2 cores).

Limits
------
- A process that clears or rewrites its initial environment (`env -i`,
  `setproctitle` clobbering it, a sandbox building a fresh one) is found by
  the tree only: while the supervisor (or shim) lives, being a subreaper it
  is that process's ancestor whatever the process does; once the supervisor
  is SIGKILLed, such a process that also double-forked away (reparented to
  init) escapes, unless a run cgroup was used.
- A process that deliberately sets the variable to something else escapes
  the mark; this guards against accidents, not against a hostile program.
- A process of another user (a setuid program) can be neither read nor
  signalled: it is reported in `TreeEnd.denied` while the tree shows it, and
  is invisible once its parent is gone.
- A non-dumpable process of our user (`prctl(PR_SET_DUMPABLE, 0)`, some
  agents' sandboxes) hides its environment; the tree still finds it.
- Between fork() and exec(), a child still has its parent's environment: a
  process orch starts outside a run (a kick) carries the run's mark for that
  instant. Start such processes only after the run's tree has been ended.
- A fork storm that saturates the CPU starves the scan (an equal-priority
  process gets a sliver of CPU, and one environ read can take 100 ms to
  seconds): the call still returns, later than its bound, with `left` or
  `partial` set, and the caller tries again later. Containing that case
  needs a cgroup (`pids.max`, `cgroup.kill`), which is the optional extra.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

MARK_VAR = "ORCH_RUN_MARK"
SALT_FILE = "run-mark-salt"
_MARK_RE = re.compile(r"^[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+$")
_PF_KTHREAD = 0x00200000
_ZOMBIE = ("Z", "X")
_POLL_S = 0.1
_FREEZE_PASSES = 20
_SETTLE_S = 1.0
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37

Identity = tuple[int, int]  # (pid, start ticks)


# --- marks -------------------------------------------------------------------


def home_id(home: Path) -> str:
    """This home's id for run marks: 16 hex digits, stable while the home directory lives.

    A hash of the home's random salt (written once, atomically, into
    `<home>/run-mark-salt`) and of the directory's device and inode. Raises
    OSError when the home does not exist or the salt cannot be written.
    """
    import hashlib

    st = os.stat(home)
    salt = _home_salt(Path(home))
    return hashlib.sha256(f"{salt}:{st.st_dev}:{st.st_ino}".encode()).hexdigest()[:16]


def _home_salt(home: Path) -> str:
    """The home's salt; created with link(2) so concurrent ticks agree on one."""
    path = home / SALT_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    tmp = home / f".{SALT_FILE}.{os.getpid()}.{os.urandom(4).hex()}"
    tmp.write_text(os.urandom(16).hex() + "\n", encoding="ascii")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process created it first: use theirs
    finally:
        tmp.unlink()
    return path.read_text(encoding="ascii").strip()


def run_mark(home: str, run_id: int | str) -> str:
    """The mark of run `run_id` of the home whose `home_id` is `home`."""
    mark = f"{home}:{run_id}"
    _check_mark(mark)
    return mark


def adhoc_mark() -> str:
    """A one-off mark for a run that belongs to no home (`orch test-run` without one)."""
    return f"{os.urandom(8).hex()}:adhoc"


def _check_mark(mark: str) -> None:
    if not _MARK_RE.match(mark):
        raise ValueError(f"not a run mark: {mark!r} (expected HOMEID:RUNID)")


def _home_part(mark: str) -> str:
    return mark.partition(":")[0]


def marks_of(value: str) -> list[str]:
    """The marks listed in a value of ORCH_RUN_MARK (comma-separated, empties dropped)."""
    return [part for part in value.split(",") if part]


def marked_env(env: Mapping[str, str], mark: str) -> dict[str, str]:
    """`env` with `mark` appended to ORCH_RUN_MARK (marks of the same home replaced)."""
    _check_mark(mark)
    home = _home_part(mark)
    kept = [m for m in marks_of(env.get(MARK_VAR, "")) if _home_part(m) != home]
    return {**env, MARK_VAR: ",".join([*kept, mark])}


def outside_run_env(env: Mapping[str, str], home: str) -> dict[str, str]:
    """`env` for a process started outside every run of home `home` (a kicked tick).

    The variable stays (maybe empty) so a tree walk sees "not this run" and
    stops there, while outer homes' marks (orch under orch) are kept.
    """
    kept = [m for m in marks_of(env.get(MARK_VAR, "")) if _home_part(m) != home]
    return {**env, MARK_VAR: ",".join(kept)}


# --- /proc ---------------------------------------------------------------------


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


def _self_and_ancestors(table: Mapping[int, Proc]) -> set[int]:
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
        _check_mark(mark)
    cache: dict[Identity, Marks] = {} if env_cache is None else env_cache
    barred = _self_and_ancestors({})
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
            and proc.state not in _ZOMBIE)


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


# --- signalling ------------------------------------------------------------------


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
        if proc is None or proc.state in _ZOMBIE:
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
    barred = {table[pid].pgid for pid in _self_and_ancestors(table) if pid in table}
    live: dict[int, list[int]] = {}
    for proc in table.values():
        if proc.state not in _ZOMBIE:
            live.setdefault(proc.pgid, []).append(-1 if proc.hidden else proc.pid)
    groups = []
    for pgid in sorted({table[pid].pgid for pid in members if pid in table}):
        if pgid <= 1 or pgid in barred:
            continue
        leader = table.get(pgid)
        leader_ok = leader is None or leader.pid in members or leader.state in _ZOMBIE
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
        if now is None or now.state in _ZOMBIE or now.started != member.started \
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
        if book.cgroup is not None and not _holds_us(book.cgroup):
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


# --- subreaper -------------------------------------------------------------------


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
        if proc.ppid == me and proc.state in _ZOMBIE and proc.pid not in keep:
            try:
                if os.waitpid(proc.pid, os.WNOHANG)[0] == proc.pid:
                    reaped.append(proc.pid)
            except ChildProcessError:
                pass  # someone else collected it meanwhile
    return reaped


# --- optional: a cgroup v2 per run -----------------------------------------------------


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
    _check_mark(mark)
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


def _holds_us(path: Path) -> bool:
    """True when the caller or an ancestor is in the cgroup (cgroup.kill would hit us)."""
    return bool(set(cgroup_pids(path)) & _self_and_ancestors(snapshot()))


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


# --- the run shim: `python -m orch.proctree --mark M -- COMMAND...` ---------------------


def main(argv: list[str] | None = None) -> int:
    """Run COMMAND as a marked run under a subreaper, end its whole tree when it exits
    (or when this shim gets SIGTERM, SIGINT or SIGHUP), exit as COMMAND did.

    For runs that have no supervisor of their own (inline commands of a tick,
    `orch test-run`): orphans of COMMAND are adopted by the shim, so even one that
    cleared its environment and left its session is ended with the run.
    """
    import subprocess

    args = _parse_args(sys.argv[1:] if argv is None else argv)
    become_subreaper()
    cgroup = make_run_cgroup(args.mark) if args.cgroup else None
    stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: stop.append(signum))
    try:
        child = subprocess.Popen(args.command, env=marked_env(os.environ, args.mark),
                                 preexec_fn=_joiner(cgroup))  # the shim has one thread
    except OSError as exc:
        print(f"orch: cannot start {args.command[0]}: {exc}", file=sys.stderr, flush=True)
        return 127 if _not_found(exc, args.command[0]) else 126
    _wait_child_or_stop(child, stop)
    me = os.getpid()
    end_run_tree(args.mark, (me, start_ticks(me) or 0), grace_s=args.grace, cgroup=cgroup)
    code = child.wait()
    reap_adopted()
    return _exit_like(code)


def _wait_child_or_stop(child: Any, stop: list[int]) -> None:
    """Block until the child exits or a stop signal arrives (a pidfd and the signal
    wakeup fd in one select: no polling delay on a short command)."""
    import select

    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    previous = signal.set_wakeup_fd(wake_w)
    try:
        pidfd: int | None = os.pidfd_open(child.pid)
    except OSError:
        pidfd = None  # no pidfd: wake up every 50 ms to look
    try:
        while child.poll() is None and not stop:
            watched = [wake_r] if pidfd is None else [wake_r, pidfd]
            select.select(watched, [], [], 0.05 if pidfd is None else 1.0)
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
    finally:
        signal.set_wakeup_fd(previous)
        os.close(wake_r)
        os.close(wake_w)
        if pidfd is not None:
            os.close(pidfd)


def _parse_args(argv: list[str]):  # type: ignore[no-untyped-def]
    import argparse

    parser = argparse.ArgumentParser(prog="python -m orch.proctree",
                                     description="Run COMMAND as a marked run; end its "
                                                 "whole process tree when it ends.")
    parser.add_argument("--mark", required=True, help="the run's mark, HOMEID:RUNID")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="seconds between SIGTERM and SIGKILL (default 5)")
    parser.add_argument("--cgroup", action="store_true",
                        help="also put the run in a cgroup of its own, when one can be made")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no COMMAND given (after --)")
    _check_mark(args.mark)
    return args


def _not_found(exc: OSError, command: str) -> bool:
    """Like a shell: 127 when there is no such command, 126 when it cannot be run (a
    PATH search that met an unreadable directory raises PermissionError either way)."""
    import shutil

    if isinstance(exc, FileNotFoundError):
        return True
    return "/" not in command and shutil.which(command) is None


def _joiner(cgroup: Path | None):  # type: ignore[no-untyped-def]
    """A preexec_fn that moves the child into `cgroup` before it execs (or None)."""
    if cgroup is None:
        return None
    return lambda: join_cgroup(cgroup)


def _exit_like(code: int) -> int:
    """Exit as the child did: a child killed by signal N kills us with N, so our parent
    sees the same status it would have seen without the shim."""
    import resource

    if code >= 0:
        return code
    with contextlib.suppress(OSError, ValueError):  # no core file of the shim for a SIGSEGV
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP have no handler
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
    time.sleep(1)  # the signal is delivered before kill() returns; belt and braces
    return 128 - code


if __name__ == "__main__":
    sys.exit(main())
