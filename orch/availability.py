"""Whether a configured repo can be used right now (SPEC section 2), without running git.

A repo whose path is missing or is not a git repository is *unavailable*: its
tasks wait with that reason and every other repo works as usual. Checked by
every tick, so it only looks at the file system (no git, no gitops import).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orch.config import RepoConfig


def is_git_repo(path: Path) -> bool:
    """True for a working tree (`.git` dir or file) or a bare repository; no git is run."""
    path = Path(path)
    if not path.is_dir():
        return False
    dot_git = path / ".git"
    if dot_git.is_file() or (dot_git / "HEAD").is_file():
        return True
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def repo_problem(repo: RepoConfig | None) -> str | None:
    """Why a configured repo (None: orch.yaml lacks it) can't be used now, or None."""
    if repo is None:
        return "repo is not in orch.yaml"
    if not repo.path.is_dir():
        return f"repo unavailable: {repo.path} does not exist"
    if not is_git_repo(repo.path):
        return f"repo unavailable: {repo.path} is not a git repository"
    return None
