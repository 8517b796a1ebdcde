"""Kicks: a tick starts the moment work is ready, not at the next minute (SPEC section 5).

When a run ends (its supervisor recorded the exit and ended the run's
descendants; an inline run was judged) and after an operator command that
changes what may run, `kick()` starts `orch tick --kicked TOKEN` at once,
detached in its own session, outside the run (never one of its
descendants), with the kicking process's environment. Overlapping ticks are
safe by design, so a kick needs no lock; it only keeps kicks from piling up:

- at most one kicked tick per home waits to start: the kick creates the
  pending mark `<home>/.kick-pending` (O_EXCL) holding a fresh token, and a
  kick that finds a mark is absorbed by the tick that mark stands for;
- that tick removes the mark (its own token only) *before* it reads any
  state (`clear_pending`), so a change committed after the mark appeared is
  seen by it, and a change committed after it started reading finds no mark
  and kicks anew: no wake-up is lost;
- a mark older than `STALE_S` (its tick failed to start, or hangs before
  reading anything) no longer absorbs kicks: the next kick replaces it.

A kick that fails to start is an event (`kick-failed`), never an error of
the run or command that kicked. With `flags.kick_enabled: false` only the
scheduler ticks.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from orch.config import Settings
from orch.state import events
from orch.state.db import Database

PENDING_FILE = ".kick-pending"
STALE_S = 30.0


def kick(settings: Settings, why: str, db: Database | None = None) -> bool:
    """Start a tick now unless one is already waiting to start; True when one started."""
    if not settings.flags.kick_enabled:
        return False
    return kick_home(settings.home, settings.environ, why, db)


def kick_home(home: Path, environ: Mapping[str, str], why: str,
              db: Database | None = None) -> bool:
    """`kick` for a caller that has the home and its environment but no settings (the
    supervisor, which runs from its plan)."""
    mark = home / PENDING_FILE
    token = _take_mark(mark)
    if token is None:
        return False  # absorbed: the waiting tick will read what we committed
    try:
        _spawn(home, environ, token)
    except OSError as exc:
        _drop_mark(mark, token)
        _record_failure(db, f"{why}: cannot start a tick: {exc}")
        return False
    return True


def clear_pending(settings: Settings, token: str) -> None:
    """The kicked tick's first act, before it reads any state: remove its own mark."""
    _drop_mark(settings.home / PENDING_FILE, token)


def _take_mark(mark: Path) -> str | None:
    """A new token in a new pending mark, or None when a fresh mark exists."""
    token = secrets.token_hex(8)
    for _ in range(2):
        try:
            fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if not _stale(mark):
                return None
            _drop_mark(mark, None)
            continue
        except OSError:
            return None  # the home is not writable: nothing a kick can do
        with os.fdopen(fd, "w") as handle:
            handle.write(token)
        return token
    return None


def _stale(mark: Path) -> bool:
    try:
        return time.time() - mark.stat().st_mtime > STALE_S
    except FileNotFoundError:
        return True  # gone meanwhile: take it


def _drop_mark(mark: Path, token: str | None) -> None:
    """Remove the mark when it still holds `token` (any token when None)."""
    try:
        if token is not None and mark.read_text() != token:
            return  # a newer kick's mark: not ours to remove
        mark.unlink()
    except FileNotFoundError:
        pass


def _spawn(home: Path, environ: Mapping[str, str], token: str) -> None:
    """`orch tick --quiet --kicked TOKEN`, in its own session, outside any run of this
    home (the kicking run's mark removed from the environment), output to the logs."""
    from orch import procs
    from orch.procs.marks import MARK_VAR, home_id, outside_run_env

    env = dict(environ)
    if MARK_VAR in env:
        env = outside_run_env(env, home_id(home))
    argv = [sys.executable, "-m", "orch", "--home", str(home), "tick", "--quiet",
            "--kicked", token]
    procs.spawn_detached(argv, cwd=home, env=env, log_path=home / "logs" / "kicked-ticks.log")


def _record_failure(db: Database | None, detail: str) -> None:
    if db is None:
        print(f"orch: {detail}", file=sys.stderr)
        return
    try:
        with db.transaction():
            events.record(db, "kick-failed", detail[:1000])
    except Exception as exc:  # the state itself is failing: say so, never fail the caller
        print(f"orch: {detail} (and could not record it: {exc})", file=sys.stderr)
