"""Every git operation orch performs: task worktrees, branches and the merge (SPEC sections 1, 8).

This is the only module that touches git. Every command runs through `_git`, one
`git` process with stdin closed, GIT_TERMINAL_PROMPT=0 so a credential prompt can
never hang a tick, the C locale so git's messages (which orch reports) are stable,
and the repository's own identity, config and hooks. Nothing here may lose a byte
of the user's working tree: the merge refuses (result `blocked`) rather than
overwrite anything that is not committed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from orch.errors import OrchError

GIT_ENV = {"LANGUAGE": "C", "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
PUSH_TIMEOUT_S = 300.0
_DRAIN_S = 2.0  # how long to read what a killed git left in its pipes
_NON_SLUG = re.compile(r"[^a-z0-9]+")

Log = Callable[[str], None]
# Variables added to every git command's environment in this context: a run's mark
# (ORCH_RUN_MARK), so that git and its hooks belong to the merge's run and end with it.
_RUN_ENV: ContextVar[Mapping[str, str] | None] = ContextVar("orch_gitops_run_env",
                                                            default=None)


@contextmanager
def run_environment(env: Mapping[str, str]) -> Iterator[None]:
    """Run every git command of the block with these variables added (the run's mark)."""
    token = _RUN_ENV.set(dict(env))
    try:
        yield
    finally:
        _RUN_ENV.reset(token)


class GitError(OrchError):
    """A git command failed where the caller cannot go on; the message carries git's stderr."""


@dataclass(frozen=True)
class GitResult:
    """What one git command returned."""

    status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0


@dataclass(frozen=True)
class MergeOutcome:
    """What `merge_task` did; `result` is what 15-merge-report.md states."""

    result: str  # 'merged' | 'conflict' | 'blocked'
    commit: str | None  # new tip of the default branch (merged)
    conflicts: tuple[str, ...]  # conflicting files (conflict)
    pushed: bool | None  # None when push was not requested
    defer: bool  # the default branch moved twice: try again later
    reason: str


# --------------------------------------------------------------------------- plumbing


def _git(path: Path | str, *args: str, check: bool = True,
         timeout: float | None = None) -> GitResult:
    """Run `git ARGS` in PATH; GitError on a non-zero exit when `check`.

    Output is decoded as UTF-8 (undecodable bytes kept as surrogates) with one
    trailing newline removed. After TIMEOUT seconds git and its descendants (ssh,
    remote helpers) are killed and the result is a failure saying so.
    """
    if not Path(path).is_dir():
        raise GitError(f"git {args[0]}: {path} is not a directory")
    try:
        proc = subprocess.Popen(["git", *args], cwd=path,
                                env={**os.environ, **(_RUN_ENV.get() or {}), **GIT_ENV},
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as exc:
        raise GitError(f"cannot run git: {exc}") from exc
    with proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            out = _leftover_output(proc)
            err = f"git {args[0]} did not complete in {timeout:g} s and was killed".encode()
    result = GitResult(proc.returncode, _text(out), _text(err))
    if check and not result.ok:
        detail = result.stderr.strip() or result.stdout.strip() or f"exit status {result.status}"
        raise GitError(f"git {' '.join(args)} failed in {path}: {detail}")
    return result


def _text(data: bytes) -> str:
    """Git output as text: UTF-8, undecodable bytes kept as surrogates, one final newline cut."""
    return data.removesuffix(b"\n").decode("utf-8", "surrogateescape")


def _leftover_output(proc: subprocess.Popen[bytes]) -> bytes:
    """What a killed git wrote to stdout; b"" when a survivor keeps the pipe open too long."""
    try:
        return proc.communicate(timeout=_DRAIN_S)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return b""


def _kill_tree(pid: int) -> None:
    """SIGKILL PID, then every descendant it has now (found through /proc).

    The parent first, so that it starts no new child meanwhile; the pids of its
    children stay theirs while they live, reparented or not.
    """
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    ppid = int(handle.read().rpartition(b")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile, or not a process entry
            parents.setdefault(ppid, []).append(int(entry))
    tree, index = [pid], 0
    while index < len(tree):
        tree.extend(parents.get(tree[index], ()))
        index += 1
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except OSError:
            pass  # already gone


def _split_z(text: str) -> tuple[str, ...]:
    """Split NUL-separated git output (`-z`) into paths."""
    return tuple(part for part in text.split("\0") if part)


def _config(path: Path, key: str) -> str | None:
    """A git config value of the repository at PATH, None when unset."""
    result = _git(path, "config", "--get", key, check=False)
    value = result.stdout.strip()
    return value if result.ok and value else None


def branch_exists(repo_path: Path, branch: str) -> bool:
    """True when refs/heads/BRANCH exists in the repository."""
    ref = f"refs/heads/{branch}"
    return _git(repo_path, "rev-parse", "--verify", "--quiet", ref, check=False).ok



# --------------------------------------------------------------------------- pushed task branches


def push_task_branch(repo_path: Path, branch: str) -> tuple[bool, str]:
    """Push BRANCH to origin's branch of the same name, replacing it (the task branch is the
    task's own; a merge may have rebased it). For `merge.push_branches` (SPEC section 11):
    another host can rebuild the task's worktree from it. Returns (pushed, what happened)."""
    return remote_step(repo_path, ("push", "--force", "origin",
                                   f"refs/heads/{branch}:refs/heads/{branch}"),
                       f"pushed {branch} to origin", f"push of {branch} to origin failed")


def fetch_task_branch(repo_path: Path, branch: str) -> tuple[bool, str]:
    """Set the local BRANCH to origin's (a task taken over from a dead host: its worktree is
    rebuilt from the pushed branch). Only while BRANCH is checked out nowhere."""
    return remote_step(repo_path, ("fetch", "origin", f"+refs/heads/{branch}:refs/heads/{branch}"),
                       f"fetched {branch} from origin", f"fetch of {branch} from origin failed")


def remote_step(repo_path: Path, args: tuple[str, ...], done: str, failed: str
                ) -> tuple[bool, str]:
    """A git command that talks to a remote (bounded by PUSH_TIMEOUT_S): (True, DONE), or
    (False, "FAILED: why") with git's own message."""
    try:
        result = _git(repo_path, *args, check=False, timeout=PUSH_TIMEOUT_S)
    except GitError as exc:
        return False, f"{failed}: {exc}"
    if result.ok:
        return True, done
    return False, f"{failed}: {result.stderr.strip() or f'exit status {result.status}'}"


def _quiet(_message: str) -> None:
    """A log that drops its messages."""


# --------------------------------------------------------------------------- names


def slugify(title: str, max_len: int = 40) -> str:
    """A lowercase ASCII slug of TITLE (`[a-z0-9]+(-[a-z0-9]+)*`), safe in a ref and a shell.

    Accents are folded (é → e), everything else that is not a letter or digit
    becomes one dash; an empty result is `task`.
    """
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = _NON_SLUG.sub("-", folded.lower()).strip("-")
    slug = slug[: max(max_len, 1)].rstrip("-")
    return slug or "task"


def branch_name(task_id: int, title: str) -> str:
    """The task branch, `orch/<id>-<slug>`."""
    return f"orch/{task_id}-{slugify(title)}"


# --------------------------------------------------------------------------- commits


def head_commit(path: Path, ref: str = "HEAD") -> str:
    """The full sha REF names in the repository or worktree at PATH."""
    result = _git(path, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if not result.ok:
        raise GitError(f"{ref} does not name a commit in {path}")
    return result.stdout.strip()


def count_commits(path: Path, base: str, ref: str = "HEAD") -> int:
    """How many commits REF has that BASE has not (`git rev-list --count BASE..REF`)."""
    return int(_git(path, "rev-list", "--count", f"{base}..{ref}").stdout.strip())


def log_oneline(path: Path, revisions: str) -> list[str]:
    """`git log --oneline REVISIONS`, one line per commit (newest first)."""
    out = _git(path, "log", "--oneline", "--no-decorate", revisions).stdout
    return [line for line in out.splitlines() if line.strip()]


def git_dirs(worktree_path: Path) -> tuple[Path, Path]:
    """(its private git directory, the repository's common one) of a working tree: a
    `git worktree` keeps the first in the main repository's `.git/worktrees/<name>`."""
    out = _git(worktree_path, "rev-parse", "--absolute-git-dir", "--path-format=absolute",
               "--git-common-dir").stdout.splitlines()
    return Path(out[0].strip()), Path(out[1].strip())


def commits_beyond_default(repo_path: Path, branch: str, default_branch: str) -> int:
    """How many commits the task BRANCH has that the default branch has not."""
    return count_commits(repo_path, f"refs/heads/{default_branch}", f"refs/heads/{branch}")


def _is_ancestor(path: Path, older: str, newer: str) -> bool:
    return _git(path, "merge-base", "--is-ancestor", older, newer, check=False).ok


# --------------------------------------------------------------------------- worktrees


@dataclass(frozen=True)
class _Worktree:
    path: str  # real path
    head: str | None
    branch: str | None  # refs/heads/<name>; None when detached or bare


def _worktrees(repo_path: Path) -> list[_Worktree]:
    """Parse `git worktree list --porcelain` (the main tree first)."""
    out = _git(repo_path, "worktree", "list", "--porcelain").stdout
    trees = []
    for block in out.strip().split("\n\n"):
        fields = dict(line.partition(" ")[::2] for line in block.splitlines())
        if "worktree" in fields:
            trees.append(_Worktree(os.path.realpath(fields["worktree"]),
                                   fields.get("HEAD"), fields.get("branch")))
    return trees


def _git_dir(worktree_path: Path) -> Path:
    """The private git directory of a working tree (`.git`, or `.git/worktrees/<name>`)."""
    return Path(_git(worktree_path, "rev-parse", "--absolute-git-dir").stdout.strip())


def _rebasing_branch(git_dir: Path) -> str | None:
    """The ref a rebase in progress in GIT_DIR is rewriting, or None."""
    for state in ("rebase-merge", "rebase-apply"):
        head_name = git_dir / state / "head-name"
        if head_name.is_file():
            return head_name.read_text(encoding="utf-8", errors="replace").strip()
        if (git_dir / state).is_dir():
            return "detached HEAD"
    return None


def _abort_stale_rebase(worktree_path: Path, branch: str, log: Log) -> None:
    """Abort a rebase of BRANCH left in the worktree by a crashed run; the branch is unchanged."""
    rebasing = _rebasing_branch(_git_dir(worktree_path))
    if rebasing == f"refs/heads/{branch}":
        log(f"aborting a rebase of {branch} left by an earlier run")
        _git(worktree_path, "rebase", "--abort")


def ensure_worktree(repo_path: Path, worktree_path: Path, branch: str, default_branch: str,
                    log: Log | None = None) -> str:
    """Make WORKTREE_PATH a worktree of REPO_PATH on BRANCH; return its head sha.

    Idempotent: an existing worktree on BRANCH is reused (a rebase a crash left in
    it is aborted), a deleted worktree directory is pruned and re-added for the
    existing branch, and a new branch starts at DEFAULT_BRANCH. Raises GitError
    when the path holds something else or the branch is checked out elsewhere.
    """
    say = log or _quiet
    fast = _ensure_worktree_fast(repo_path, Path(worktree_path), branch, default_branch, say)
    if fast is not None:
        return fast
    target = os.path.realpath(worktree_path)
    ref = f"refs/heads/{branch}"
    _git(repo_path, "worktree", "prune")
    for tree in _worktrees(repo_path):
        if tree.path == target:
            _abort_stale_rebase(Path(worktree_path), branch, say)
            current = _git(worktree_path, "symbolic-ref", "--quiet", "HEAD", check=False)
            if current.stdout.strip() != ref:
                raise GitError(f"worktree {worktree_path} is not on {branch} "
                               f"({current.stdout.strip() or 'detached HEAD'}); "
                               f"remove it with `git worktree remove` and retry")
            return head_commit(Path(worktree_path))
        if tree.branch == ref:
            raise GitError(f"branch {branch} is already checked out at {tree.path}; "
                           f"remove that worktree and retry")
    Path(worktree_path).parent.mkdir(parents=True, exist_ok=True)
    if branch_exists(repo_path, branch):
        say(f"adding worktree {worktree_path} for the existing branch {branch}")
        _git(repo_path, "worktree", "add", str(worktree_path), branch)
    else:
        say(f"adding worktree {worktree_path} on a new branch {branch} from {default_branch}")
        _git(repo_path, "worktree", "add", "-b", branch, str(worktree_path),
             f"refs/heads/{default_branch}")
    return head_commit(Path(worktree_path))


def _ensure_worktree_fast(repo_path: Path, worktree_path: Path, branch: str,
                          default_branch: str, say: Log) -> str | None:
    """The common cases in two git processes instead of five; None: take the full path.

    A new task: `worktree add -b` straight away (it fails, changing nothing, when
    the branch exists or stale metadata holds the path). A reused worktree: its
    `.git` file points into this repo's git directory and HEAD is on the branch.
    """
    if not worktree_path.exists():
        worktree_path.parent.mkdir(parents=True, exist_ok=True)
        added = _git(repo_path, "worktree", "add", "-b", branch, str(worktree_path),
                     f"refs/heads/{default_branch}", check=False)
        if not added.ok:
            return None
        say(f"added worktree {worktree_path} on a new branch {branch} from {default_branch}")
        return head_commit(worktree_path)
    marker = worktree_path / ".git"
    if not marker.is_file():
        return None
    text = marker.read_text(encoding="utf-8", errors="replace").strip()
    common = os.path.realpath(Path(repo_path) / ".git")
    gitdir = os.path.realpath(text.removeprefix("gitdir:").strip())
    if not text.startswith("gitdir:") or not gitdir.startswith(common + os.sep):
        return None
    if _rebasing_branch(Path(gitdir)) is not None:
        return None  # the full path aborts what a crash left
    current = _git(worktree_path, "symbolic-ref", "--quiet", "HEAD", check=False)
    if current.stdout.strip() != f"refs/heads/{branch}":
        return None
    return head_commit(worktree_path)


def remove_worktree(repo_path: Path, worktree_path: Path) -> None:
    """Remove a task worktree (uncommitted files in it included) and prune; fine if missing.

    Only a path git lists as a worktree of REPO_PATH is ever deleted; a locked
    worktree raises GitError.
    """
    target = os.path.realpath(worktree_path)
    listed = any(tree.path == target for tree in _worktrees(repo_path))
    if listed and Path(worktree_path).exists():
        _git(repo_path, "worktree", "remove", "--force", str(worktree_path))
    _git(repo_path, "worktree", "prune")


def delete_branch(repo_path: Path, branch: str, force: bool = False, *,
                  default_branch: str | None = None) -> bool:
    """Delete BRANCH; True when deleted, False when absent or refused.

    Without FORCE it refuses a branch with commits not on DEFAULT_BRANCH (or, when
    that is not given, on the HEAD of REPO_PATH). A branch checked out in a
    worktree raises GitError (remove the worktree first).
    """
    if not branch_exists(repo_path, branch):
        return False
    base = f"refs/heads/{default_branch}" if default_branch else "HEAD"
    if not force and count_commits(repo_path, base, f"refs/heads/{branch}") > 0:
        return False
    _git(repo_path, "branch", "-D", branch)
    return True


def current_branch(repo_path: Path) -> str | None:
    """The branch HEAD names in REPO_PATH (None when detached or not a repository)."""
    try:
        result = _git(repo_path, "symbolic-ref", "--short", "-q", "HEAD", check=False)
    except GitError:
        return None
    return (result.stdout.strip() or None) if result.ok else None


def export_tree(repo_path: Path, ref: str, dest: Path, timeout: float = 120.0) -> None:
    """Write the files REF tracks into DEST (`git archive`): what a new worktree would hold,
    without touching the repository (no worktree registered, no index written)."""
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory(prefix="orch-export-") as scratch:
        archive = Path(scratch) / "tree.tar"
        _git(repo_path, "archive", "--format=tar", f"--output={archive}", ref,
             timeout=timeout)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")


def commit_new_repo(path: Path, files: dict[str, str], message: str,
                    identity: tuple[tuple[str, str], ...]) -> str:
    """Make PATH a repository with FILES committed on `main` by IDENTITY (its own config,
    no hooks, no signing, so any machine can commit); returns the commit."""
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    _git(path, "init", "-q")
    _git(path, "symbolic-ref", "HEAD", "refs/heads/main")
    for key, value in (*identity, ("commit.gpgsign", "false"), ("core.hooksPath", os.devnull)):
        _git(path, "config", key, value)
    _git(path, "add", "--all")
    _git(path, "commit", "-q", "-m", message)
    return head_commit(path)


from orch.gitops.merge import (  # noqa: E402 (the merge builds on the plumbing above)
    FenceLost,
    MergeFence,
    merge_task,
)

__all__ = ["FenceLost", "GitError", "GitResult", "Log", "MergeFence", "MergeOutcome",
           "branch_exists", "branch_name", "commit_new_repo", "commits_beyond_default",
           "count_commits", "current_branch", "delete_branch", "ensure_worktree",
           "export_tree", "head_commit", "merge_task",
           "remove_worktree", "slugify"]
