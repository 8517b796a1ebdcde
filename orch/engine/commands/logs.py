"""What `orch logs` shows: a run's log, whole or followed as it grows (SPEC section 9).

On a state shared by several hosts (SPEC section 11) a run's log stays on the
host that ran it. Asked on another host, `orch logs` prints the last 64 KiB
stored with the run when it ended, or, while it runs (or when nothing was
stored), one line saying which host holds the log and where.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from pathlib import Path

from orch.config import Settings
from orch.errors import NotFoundError
from orch.state import jobs, runs, views
from orch.state.db import Database
from orch.state.records import Run


def find_run(settings: Settings, db: Database, job_id: int, run_id: int | None = None
             ) -> tuple[Run, Path]:
    """A job's run (the newest by default) and its log file; NotFoundError (exit 3) if none."""
    job = jobs.get(db, job_id)
    if job is None:
        raise NotFoundError(f"no such job: {job_id}")
    run = views.job_run(db, job_id, run_id)
    if run is None:
        if run_id is not None:
            raise NotFoundError(f"job {job_id} has no run {run_id} (see orch task show "
                                f"{job.task_id})")
        raise NotFoundError(f"job {job_id} has no run yet (it is {job.status})")
    text = run.log_path or str(settings.paths.log(job_id, run.id))
    path = Path(text)
    return run, path if path.is_absolute() else settings.home / path


def run_finished(db: Database, job_id: int, run_id: int) -> bool:
    """True once a run has ended (its row says so, or the job moved on from it)."""
    run = views.job_run(db, job_id, run_id)
    job = jobs.get(db, job_id)
    return run is None or job is None or run.finished_at is not None \
        or job.status != "running" or job.run_id != run_id


def elsewhere(settings: Settings, db: Database, run: Run, path: Path) -> bool:
    """Did the run run on another host (its log is not here)?"""
    return db.multi_host and bool(run.host) and run.host != settings.host_name \
        and not path.is_file()


def remote_log(db: Database, job_id: int, run: Run, path: Path) -> str:
    """Another host's run: its stored tail once it ended, else where its log lives."""
    tail = runs.log_tail(db, run.id)
    if tail is not None and run.finished_at:
        return tail
    state = "ended (no tail was stored)" if run.finished_at else "is running"
    return (f"job {job_id} run {run.id} {state} on host {run.host}: its log is {path} on "
            f"that host (its last 64 KiB is stored here when the run ends)\n")


class LogReader:
    """Reads a log file from where it last stopped, decoding UTF-8 across chunk edges."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def read_new(self) -> str:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return ""
        self.offset += len(data)
        return self._decoder.decode(data)


def print_log(settings: Settings, db: Database, job_id: int, run_id: int | None,
              write: Callable[[str], None], *, follow: bool = False, poll_s: float = 0.5
              ) -> None:
    """Write a run's log; with `follow`, keep writing what is appended until the run ends."""
    run, path = find_run(settings, db, job_id, run_id)
    if elsewhere(settings, db, run, path):
        write(remote_log(db, job_id, run, path))
        return
    if not follow and not path.is_file():
        raise NotFoundError(f"{path}: the log of job {job_id} run {run.id} is gone "
                            "(orch gc removes the logs of closed tasks)")
    reader = LogReader(path)
    while True:
        finished = not follow or run_finished(db, job_id, run.id)
        text = reader.read_new()
        if text:
            write(text)
        if finished:
            return
        time.sleep(poll_s)
