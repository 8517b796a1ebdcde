"""Inline runs: test-runner, staging-runner, merge and command jobs run inside the tick.

The job is owned by this tick (its pid, start time, boot id and host were
recorded by the claim). A heartbeat thread keeps `heartbeat_at` and
`heartbeat_mono` fresh while the runner works, the command's process group
goes on the run (`runs.pgid`) as soon as it starts, and the gate is applied
in the same tick once the run ends.
"""

from __future__ import annotations

import threading

from orch.engine.context import Engine
from orch.engine.tick.advance import judge_job
from orch.state import jobs, runs
from orch.state.records import Job, Run, Task
from orch.timeutil import monotonic, now_iso


class Heartbeat:
    """Heartbeat a running job from a thread; notices when the run lost the job."""

    def __init__(self, engine: Engine, job_id: int, run_id: int) -> None:
        self.engine = engine
        self.job_id = job_id
        self.run_id = run_id
        self.group: tuple[int, int] | None = None  # (pgid, start ticks) of the run's command
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def beat(self) -> None:
        if not jobs.heartbeat(self.engine.db, self.job_id, self.run_id, at=now_iso(),
                              mono=monotonic()):
            self.lost.set()

    def _loop(self) -> None:
        interval = self.engine.settings.heartbeat_interval_s
        while not self._stop.wait(interval):
            try:
                self.beat()
            except Exception:  # a locked database: the next beat tries again
                continue
            if self.lost.is_set():
                self._stop_lost_run()
                return

    def _stop_lost_run(self) -> None:
        """The job was cancelled or reaped under us: end our command and everything it
        started (by the run's mark and below its leader) now."""
        from orch.procs import tree

        root = self.group if self.group is not None and self.group[1] else None
        tree.end_run_tree(self.engine.home.run_mark(self.run_id), root,
                          grace_s=self.engine.settings.cancel_grace_s)


class RunLost(Exception):
    """The run no longer owns its job (reaped or cancelled meanwhile)."""


def still_ours(engine: Engine, job_id: int, run_id: int) -> bool:
    """A heartbeat fenced by run_id: True while this run still owns the running job."""
    return jobs.heartbeat(engine.db, job_id, run_id, at=now_iso(), mono=monotonic())


def run_inline(engine: Engine, task: Task, job: Job, run: Run) -> None:
    """Run one inline job to its end, record the run, and apply its gate now."""
    from orch.engine.run.runners import dispatch

    beat = Heartbeat(engine, job.id, run.id)

    def on_start(pgid: int, started: int) -> None:
        beat.group = (pgid, started)
        runs.set_group(engine.db, run.id, pgid, started)
        # Recorded first, checked second: a reaper or `orch cancel` that came before
        # the group was recorded could not kill it, so it is ours to kill now
        # (run_in_group kills the group when this raises).
        if not still_ours(engine, job.id, run.id):
            raise RunLost(f"run {run.id} lost job {job.id} as it started")

    if not still_ours(engine, job.id, run.id):
        return  # reaped or cancelled since the claim: another run (or nobody) does the work
    try:
        with beat:
            exit_code, outcome, error = dispatch(engine, task, job, run, on_start)
    except RunLost:
        return
    tail = None
    if engine.db.multi_host:  # another host's `orch logs` reads it from the state
        from orch.engine.stored import log_tail

        tail = log_tail(run.log_path)
    with engine.db.transaction():
        finished = jobs.finish_run(engine.db, job.id, run.id, exit_code=exit_code,
                                   outcome=outcome, error=error, log_tail=tail)
    if finished:
        fresh = jobs.get(engine.db, job.id)
        if fresh is not None:
            judge_job(engine, fresh)
        if not engine.dry_run:  # the next stage's job may be claimable now
            from orch.engine.kick import kick

            kick(engine.settings, f"run {run.id} judged", engine.db)


