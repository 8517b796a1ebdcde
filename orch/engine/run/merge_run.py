"""The merge as a run like any other (SPEC section 8): a child process of the tick, in
the run's recorded process group and under its mark.

The tick starts `python -m orch.engine.run.merge_run` through `procs.run_in_group`
(so its group is recorded on the run before anything else happens, the tick
heartbeats for it, and `orch cancel` or the reaper end it with everything it
started: git, its hooks, what they started), with a `MergePlan` on stdin. Here:

- the worktree is prepared under the repo lock;
- the rebase runs without the lock (a slow `pre-rebase` hook holds up nobody);
- the default branch is moved, and pushed, only inside `Fence.owned`: the repo
  lock held, and the run's ownership of its job checked in the database right
  then (same `run_id`, still `running`, task not closed). `orch cancel` takes
  the same lock before it closes the job, and the reaper before it requeues a
  merge job, so a cancelled or reaped merge never moves the branch;
- a per-task merge lock held for the whole run: a second merge of the same job
  (should a killed run's process survive) waits for nothing and touches nothing.

Exit status: 0 with the report written and one `ORCH_MERGE_RESULT {json}` line on
stdout; 3 when the run lost its job (nothing changed after that, no report); 4 when
another merge of the task still runs; anything else is a crash (a RETRY).
"""

from __future__ import annotations

import fcntl
import json
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from orch.gitops import FenceLost
from orch.home import Home
from orch.state.db import Database
from orch.timeutil import now_iso

RESULT_PREFIX = "ORCH_MERGE_RESULT "
EXIT_LOST = 3
EXIT_BUSY = 4


@dataclass(frozen=True)
class MergePlan:
    """Everything the merge child needs, decided by the tick."""

    job_id: int
    run_id: int
    task_id: int
    state: str  # where the state lives: the SQLite file or a postgresql:// URL
    home: str
    repo: str
    repo_path: str
    worktree: str
    branch: str
    default_branch: str
    push: bool
    report: str
    fetch_first: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> MergePlan:
        return MergePlan(**json.loads(text))


class Fence:
    """The merge's fence (gitops.MergeFence) over the repo lock and the database."""

    def __init__(self, plan: MergePlan, db: Database) -> None:
        self.plan = plan
        self.db = db
        self.home = Home(Path(plan.home))

    def worktree(self) -> AbstractContextManager[None]:
        return self.home.repo_lock(self.plan.repo)

    @contextmanager
    def owned(self, step: str) -> Iterator[None]:
        with self.home.repo_lock(self.plan.repo):
            problem = ownership_problem(self.db, self.plan)
            if problem is not None:
                raise FenceLost(f"{problem}: stopped before {step}")
            yield


def ownership_problem(db: Database, plan: MergePlan) -> str | None:
    """Why the run no longer owns its job, or None while it does. Read under the repo
    lock, which `orch cancel` and the reaper of a merge job take before they write."""
    from orch.state import jobs, tasks

    job = jobs.get(db, plan.job_id)
    task = tasks.get(db, plan.task_id)
    if job is None or job.run_id != plan.run_id:
        return f"run {plan.run_id} no longer owns job {plan.job_id}"
    if job.status != "running":
        return f"job {plan.job_id} is {job.status}, no longer running"
    if task is None or task.closed:
        return f"task {plan.task_id} is closed"
    return None


def say(message: str) -> None:
    """One timestamped line of the run's log (our stdout goes to it)."""
    print(f"{now_iso()} merge: {message}", flush=True)


@contextmanager
def merge_lock(plan: MergePlan) -> Iterator[bool]:
    """The per-task merge lock, taken without waiting; yields whether we hold it."""
    path = Home(Path(plan.home)).root / "worktrees" / f".{plan.repo}.{plan.task_id}.merge.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def run(plan: MergePlan, db: Database) -> int:
    """Merge under the fence; the exit status of the child (see the module docstring)."""
    from orch.runners.merge import run_merge

    with merge_lock(plan) as held:
        if not held:
            say(f"another merge of task {plan.task_id} is still running: not starting")
            return EXIT_BUSY
        try:
            outcome = run_merge(Path(plan.repo_path), Path(plan.worktree), plan.branch,
                                plan.default_branch, push=plan.push,
                                report_path=Path(plan.report), log=say, fence=Fence(plan, db),
                                fetch_first=plan.fetch_first)
        except FenceLost as exc:
            say(f"{exc}; nothing more was changed and no report was written")
            return EXIT_LOST
    print(RESULT_PREFIX + json.dumps({"result": outcome.result, "reason": outcome.reason}),
          flush=True)
    return 0


def main() -> int:
    """`python -m orch.engine.run.merge_run` with the plan on stdin."""
    from orch.state import connect

    plan = MergePlan.from_json(sys.stdin.read())
    db = connect(plan.state)
    try:
        return run(plan, db)
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
