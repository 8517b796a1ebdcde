"""The run shim: `python -m orch.procs.shim --mark M [--grace S] -- COMMAND...`.

A subreaper that runs COMMAND with the run's mark, ends its whole tree when
COMMAND exits or on SIGTERM/SIGINT/SIGHUP, and exits as COMMAND did (126/127
like a shell when it cannot start it).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orch.procs.ending import end_run_tree
from orch.procs.marks import check_mark, marked_env
from orch.procs.scan import start_ticks
from orch.procs.subreaper import (
    become_subreaper,
    join_cgroup,
    make_run_cgroup,
    reap_adopted,
)


def main(argv: list[str] | None = None) -> int:
    """Run COMMAND as a marked run under a subreaper, end its whole tree when it exits
    (or when this shim gets SIGTERM, SIGINT or SIGHUP), exit as COMMAND did.

    For runs that have no supervisor of their own (inline commands of a tick,
    `orch test-run`): orphans of COMMAND are adopted by the shim, so even one that
    cleared its environment and left its session is ended with the run.
    """

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
    check_mark(args.mark)
    return args


def _not_found(exc: OSError, command: str) -> bool:
    """Like a shell: 127 when there is no such command, 126 when it cannot be run (a
    PATH search that met an unreadable directory raises PermissionError either way)."""

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
