"""orch.gitops against real git repositories in tmp_path: names, worktrees, branches."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.git import commit_file, git, make_repo_with_identity

from orch import gitops
from orch.availability import is_git_repo
from orch.gitops import (
    GitError,
    branch_name,
    commits_beyond_default,
    count_commits,
    delete_branch,
    ensure_worktree,
    head_commit,
    remove_worktree,
    slugify,
)

SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

pytestmark = pytest.mark.usefixtures("isolated_git")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo_with_identity(tmp_path / "repo")


def worktree_paths(repo: Path) -> list[str]:
    out = git(repo, "worktree", "list", "--porcelain")
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(("title", "expected"), [
    ("Add login page", "add-login-page"),
    ("  Fix: crash on 'empty' input!  ", "fix-crash-on-empty-input"),
    ("Café résumé naïve", "cafe-resume-naive"),
    ("日本語のタイトル", "task"),
    ("$(rm -rf ~) `id` ; echo", "rm-rf-id-echo"),
    ("../../etc/passwd", "etc-passwd"),
    ("..", "task"),
    ("branch.lock", "branch-lock"),
    ("--force", "force"),
    ("-", "task"),
    ("", "task"),
    ("a\u200bb\tc\nd", "ab-c-d"),
    ("ＦＵＬＬ　ｗｉｄｔｈ", "full-width"),
    ("@{-1}", "1"),
    ("x" * 100, "x" * 40),
])
def test_slugify_examples(title: str, expected: str) -> None:
    assert slugify(title) == expected


def test_slugify_truncation_never_ends_with_a_dash() -> None:
    assert slugify("abc def", max_len=4) == "abc"


@settings(max_examples=150, deadline=None)
@given(st.text(), st.integers(min_value=1, max_value=60))
def test_slugify_is_always_a_safe_ref_component(title: str, max_len: int) -> None:
    slug = slugify(title, max_len)
    assert SLUG.match(slug)
    assert len(slug) <= max(max_len, len("task"))
    check = subprocess.run(["git", "check-ref-format", "--branch", f"orch/1-{slug}"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_branch_name() -> None:
    assert branch_name(7, "Fix the parser") == "orch/7-fix-the-parser"


# --------------------------------------------------------------------------- is_git_repo


def test_is_git_repo(repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    tree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", str(tree))
    plain = tmp_path / "plain"
    plain.mkdir()
    (tmp_path / "file").write_text("x")
    assert is_git_repo(repo)
    assert is_git_repo(tree)
    assert is_git_repo(bare)
    assert not is_git_repo(plain)
    assert not is_git_repo(tmp_path / "missing")
    assert not is_git_repo(tmp_path / "file")


# --------------------------------------------------------------------------- commits


def test_head_and_counts(repo: Path) -> None:
    base = head_commit(repo)
    git(repo, "checkout", "-q", "-b", "feature")
    commit_file(repo, "a.txt", "a\n")
    tip = commit_file(repo, "b.txt", "b\n")
    assert head_commit(repo) == tip
    assert head_commit(repo, "main") == base
    assert count_commits(repo, "main") == 2
    assert count_commits(repo, "main", "feature") == 2
    assert count_commits(repo, "feature", "main") == 0
    assert commits_beyond_default(repo, "feature", "main") == 2
    with pytest.raises(GitError):
        head_commit(repo, "no-such-ref")


def test_git_in_a_missing_directory_raises_instead_of_running_elsewhere(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not a directory"):
        head_commit(tmp_path / "missing")


def test_git_missing_from_path_raises(repo: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(GitError, match="cannot run git"):
        head_commit(repo)


def _processes_running(marker: str) -> list[int]:
    """Pids whose command line contains MARKER (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_git_past_its_timeout_is_killed_with_its_descendants(repo: Path) -> None:
    # A git alias starting with ! runs a program as git's child: a stand-in for push's ssh.
    marker = f"{time.monotonic_ns() % 10**6 + 1000}.25"
    started = time.monotonic()
    result = gitops._git(repo, "-c", f"alias.hang=!sleep {marker}; :", "hang",
                         check=False, timeout=0.5)
    assert time.monotonic() - started < 10
    assert not result.ok and "did not complete in 0.5 s" in result.stderr
    deadline = time.monotonic() + 5
    while _processes_running(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_running(f"sleep {marker}") == []


# --------------------------------------------------------------------------- worktrees


def test_ensure_worktree_creates_a_branch_from_the_default(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "home" / "worktrees" / "repo" / "1"
    head = ensure_worktree(repo, tree, "orch/1-x", "main")
    assert head == head_commit(repo, "main")
    assert git(tree, "symbolic-ref", "HEAD") == "refs/heads/orch/1-x"
    assert (tree / "README.md").read_text() == "hello\n"


def test_ensure_worktree_reuses_an_existing_worktree(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "wt"
    ensure_worktree(repo, tree, "orch/1-x", "main")
    tip = commit_file(tree, "work.txt", "work\n")
    (tree / "scratch.txt").write_text("uncommitted\n")
    assert ensure_worktree(repo, tree, "orch/1-x", "main") == tip
    assert ensure_worktree(repo, tree, "orch/1-x", "main") == tip
    assert len(worktree_paths(repo)) == 2
    assert (tree / "scratch.txt").read_text() == "uncommitted\n"


def test_ensure_worktree_recovers_after_the_directory_is_deleted(repo: Path,
                                                                 tmp_path: Path) -> None:
    tree = tmp_path / "wt"
    ensure_worktree(repo, tree, "orch/1-x", "main")
    tip = commit_file(tree, "work.txt", "work\n")
    shutil.rmtree(tree)
    assert ensure_worktree(repo, tree, "orch/1-x", "main") == tip
    assert (tree / "work.txt").read_text() == "work\n"
    assert len(worktree_paths(repo)) == 2


def test_ensure_worktree_aborts_a_rebase_left_by_a_crash(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "wt"
    ensure_worktree(repo, tree, "orch/1-x", "main")
    tip = commit_file(tree, "README.md", "branch\n")
    commit_file(repo, "README.md", "main\n")
    failed = subprocess.run(["git", "rebase", "main"], cwd=tree, capture_output=True)
    assert failed.returncode != 0  # a conflicted rebase, as a killed merge would leave it
    assert ensure_worktree(repo, tree, "orch/1-x", "main") == tip
    assert git(tree, "status", "--porcelain") == ""


def test_ensure_worktree_refuses_a_path_on_another_branch(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "wt"
    ensure_worktree(repo, tree, "orch/1-x", "main")
    with pytest.raises(GitError, match="not on orch/2-y"):
        ensure_worktree(repo, tree, "orch/2-y", "main")


def test_ensure_worktree_refuses_a_branch_checked_out_elsewhere(repo: Path,
                                                                tmp_path: Path) -> None:
    ensure_worktree(repo, tmp_path / "wt1", "orch/1-x", "main")
    with pytest.raises(GitError, match="already checked out"):
        ensure_worktree(repo, tmp_path / "wt2", "orch/1-x", "main")
    assert not (tmp_path / "wt2").exists()


def test_remove_worktree(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "wt"
    ensure_worktree(repo, tree, "orch/1-x", "main")
    (tree / "dirty.txt").write_text("x")
    remove_worktree(repo, tree)
    assert not tree.exists()
    assert len(worktree_paths(repo)) == 1
    remove_worktree(repo, tree)  # already gone: fine
    assert git(repo, "branch", "--list", "orch/1-x")  # the branch stays


def test_remove_worktree_never_deletes_an_unregistered_directory(repo: Path,
                                                                 tmp_path: Path) -> None:
    stranger = tmp_path / "not-a-worktree"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine")
    remove_worktree(repo, stranger)
    assert (stranger / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------- branches


def test_delete_branch_refuses_an_unmerged_branch(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "orch/1-x")
    commit_file(repo, "a.txt", "a\n")
    git(repo, "checkout", "-q", "main")
    assert delete_branch(repo, "orch/1-x") is False
    assert delete_branch(repo, "orch/1-x", default_branch="main") is False
    assert git(repo, "branch", "--list", "orch/1-x")
    assert delete_branch(repo, "orch/1-x", force=True) is True
    assert not git(repo, "branch", "--list", "orch/1-x")
    assert delete_branch(repo, "orch/1-x", force=True) is False  # already gone


def test_delete_branch_judges_against_the_default_branch(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "orch/1-x")
    commit_file(repo, "a.txt", "a\n")
    git(repo, "checkout", "-q", "-b", "other")  # HEAD contains the branch, main does not
    assert delete_branch(repo, "orch/1-x", default_branch="main") is False
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--ff-only", "orch/1-x")
    assert delete_branch(repo, "orch/1-x", default_branch="main") is True


def test_delete_branch_checked_out_in_a_worktree_raises(repo: Path, tmp_path: Path) -> None:
    ensure_worktree(repo, tmp_path / "wt", "orch/1-x", "main")
    with pytest.raises(GitError):
        delete_branch(repo, "orch/1-x")

