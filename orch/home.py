"""The home's layout: where every file of one orch home lives, and its locks (SPEC 1).

One object, made from the home directory and passed around, so no module
builds a path into the home by itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CONFIG_FILE = "orch.yaml"
DB_FILE = "orch.db"
YAML_CACHE_FILE = ".yaml-cache.json"  # parsed orch.yaml and pipeline file (orch.yamlio)
HOME_DIRS = ("tasks", "worktrees", "logs")


class Home:
    """The places of one home: `orch.yaml`, `orch.db`, tasks/, worktrees/, logs/."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"Home({str(self.root)!r})"

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def db_path(self) -> Path:
        return self.root / DB_FILE

    @property
    def yaml_cache(self) -> Path:
        return self.root / YAML_CACHE_FILE

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def prompts(self) -> Path:
        """Where a person's prompt templates override the packaged ones."""
        return self.root / "templates" / "prompts"

    def exists(self) -> bool:
        """A home is a directory with an `orch.yaml` or an `orch.db` (SPEC section 1)."""
        return self.config_file.is_file() or self.db_path.is_file()

    def artifacts(self, task_id: int) -> Path:
        return self.root / "tasks" / str(task_id)

    def worktree(self, repo: str, task_id: int) -> Path:
        return self.root / "worktrees" / repo / str(task_id)

    def log(self, job_id: int, run_id: int) -> Path:
        return self.logs / f"job-{job_id}-run-{run_id}.log"

    def run_mark(self, run_id: int) -> str:
        """The mark (`ORCH_RUN_MARK`) every process of run `run_id` of this home carries:
        the home's own id (two homes share run ids, never marks) and the run id
        (docs/processes.md)."""
        from orch.procs.marks import home_id, run_mark

        return run_mark(home_id(self.root), run_id)

    @contextmanager
    def repo_lock(self, repo: str) -> Iterator[None]:
        """Serialize worktree changes of one repo across overlapping ticks and orch gc.

        `git worktree add` in one tick and `git worktree prune` (or another add) in
        another race on the repo's `.git/worktrees` ("failed to read
        .git/worktrees/N/commondir"); each spurious failure would cost the job an
        attempt. An flock on a file in the home: a killed tick releases it.
        """
        import fcntl

        path = self.root / "worktrees" / f".{repo}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
