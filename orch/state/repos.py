"""Per-repo state kept in the database: the freeze switch of the serial gate."""

from __future__ import annotations

from orch.state.db import Database
from orch.timeutil import now_iso


def set_frozen(db: Database, repo: str, frozen: bool) -> bool:
    """Freeze or unfreeze a repo; True when that changed something."""
    current = db.scalar("SELECT frozen FROM repo_state WHERE repo = ?", (repo,))
    if bool(current) == frozen:
        return False
    db.execute("INSERT INTO repo_state (repo, frozen, updated_at) VALUES (?, ?, ?) "
               "ON CONFLICT(repo) DO UPDATE SET frozen = excluded.frozen, "
               "updated_at = excluded.updated_at", (repo, int(frozen), now_iso()))
    return True


def frozen_repos(db: Database) -> set[str]:
    return {row["repo"] for row in db.all("SELECT repo FROM repo_state WHERE frozen = 1")}
