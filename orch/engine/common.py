"""Small shared pieces of the engine: places in the home, repo availability, environments."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orch.config import RepoConfig, Settings, frozen_record
from orch.timeutil import to_iso


def artifacts_dir(settings: Settings, task_id: int) -> Path:
    return settings.home / "tasks" / str(task_id)


def worktree_dir(settings: Settings, repo: str, task_id: int) -> Path:
    return settings.home / "worktrees" / repo / str(task_id)


def logs_dir(settings: Settings) -> Path:
    return settings.home / "logs"


def repo_unavailable(repo: RepoConfig | None) -> str | None:
    """Why a repo can't be used right now (missing path, not git), or None."""
    from orch.gitops import is_git_repo

    if repo is None:
        return "repo is not in orch.yaml"
    if not repo.path.is_dir():
        return f"repo unavailable: {repo.path} does not exist"
    if not is_git_repo(repo.path):
        return f"repo unavailable: {repo.path} is not a git repository"
    return None


def unavailable_repos(settings: Settings, names: set[str]) -> dict[str, str]:
    """{repo: reason} for the named repos that can't be used (unknown ones included)."""
    result = {}
    for name in names:
        reason = repo_unavailable(settings.repos.get(name))
        if reason:
            result[name] = reason
    return result


def later(seconds: float) -> str:
    return to_iso(datetime.now(UTC) + timedelta(seconds=seconds))


def utc_day_start() -> str:
    now = datetime.now(UTC)
    return to_iso(now.replace(hour=0, minute=0, second=0, microsecond=0))


def epoch_of(stamp: str) -> float:
    from orch.timeutil import parse_iso

    return parse_iso(stamp).timestamp()


@frozen_record
class Identity:
    """Who this process is, as recorded on the jobs it owns."""

    pid: int
    started: int | None
    host: str
    boot_id: str

    @staticmethod
    def here() -> Identity:
        from orch import procs

        pid, started = procs.self_identity()
        return Identity(pid, started, procs.hostname(), procs.boot_id())


def monotonic() -> float:
    return time.monotonic()


def run_env(settings: Settings, orch_vars: dict[str, str],
            role_env: dict[str, str] | None = None) -> dict[str, str]:
    """orch's own environment + env_file + ORCH_* variables + a role's env."""
    from orch.agents import agent_env, read_env_file

    env_file: dict[str, str] = {}
    if settings.env_file is not None:
        env_file = read_env_file(settings.env_file)
    return agent_env(os.environ, env_file, orch_vars, role_env or {})


def orch_vars(settings: Settings, task: dict[str, Any], job: dict[str, Any],
              run_id: int) -> dict[str, str]:
    from orch.agents import orch_env_vars

    return orch_env_vars(
        home=settings.home, task_id=task["id"], job_id=job["id"], run_id=run_id,
        stage=job["stage"], round_no=task["round"], repo=task["repo"],
        artifacts=artifacts_dir(settings, task["id"]),
        worktree=worktree_dir(settings, task["repo"], task["id"]))


@contextmanager
def repo_lock(settings: Settings, repo: str) -> Iterator[None]:
    """Serialize worktree changes of one repo across overlapping ticks and orch gc.

    `git worktree add` in one tick and `git worktree prune` (or another add) in
    another race on the repo's `.git/worktrees` ("failed to read
    .git/worktrees/N/commondir"); each spurious failure would cost the job an
    attempt. An flock on a file in the home: a killed tick releases it.
    """
    import fcntl

    path = settings.home / "worktrees" / f".{repo}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
