"""The notify hook (SPEC section 9): run the configured argv with one event as JSON on stdin.

A failing hook is recorded as an event only: never in the tick's errors,
never stopping the tick.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from orch.config import Settings
from orch.procs import run_in_group
from orch.state import events
from orch.state.db import Database

NOTIFY_TIMEOUT_S = 30


def send(settings: Settings, db: Database, payload: dict[str, Any]) -> bool:
    """Deliver one notification; False (and an event) when the hook failed."""
    if not settings.notify:
        return True

    problem = None
    run = run_in_group(list(settings.notify), cwd=settings.home, env=dict(settings.environ),
                       timeout_s=NOTIFY_TIMEOUT_S, stdin_text=json.dumps(payload) + "\n",
                       grace_s=1.0)
    if run.start_error is not None:
        problem = run.start_error
    elif run.timed_out:
        problem = f"timed out after {NOTIFY_TIMEOUT_S} s"
    elif run.exit_code != 0:
        tail = run.stderr_tail.strip().splitlines()[-1:]
        problem = f"exit {run.exit_code}" + (f": {tail[0]}" if tail else "")
    if problem is None:
        return True
    try:
        with db.transaction():
            events.record(db, "notify-failed", f"{payload.get('event')}: {problem}"[:1000],
                          task_id=payload.get("task"))
    except Exception as exc:  # the database itself is failing: say so, don't stop the tick

        print(f"orch: notify failed ({problem}) and could not be recorded: {exc}",
              file=sys.stderr)
    return False
