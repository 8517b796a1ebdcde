"""The merge: rebase the task branch onto the default branch, fast-forward, push (SPEC 8).

A conflict aborts the rebase and reports the conflicting files; a checked-out
default branch with local changes (or an untracked file the fast-forward
would overwrite) blocks; a default branch that moved meanwhile is rebased
onto once more, then deferred.

A merge is a run like any other, so it is fenced (`MergeFence`): the worktree
is prepared under the repo lock, and the default branch is moved, and pushed,
only inside `fence.owned(step)`, which holds the repo lock and checks that the
run still owns its job; a run that lost it (`orch cancel`, the reaper) gets
`FenceLost` there and changes nothing more.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from orch.gitops import (
    PUSH_TIMEOUT_S,
    GitError,
    GitResult,
    Log,
    MergeOutcome,
    _config,
    _git,
    _git_dir,
    _is_ancestor,
    _quiet,
    _rebasing_branch,
    _split_z,
    _worktrees,
    ensure_worktree,
    head_commit,
    remote_step,
)


class FenceLost(Exception):
    """The run no longer owns its job (cancelled or reaped): the merge must stop here."""


class MergeFence(Protocol):
    """What the merge asks before it touches anything shared (see the module docstring)."""

    def worktree(self) -> AbstractContextManager[object]:
        """Serialize worktree changes of the repo (the repo lock)."""
        ...

    def owned(self, step: str) -> AbstractContextManager[object]:
        """The repo lock, with the run's ownership of its job checked inside it; raises
        FenceLost (naming `step`) when the run lost the job."""
        ...


class Unfenced:
    """No fence: a merge run by hand (tests, a person at the terminal)."""

    def worktree(self) -> AbstractContextManager[object]:
        return nullcontext()

    def owned(self, step: str) -> AbstractContextManager[object]:
        return nullcontext()


@dataclass(frozen=True)
class _Rebase:
    head: str | None  # the rebased head, when the rebase succeeded
    conflicts: tuple[str, ...]
    error: str


@dataclass(frozen=True)
class _Step:
    status: Literal["done", "moved", "blocked"]
    detail: str
    commit: str | None = None


def _tracked_changes(worktree_path: Path) -> tuple[str, ...]:
    """Modified or staged tracked files of a working tree (untracked files ignored)."""
    out = _git(worktree_path, "status", "--porcelain=v1", "-z", "--untracked-files=no").stdout
    entries = iter(_split_z(out))
    paths = []
    for entry in entries:
        paths.append(entry[3:])
        if entry[:1] in ("R", "C"):
            next(entries, None)  # the source path of a rename or copy
    return tuple(paths)


def _rebase(worktree_path: Path, onto: str, log: Log) -> _Rebase:
    """Rebase the worktree's branch onto the commit ONTO; a conflict is aborted and reported."""
    log(f"rebasing onto {onto[:12]}")
    result = _git(worktree_path, "rebase", onto, check=False)
    if result.ok:
        return _Rebase(head_commit(worktree_path), (), "")
    conflicts = _split_z(_git(worktree_path, "diff", "--name-only", "-z",
                              "--diff-filter=U").stdout)
    if _rebasing_branch(_git_dir(worktree_path)) is not None:
        _git(worktree_path, "rebase", "--abort")
        log("rebase aborted; the branch is unchanged")
    if conflicts:
        log(f"conflicts: {', '.join(conflicts)}")
        return _Rebase(None, conflicts, "")
    detail = result.stderr.strip() or result.stdout.strip()
    return _Rebase(None, (), f"git rebase failed: {detail}")


def _checkout_of(repo_path: Path, branch: str) -> Path | None:
    """The working tree where BRANCH is checked out, if any."""
    for tree in _worktrees(repo_path):
        if tree.branch == f"refs/heads/{branch}":
            return Path(tree.path)
    return None


def _busy_elsewhere(repo_path: Path, branch: str) -> str | None:
    """A reason when BRANCH is being rebased or bisected in some working tree."""
    common = Path(_git(repo_path, "rev-parse", "--git-common-dir").stdout.strip())
    common = common if common.is_absolute() else Path(repo_path) / common
    linked = common / "worktrees"
    git_dirs = [common, *(sorted(linked.iterdir()) if linked.is_dir() else [])]
    for git_dir in git_dirs:
        if _rebasing_branch(git_dir) == f"refs/heads/{branch}":
            return f"{branch} is being rebased in another working tree"
        bisect = git_dir / "BISECT_START"
        if bisect.is_file() and bisect.read_text(errors="replace").strip() == branch:
            return f"{branch} is being bisected in another working tree"
    return None


def _parents(path: str) -> Iterable[str]:
    """The leading directories of a relative path: a/b/c → a, a/b."""
    parts = path.split("/")
    return ("/".join(parts[:index]) for index in range(1, len(parts)))


def _overwritten_paths(checkout: Path, old: str, new: str) -> list[str]:
    """Paths in CHECKOUT that are not tracked and that a fast-forward OLD → NEW would replace.

    Stricter than git: ignored files count too (git overwrites those silently).
    """
    diff = ("diff", "--name-only", "-z", "--no-renames")
    added = _split_z(_git(checkout, *diff, "--diff-filter=A", old, new).stdout)
    deleted = set(_split_z(_git(checkout, *diff, "--diff-filter=D", old, new).stdout))
    clashes: list[str] = []
    directories: list[str] = []
    for path in added:
        for parent in _parents(path):
            spot = checkout / parent
            if os.path.lexists(spot) and (spot.is_symlink() or not spot.is_dir()) \
                    and parent not in deleted:
                clashes.append(parent)
        spot = checkout / path
        if spot.is_dir() and not spot.is_symlink():
            directories.append(path)
        elif os.path.lexists(spot):
            clashes.append(path)
    if directories:
        others = _git(checkout, "ls-files", "-z", "--others", "--", *directories).stdout
        clashes.extend(_split_z(others))
    return sorted(set(clashes))


def _guard_checkout(checkout: Path, branch: str, old: str, new: str) -> str | None:
    """Why the checked-out default branch must not be fast-forwarded, or None when it is safe."""
    dirty = _tracked_changes(checkout)
    if dirty:
        return (f"{branch} is checked out at {checkout} with modified or staged tracked files "
                f"({', '.join(dirty[:10])}); commit or stash them, then `orch retry`")
    clashes = _overwritten_paths(checkout, old, new)
    if clashes:
        return (f"{branch} is checked out at {checkout} and the merge would overwrite untracked "
                f"files ({', '.join(clashes[:10])}); move them away, then `orch retry`")
    return None


def _moved_or_blocked(repo_path: Path, branch: str, old: str, failure: GitResult) -> _Step:
    """After a failed update: `moved` when the branch is no longer at OLD, else `blocked`."""
    if head_commit(repo_path, f"refs/heads/{branch}") != old:
        return _Step("moved", f"{branch} moved during the merge")
    detail = failure.stderr.strip() or failure.stdout.strip()
    return _Step("blocked", f"could not fast-forward {branch}: {detail}")


def _fast_forward(repo_path: Path, branch: str, old: str, new: str, log: Log,
                  fence: MergeFence) -> _Step:
    """Move BRANCH from OLD to NEW, inside the fence (the repo lock, ownership checked)."""
    with fence.owned(f"moving {branch}"):
        return _fast_forward_owned(repo_path, branch, old, new, log)


def _fast_forward_owned(repo_path: Path, branch: str, old: str, new: str, log: Log) -> _Step:
    """Move BRANCH from OLD to NEW: in its checkout if it has one, else compare-and-swap the ref."""
    current = head_commit(repo_path, f"refs/heads/{branch}")
    if _is_ancestor(repo_path, new, current):
        log(f"{branch} already contains {new[:12]}")
        return _Step("done", "already merged", current)
    if current != old:
        return _Step("moved", f"{branch} moved during the merge")
    busy = _busy_elsewhere(repo_path, branch)
    if busy:
        return _Step("blocked", busy)
    checkout = _checkout_of(repo_path, branch)
    if checkout is None:
        log(f"updating refs/heads/{branch} {old[:12]} → {new[:12]}")
        result = _git(repo_path, "update-ref", "-m", f"orch: fast-forward to {new[:12]}",
                      f"refs/heads/{branch}", new, old, check=False)
    else:
        refusal = _guard_checkout(checkout, branch, old, new)
        if refusal:
            return _Step("blocked", refusal)
        log(f"fast-forwarding {branch} in {checkout} to {new[:12]}")
        result = _git(checkout, "merge", "--ff-only", new, check=False)
    if result.ok:
        return _Step("done", "fast-forwarded", new)
    return _moved_or_blocked(repo_path, branch, old, result)


def _push_target(repo_path: Path, branch: str) -> tuple[str, str]:
    """The remote and the remote ref BRANCH is pushed to: its upstream, else origin/<branch>."""
    remote = _config(repo_path, f"branch.{branch}.remote")
    merge_ref = _config(repo_path, f"branch.{branch}.merge")
    if remote and remote != "." and merge_ref:
        return remote, merge_ref
    return "origin", f"refs/heads/{branch}"


def _push(repo_path: Path, branch: str, log: Log) -> tuple[bool, str]:
    """Push BRANCH; (pushed, what happened)."""
    remote, remote_ref = _push_target(repo_path, branch)
    log(f"pushing {branch} to {remote} ({remote_ref})")
    return remote_step(repo_path, ("push", remote, f"refs/heads/{branch}:{remote_ref}"),
                       f"pushed to {remote}", f"push to {remote} failed")


def _blocked(reason: str, *, defer: bool = False) -> MergeOutcome:
    return MergeOutcome("blocked", None, (), None, defer, reason)


def _merged(repo_path: Path, branch: str, default_branch: str, commit: str, push: bool,
            log: Log, fence: MergeFence) -> MergeOutcome:
    reason = f"{branch} is on {default_branch} at {commit[:12]}"
    pushed: bool | None = None
    if push:
        with fence.owned(f"pushing {default_branch}"):
            pushed, pushing = _push(repo_path, default_branch, log)
        reason = f"{reason}; {pushing}"
    log(reason)
    return MergeOutcome("merged", commit, (), pushed, False, reason)


def _sync_default(repo_path: Path, default_branch: str, log: Log,
                  fence: MergeFence) -> str | None:
    """Fetch the remote's DEFAULT_BRANCH and fast-forward the local one to it (a repo that
    several hosts merge into, SPEC section 11: no host's clone drifts). Returns why the
    merge cannot go on, or None."""
    remote, remote_ref = _push_target(repo_path, default_branch)
    tracking = f"refs/orch/remote/{default_branch}"
    log(f"fetching {default_branch} from {remote} ({remote_ref})")
    result = _git(repo_path, "fetch", "--no-tags", remote, f"+{remote_ref}:{tracking}",
                  check=False, timeout=PUSH_TIMEOUT_S)
    if not result.ok:
        detail = result.stderr.strip() or f"exit status {result.status}"
        return f"fetch of {default_branch} from {remote} failed: {detail}"
    fetched = head_commit(repo_path, tracking)
    local = head_commit(repo_path, f"refs/heads/{default_branch}")
    if _is_ancestor(repo_path, fetched, local):
        return None  # nothing new there (or local merges not pushed yet: the push sends them)
    if not _is_ancestor(repo_path, local, fetched):
        return (f"{default_branch} here and on {remote} have diverged; reconcile them by hand "
                "(the remote's is the shared one), then `orch retry`")
    step = _fast_forward(repo_path, default_branch, local, fetched, log, fence)
    return step.detail if step.status == "blocked" else None


def _merge(repo_path: Path, worktree_path: Path, branch: str, default_branch: str,
           push: bool, log: Log, fence: MergeFence, fetch_first: bool = False
           ) -> MergeOutcome:
    with fence.worktree():  # it prunes and may re-add the worktree
        ensure_worktree(repo_path, worktree_path, branch, default_branch, log)
    dirty = _tracked_changes(worktree_path)
    if dirty:
        return _blocked(f"the task worktree {worktree_path} has uncommitted changes "
                        f"({', '.join(dirty[:10])}); commit or discard them, then `orch retry`")
    if fetch_first:
        refusal = _sync_default(repo_path, default_branch, log, fence)
        if refusal:
            return _blocked(refusal)
    for _attempt in range(2):
        old = head_commit(repo_path, f"refs/heads/{default_branch}")
        rebase = _rebase(worktree_path, old, log)
        if rebase.conflicts:
            reason = (f"rebasing {branch} onto {default_branch} conflicts in "
                      f"{len(rebase.conflicts)} file(s); the rebase was aborted")
            return MergeOutcome("conflict", None, rebase.conflicts, None, False, reason)
        if rebase.head is None:
            return _blocked(rebase.error)
        step = _fast_forward(repo_path, default_branch, old, rebase.head, log, fence)
        if step.status == "blocked":
            return _blocked(step.detail)
        if step.status == "done" and step.commit:
            return _merged(repo_path, branch, default_branch, step.commit, push, log, fence)
        log(f"{default_branch} moved since the rebase")
    return _blocked(f"{default_branch} moved twice while merging {branch}; try again later",
                    defer=True)


def merge_task(repo_path: Path, worktree_path: Path, branch: str, default_branch: str, *,
               push: bool, log: Log | None = None, fence: MergeFence | None = None,
               fetch_first: bool = False) -> MergeOutcome:
    """Rebase the task BRANCH onto DEFAULT_BRANCH and fast-forward it there (SPEC section 8).

    `conflict`: the rebase conflicted and was aborted (the branch is unchanged).
    `blocked`: refused to touch a checked-out default branch with changes, or git
    failed; with `defer` when the default branch moved twice during the merge.
    `merged`: the default branch now points at `commit`; `pushed` says whether
    the push (only when PUSH) went through. LOG receives a line per step.
    FENCE (default: none) guards the worktree and the moves; its FenceLost propagates.
    FETCH_FIRST (a repo several hosts merge into): the remote's default branch is
    fetched and the local one fast-forwarded to it first (inside the fence), so the
    task branch is rebased onto it.
    """
    say = log or _quiet
    try:
        return _merge(Path(repo_path), Path(worktree_path), branch, default_branch, push, say,
                      fence or Unfenced(), fetch_first)
    except GitError as exc:
        say(f"git failed: {exc}")
        return _blocked(str(exc))


