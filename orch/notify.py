"""The notify hook (SPEC section 9): run the configured argv with one event as JSON on stdin.

A failing hook is recorded as an event only: never in the tick's errors,
never stopping the tick.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from orch.config import Settings
from orch.state import events
from orch.state.db import Database

NOTIFY_TIMEOUT_S = 30


def send(settings: Settings, db: Database, payload: dict[str, Any]) -> bool:
    """Deliver one notification; False (and an event) when the hook failed."""
    if not settings.notify:
        return True
    problem = None
    try:
        result = subprocess.run(list(settings.notify), input=(json.dumps(payload) + "\n").encode(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                timeout=NOTIFY_TIMEOUT_S, check=False)
        if result.returncode != 0:
            tail = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
            problem = f"exit {result.returncode}" + (f": {tail[0]}" if tail else "")
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = str(exc)
    if problem is None:
        return True
    try:
        with db.transaction():
            events.record(db, "notify-failed", f"{payload.get('event')}: {problem}"[:1000],
                          task_id=payload.get("task"))
    except Exception as exc:  # the database itself is failing: say so, don't stop the tick
        import sys

        print(f"orch: notify failed ({problem}) and could not be recorded: {exc}",
              file=sys.stderr)
    return False
