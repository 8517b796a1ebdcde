"""Helpers run as the unprivileged user (through `Sandbox.call`): a job owned by a tick
that has died, whose recorded group leader is a process of our choosing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def claim_as_dead(home: str, pgid: int, pgid_started: int) -> int:
    """Claim the home's queued job as a tick that has died since, and record `pgid` as
    its command's group; returns the run id."""
    from orch import procs
    from orch.state import jobs, runs
    from orch.state.jobs import Owner
    from orch.state.schema import open_database
    from orch.timeutil import now_iso

    gone = subprocess.Popen(["true"])
    gone.wait()
    db = open_database(Path(home) / "orch.db")
    try:
        owner = Owner(gone.pid, 1, procs.hostname(), procs.boot_id(), time.monotonic())
        claimed = jobs.claim_next(db, now=now_iso(), max_concurrency=1, owner=owner,
                                  log_dir=str(Path(home) / "logs"))
        assert claimed is not None
        _, run = claimed
        with db.transaction():
            runs.set_group(db, run.id, pgid, pgid_started)
        return run.id
    finally:
        db.close()
