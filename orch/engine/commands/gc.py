"""`orch gc`: tidy up after closed tasks (SPEC section 8).

For each closed task last changed more than DAYS ago: remove its worktree,
delete its branch (never one with commits that are not on the default branch,
unless the task was cancelled and `--force` is given), and prune its events,
runs and log files. Open tasks are never touched: candidates are read with
`state = 'closed'`, and the deletion re-checks it inside its transaction.
The task row, its jobs and its artifacts (`tasks/<id>/`) are kept: they are
the record of what happened, and `orch task show` still shows them.

Order of the side effects, so that a crash at any point is harmless:

1. git first (worktree, then branch): both are idempotent, and the task has
   no tombstone yet, so the next gc simply does them again;
2. one transaction deletes the task's old events and its runs;
3. the log files go after that commit: a crash in between leaves files that
   no row points to (never a row pointing at a missing file); the next gc
   finds them again by job id (`logs/job-<job>-run-*`, jobs rows are kept);
4. last, a `gc` event (the tombstone) says the task is collected, so later
   runs skip it. A task whose branch was kept, or whose repo is unavailable,
   gets no tombstone and is looked at again by the next gc.

`--dry-run` runs the same reads and reports what would be done; it changes
nothing (no git command that writes, no DELETE, no file removed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orch import gitops
from orch.config import RepoConfig, Settings
from orch.state import events, maint
from orch.state.db import Database
from orch.state.records import Task
from orch.timeutil import to_iso


@dataclass
class TaskGc:
    """What gc did (or, dry, would do) for one closed task."""

    id: int
    repo: str
    stage: str
    updated_at: str
    worktree: str = "absent"  # removed | absent | kept | would remove | skipped
    branch: str | None = None
    branch_action: str = "none"  # deleted | absent | kept | none | would delete | skipped
    note: str = ""
    events: int = 0
    runs: int = 0
    logs: int = 0
    error: str | None = None

    @property
    def finished(self) -> bool:
        """Nothing left for a later gc to do."""
        return (self.error is None and self.worktree in ("removed", "absent")
                and self.branch_action in ("deleted", "absent", "none"))

    def summary(self) -> str:
        branch = f"branch {self.branch} {self.branch_action}" if self.branch else "no branch"
        return (f"worktree {self.worktree}; {branch}; pruned {self.events} event(s), "
                f"{self.runs} run(s), {self.logs} log file(s)")


@dataclass
class GcReport:
    """The outcome of one `orch gc`; `as_dict()` is its `--json`."""

    dry_run: bool
    older_than_days: int
    cutoff: str
    force: bool
    tasks: list[TaskGc] = field(default_factory=list)
    global_events: int = 0

    @property
    def errors(self) -> list[TaskGc]:
        return [item for item in self.tasks if item.error]

    def totals(self) -> dict[str, int]:
        return {"tasks": len(self.tasks),
                "worktrees": sum(item.worktree in ("removed", "would remove")
                                 for item in self.tasks),
                "branches_deleted": sum(item.branch_action in ("deleted", "would delete")
                                        for item in self.tasks),
                "branches_kept": sum(item.branch_action == "kept" for item in self.tasks),
                "events": sum(item.events for item in self.tasks) + self.global_events,
                "runs": sum(item.runs for item in self.tasks),
                "logs": sum(item.logs for item in self.tasks)}

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "older_than_days": self.older_than_days,
                "cutoff": self.cutoff, "force": self.force,
                "tasks": [asdict(item) for item in self.tasks],
                "global_events": self.global_events, "totals": self.totals()}


def run_gc(settings: Settings, db: Database, *, older_than_days: int | None = None,
           force: bool = False, dry_run: bool = False, now: datetime | None = None
           ) -> GcReport:
    """Collect every closed task older than the cutoff; see the module docstring."""
    days = settings.retention_days if older_than_days is None else older_than_days
    cutoff = to_iso((now or datetime.now(UTC)) - timedelta(days=days))
    report = GcReport(dry_run=dry_run, older_than_days=days, cutoff=cutoff, force=force)
    for task in maint.gc_candidates(db, cutoff):
        report.tasks.append(_collect(settings, db, task, cutoff, force, dry_run))
    if dry_run:
        report.global_events = maint.count_global_events(db, cutoff)
    else:
        with db.transaction():
            report.global_events = maint.prune_global_events(db, cutoff)
    return report


def _collect(settings: Settings, db: Database, task: Task, cutoff: str,
             force: bool, dry_run: bool) -> TaskGc:
    from orch.gitops import GitError

    item = TaskGc(id=int(task.id), repo=str(task.repo), stage=str(task.stage),
                  updated_at=str(task.updated_at), branch=task.branch)
    if not task.closed or maint.has_open_job(db, item.id):
        item.worktree = item.branch_action = "skipped"  # never race a run or an open task
        item.note = "the task is open or a job of it is still queued or running"
        return item
    try:
        _git_cleanup(settings, task, item, force, dry_run)
    except GitError as exc:
        item.error = str(exc)
    if dry_run:
        item.events, item.runs = maint.count_task_history(db, item.id, cutoff)
        item.logs = len(_log_files(settings, db, item.id))
        return item
    with db.transaction():
        item.events, item.runs = maint.prune_task_history(db, item.id, cutoff)
    item.logs, problem = _remove_files(_log_files(settings, db, item.id))
    item.error = item.error or problem
    if item.finished:
        with db.transaction():
            events.record(db, maint.GC_EVENT, item.summary(), task_id=item.id)
    return item


def _git_cleanup(settings: Settings, task: Task, item: TaskGc, force: bool,
                 dry_run: bool) -> None:
    """Worktree, then branch (a branch checked out in its worktree can't be deleted)."""
    repo = settings.repos.get(item.repo)
    from orch.availability import repo_problem

    reason = repo_problem(repo)
    if reason or repo is None:
        item.worktree = item.branch_action = "skipped"
        item.note = reason or "repo is not in orch.yaml"
        return
    with settings.paths.repo_lock(item.repo):  # a tick may be adding a worktree of it
        item.worktree = _worktree(repo, settings.paths.worktree(item.repo, item.id), dry_run)
        if item.worktree == "kept":
            item.note = "the worktree directory is not a git worktree of the repo; left in place"
        item.branch_action, note = _branch(repo, task, force, dry_run)
    item.note = "; ".join(part for part in (item.note, note) if part)


def _worktree(repo: RepoConfig, path: Path, dry_run: bool) -> str:

    if not path.exists():
        if not dry_run:
            gitops.remove_worktree(repo.path, path)  # prunes metadata a lost directory left
        return "absent"
    if dry_run:
        return "would remove"
    gitops.remove_worktree(repo.path, path)
    return "kept" if path.exists() else "removed"


def _branch(repo: RepoConfig, task: Task, force: bool, dry_run: bool
            ) -> tuple[str, str]:
    """(action, note) for the task branch: the SPEC's rule on unmerged commits."""

    branch = task.branch
    if not branch:
        return "none", ""
    try:
        gitops.head_commit(repo.path, f"refs/heads/{branch}")
    except gitops.GitError:
        return "absent", ""
    ahead = gitops.commits_beyond_default(repo.path, branch, repo.default_branch)
    cancelled = task.stage == "cancelled"
    if ahead and not (cancelled and force):
        hint = " (cancelled task: --force deletes it)" if cancelled else ""
        return "kept", f"branch has {ahead} commit(s) not on {repo.default_branch}{hint}"
    note = f"{ahead} unmerged commit(s) dropped (--force)" if ahead else ""
    if dry_run:
        return "would delete", note
    deleted = gitops.delete_branch(repo.path, branch, force=bool(ahead),
                                   default_branch=repo.default_branch)
    return ("deleted" if deleted else "absent"), note


def _log_files(settings: Settings, db: Database, task_id: int) -> list[Path]:
    """The task's run logs and prompt files (`logs/job-<job>-run-*`), found by job id.

    Job ids rather than runs rows, so files a crash left after their rows
    were deleted are still found.
    """
    directory = settings.paths.logs
    if not directory.is_dir():
        return []
    found: list[Path] = []
    for job_id in maint.job_ids(db, task_id):
        found += sorted(path for path in directory.glob(f"job-{job_id}-run-*")
                        if path.is_file() or path.is_symlink())
    return found


def _remove_files(paths: list[Path]) -> tuple[int, str | None]:
    """Unlink each path; (how many went, the first failure)."""
    removed, problem = 0, None
    for path in paths:
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            problem = problem or f"cannot remove {path}: {exc.strerror or exc}"
    return removed, problem
