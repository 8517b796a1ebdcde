"""The merge (orch.gitops.merge_task and orch.runners.merge) against real git repositories.

Each test builds a repository with `main`, a task worktree on `orch/1-task` and
then tries to break the merge: a moving default branch, conflicts, a user's
uncommitted work in the checked-out default branch, remotes that fail.
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from support.git import commit_file, git, make_repo_with_identity

from orch.artifacts import MERGE_REPORT_FILE, read_document
from orch.gitops import MergeOutcome, ensure_worktree, merge_task
from orch.runners.merge import run_merge

BRANCH = "orch/1-task"

pytestmark = pytest.mark.usefixtures("isolated_git")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo_with_identity(tmp_path / "repo")


@pytest.fixture
def tree(repo: Path, tmp_path: Path) -> Path:
    """The task worktree, with one commit adding feature.txt."""
    path = tmp_path / "home" / "worktrees" / "repo" / "1"
    ensure_worktree(repo, path, BRANCH, "main")
    commit_file(path, "feature.txt", "feature\n", "add feature")
    return path


def merge(repo: Path, tree: Path, push: bool = False) -> MergeOutcome:
    return merge_task(repo, tree, BRANCH, "main", push=push)


def ref(repo: Path, name: str) -> str:
    return git(repo, "rev-parse", name)


def install_hook(repo: Path, name: str, script: str) -> None:
    hook = repo / ".git" / "hooks" / name
    hook.write_text("#!/bin/sh\n" + script)
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)


def assert_no_rebase_in(tree: Path) -> None:
    for state in ("rebase-merge", "rebase-apply"):
        assert not Path(git(tree, "rev-parse", "--path-format=absolute",
                            "--git-path", state)).exists()


# --------------------------------------------------------------------------- merged


def test_fast_forward_when_the_default_branch_is_not_checked_out(repo: Path, tree: Path) -> None:
    git(repo, "checkout", "-q", "-b", "other")
    outcome = merge(repo, tree)
    assert outcome.result == "merged"
    assert outcome.commit == ref(repo, "main") == ref(tree, "HEAD")
    assert outcome.pushed is None and outcome.defer is False
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/other"
    assert not (repo / "feature.txt").exists()
    assert git(repo, "reflog", "-1", "--format=%gs", "main").startswith("orch: fast-forward")


def test_fast_forward_in_a_clean_checked_out_default_branch(repo: Path, tree: Path) -> None:
    outcome = merge(repo, tree)
    assert outcome.result == "merged"
    assert outcome.commit == ref(repo, "main")
    assert (repo / "feature.txt").read_text() == "feature\n"
    assert git(repo, "status", "--porcelain") == ""


def test_fast_forward_in_a_linked_worktree_holding_the_default_branch(repo: Path, tree: Path,
                                                                      tmp_path: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    holder = tmp_path / "main-holder"
    git(repo, "worktree", "add", "-q", str(holder), "main")
    outcome = merge(repo, tree)
    assert outcome.result == "merged"
    assert (holder / "feature.txt").read_text() == "feature\n"
    assert git(holder, "status", "--porcelain") == ""


def test_a_moved_default_branch_is_rebased_onto_with_linear_history(repo: Path,
                                                                    tree: Path) -> None:
    upstream = commit_file(repo, "other.txt", "other\n", "meanwhile on main")
    outcome = merge(repo, tree)
    assert outcome.result == "merged"
    assert outcome.commit == ref(repo, "main")
    assert ref(repo, "main~1") == upstream
    assert git(repo, "rev-list", "--merges", "main") == ""
    assert (repo / "feature.txt").exists() and (repo / "other.txt").exists()
    assert ref(repo, BRANCH) == outcome.commit


def test_merging_again_is_idempotent(repo: Path, tree: Path) -> None:
    first = merge(repo, tree)
    second = merge(repo, tree)
    assert first.result == second.result == "merged"
    assert second.commit == first.commit == ref(repo, "main")


def test_a_deleted_task_worktree_is_recreated_for_the_merge(repo: Path, tree: Path) -> None:
    tip = ref(tree, "HEAD")
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    outcome = merge(repo, tree)
    assert outcome.result == "merged"
    assert outcome.commit == tip == ref(repo, "main")


def test_hooks_run_with_the_repo_identity_and_no_terminal_prompt(repo: Path, tree: Path,
                                                                 tmp_path: Path) -> None:
    marker = tmp_path / "hook.txt"
    install_hook(repo, "post-merge", f'echo "prompt=$GIT_TERMINAL_PROMPT" >> "{marker}"\n')
    commit_file(repo, "other.txt", "other\n")
    outcome = merge(repo, tree)
    assert outcome.result == "merged"
    assert marker.read_text() == "prompt=0\n"
    assert git(repo, "log", "-1", "--format=%cn <%ce>", "main") == \
        "Test User <test@example.com>"


# --------------------------------------------------------------------------- moving target

MOVE_MAIN = """
if [ -e "{stop}" ]; then exit 0; fi
tree=$(git rev-parse 'refs/heads/main^{{tree}}')
new=$(git commit-tree -p refs/heads/main -m "pushed by someone else" "$tree")
git update-ref refs/heads/main "$new"
{after}
"""


def test_default_branch_moving_once_is_rebased_again(repo: Path, tree: Path,
                                                     tmp_path: Path) -> None:
    stop = tmp_path / "moved-once"
    install_hook(repo, "post-rewrite", MOVE_MAIN.format(stop=stop, after=f'touch "{stop}"'))
    git(repo, "checkout", "-q", "-b", "other")
    commit_file(repo, "x.txt", "x\n")
    git(repo, "branch", "-f", "main", "HEAD")  # main moves ahead of the task branch
    outcome = merge(repo, tree)
    assert outcome.result == "merged"
    assert stop.exists()
    assert git(repo, "log", "-1", "--format=%s", "main~1") == "pushed by someone else"
    assert git(repo, "rev-list", "--merges", "main") == ""


def test_default_branch_moving_twice_defers(repo: Path, tree: Path, tmp_path: Path) -> None:
    install_hook(repo, "post-rewrite", MOVE_MAIN.format(stop=tmp_path / "never", after=""))
    git(repo, "checkout", "-q", "-b", "other")
    commit_file(repo, "x.txt", "x\n")
    git(repo, "branch", "-f", "main", "HEAD")
    outcome = merge(repo, tree)
    assert outcome.result == "blocked"
    assert outcome.defer is True
    assert outcome.commit is None
    assert "moved twice" in outcome.reason
    assert git(repo, "log", "-1", "--format=%s", "main") == "pushed by someone else"


# --------------------------------------------------------------------------- conflict


def test_conflict_is_aborted_and_names_the_files(repo: Path, tree: Path) -> None:
    commit_file(tree, "README.md", "branch version\n")
    branch_tip = ref(tree, "HEAD")
    main_tip = commit_file(repo, "README.md", "main version\n")
    outcome = merge(repo, tree)
    assert outcome.result == "conflict"
    assert outcome.conflicts == ("README.md",)
    assert outcome.commit is None and outcome.defer is False
    assert ref(tree, "HEAD") == branch_tip
    assert git(tree, "symbolic-ref", "HEAD") == f"refs/heads/{BRANCH}"
    assert git(tree, "status", "--porcelain") == ""
    assert_no_rebase_in(tree)
    assert ref(repo, "main") == main_tip
    assert (repo / "README.md").read_text() == "main version\n"


# --------------------------------------------------------------------------- blocked


def test_modified_tracked_file_in_the_checked_out_default_blocks(repo: Path,
                                                                 tree: Path) -> None:
    before = ref(repo, "main")
    precious = b"my unsaved work \x00\xff\r\n"
    (repo / "README.md").write_bytes(precious)
    outcome = merge(repo, tree)
    assert outcome.result == "blocked" and outcome.defer is False
    assert "README.md" in outcome.reason
    assert (repo / "README.md").read_bytes() == precious
    assert ref(repo, "main") == before
    assert not (repo / "feature.txt").exists()


def test_staged_file_in_the_checked_out_default_blocks(repo: Path, tree: Path) -> None:
    before = ref(repo, "main")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    outcome = merge(repo, tree)
    assert outcome.result == "blocked"
    assert ref(repo, "main") == before
    assert git(repo, "diff", "--cached", "--name-only") == "staged.txt"
    assert (repo / "staged.txt").read_text() == "staged\n"


def test_untracked_file_the_merge_would_overwrite_blocks(repo: Path, tree: Path) -> None:
    before = ref(repo, "main")
    (repo / "feature.txt").write_text("the user's own feature.txt\n")
    outcome = merge(repo, tree)
    assert outcome.result == "blocked"
    assert "feature.txt" in outcome.reason
    assert (repo / "feature.txt").read_text() == "the user's own feature.txt\n"
    assert ref(repo, "main") == before


def test_ignored_file_the_merge_would_overwrite_blocks(repo: Path, tree: Path) -> None:
    commit_file(repo, ".gitignore", "*.log\n")
    commit_file(tree, "build.log", "from the branch\n")
    (repo / "build.log").write_text("ignored but precious\n")
    outcome = merge(repo, tree)  # plain `git merge --ff-only` would overwrite it silently
    assert outcome.result == "blocked"
    assert "untracked files (build.log)" in outcome.reason
    assert (repo / "build.log").read_text() == "ignored but precious\n"


def test_untracked_file_where_the_merge_needs_a_directory_blocks(repo: Path,
                                                                  tree: Path) -> None:
    commit_file(tree, "docs/guide.md", "guide\n")
    (repo / "docs").write_text("a file named docs\n")
    outcome = merge(repo, tree)
    assert outcome.result == "blocked"
    assert "untracked files (docs)" in outcome.reason
    assert (repo / "docs").read_text() == "a file named docs\n"


def test_untracked_files_elsewhere_do_not_block(repo: Path, tree: Path) -> None:
    commit_file(tree, "docs/guide.md", "guide\n")
    (repo / "notes.txt").write_text("mine\n")
    (repo / "docs").mkdir()
    (repo / "docs" / "draft.md").write_text("draft\n")
    outcome = merge(repo, tree)
    assert outcome.result == "merged"
    assert (repo / "notes.txt").read_text() == "mine\n"
    assert (repo / "docs" / "draft.md").read_text() == "draft\n"
    assert (repo / "docs" / "guide.md").read_text() == "guide\n"


def test_uncommitted_changes_in_the_task_worktree_block(repo: Path, tree: Path) -> None:
    (tree / "feature.txt").write_text("not committed\n")
    before = ref(repo, "main")
    outcome = merge(repo, tree)
    assert outcome.result == "blocked"
    assert "uncommitted" in outcome.reason
    assert (tree / "feature.txt").read_text() == "not committed\n"
    assert ref(repo, "main") == before


def test_default_branch_being_rebased_elsewhere_blocks(repo: Path, tree: Path) -> None:
    git(repo, "branch", "side")
    commit_file(repo, "other.txt", "main\n")
    git(repo, "checkout", "-q", "side")
    commit_file(repo, "other.txt", "side\n")
    git(repo, "checkout", "-q", "main")
    stuck = subprocess.run(["git", "rebase", "side"], cwd=repo, capture_output=True)
    assert stuck.returncode != 0
    before = ref(repo, "main")
    outcome = merge(repo, tree)
    assert outcome.result == "blocked"
    assert "being rebased" in outcome.reason
    assert ref(repo, "main") == before
    git(repo, "rebase", "--abort")


# --------------------------------------------------------------------------- push


def make_remote(repo: Path, path: Path, name: str = "origin") -> Path:
    git(repo, "init", "-q", "--bare", str(path))
    git(repo, "remote", "add", name, str(path))
    return path


def test_push_to_a_bare_remote(repo: Path, tree: Path, tmp_path: Path) -> None:
    remote = make_remote(repo, tmp_path / "remote.git")
    outcome = merge(repo, tree, push=True)
    assert outcome.result == "merged"
    assert outcome.pushed is True
    assert git(remote, "rev-parse", "main") == outcome.commit


def test_push_follows_the_default_branch_upstream(repo: Path, tree: Path,
                                                  tmp_path: Path) -> None:
    remote = make_remote(repo, tmp_path / "up.git", name="upstream")
    git(repo, "config", "branch.main.remote", "upstream")
    git(repo, "config", "branch.main.merge", "refs/heads/trunk")
    outcome = merge(repo, tree, push=True)
    assert outcome.pushed is True
    assert git(remote, "rev-parse", "trunk") == outcome.commit


def test_failed_push_is_merged_but_not_pushed(repo: Path, tree: Path, tmp_path: Path) -> None:
    remote = make_remote(repo, tmp_path / "remote.git")
    subprocess.run(["rm", "-rf", str(remote)], check=True)
    outcome = merge(repo, tree, push=True)
    assert outcome.result == "merged"
    assert outcome.pushed is False
    assert outcome.commit == ref(repo, "main")
    assert "push to origin failed" in outcome.reason
    assert "remote.git" in outcome.reason  # git's own stderr


def test_push_without_any_remote_fails_cleanly(repo: Path, tree: Path) -> None:
    outcome = merge(repo, tree, push=True)
    assert outcome.result == "merged" and outcome.pushed is False


# --------------------------------------------------------------------------- the runner


def test_run_merge_writes_the_report_and_the_log(repo: Path, tree: Path,
                                                 tmp_path: Path) -> None:
    report = tmp_path / "tasks" / "1" / MERGE_REPORT_FILE
    log = tmp_path / "logs" / "job-1-run-1.log"
    outcome = run_merge(repo, tree, BRANCH, "main", push=False, report_path=report,
                        log_path=log)
    doc = read_document(report)
    assert doc.meta["result"] == "merged"
    assert doc.meta["commit"] == outcome.commit == ref(repo, "main")
    assert doc.meta["pushed"] is None and doc.meta["defer"] is False
    assert doc.meta["conflicts"] == []
    assert doc.meta["branch"] == BRANCH and doc.meta["default_branch"] == "main"
    assert "Merged" in doc.body
    lines = log.read_text().splitlines()
    assert any("result: merged" in line for line in lines)
    assert any("fast-forwarding main" in line for line in lines)


def test_run_merge_reports_a_conflict_with_what_to_do(repo: Path, tree: Path,
                                                      tmp_path: Path) -> None:
    commit_file(tree, "README.md", "branch\n")
    commit_file(repo, "README.md", "main\n")
    report = tmp_path / MERGE_REPORT_FILE
    run_merge(repo, tree, BRANCH, "main", push=False, report_path=report)
    doc = read_document(report)
    assert doc.meta["result"] == "conflict"
    assert doc.meta["commit"] is None
    assert doc.meta["conflicts"] == ["README.md"]
    assert "- `README.md`" in doc.body
    assert "What to do" in doc.body


def test_run_merge_reports_a_failed_push_as_merged_not_pushed(repo: Path, tree: Path,
                                                              tmp_path: Path) -> None:
    report = tmp_path / MERGE_REPORT_FILE
    run_merge(repo, tree, BRANCH, "main", push=True, report_path=report)
    doc = read_document(report)
    assert doc.meta["result"] == "merged" and doc.meta["pushed"] is False
    assert "push failed" in doc.body



def test_fetch_first_rebases_onto_what_another_host_pushed(repo: Path, tree: Path,
                                                           tmp_path: Path) -> None:
    """SPEC section 11: a repo several hosts merge into starts from the remote's default
    branch, so one host's merge never drifts from another's."""
    remote = make_remote(repo, tmp_path / "shared.git")
    git(repo, "push", "-q", "origin", "main")
    other = tmp_path / "other-host"
    git(tmp_path, "clone", "-q", "-b", "main", str(remote), str(other))
    git(other, "config", "user.name", "other host")
    git(other, "config", "user.email", "other@orch.invalid")
    commit_file(other, "other.txt", "other\n", "merged on another host")
    git(other, "push", "-q", "origin", "main")
    outcome = merge_task(repo, tree, BRANCH, "main", push=True, fetch_first=True)
    assert outcome.result == "merged" and outcome.pushed is True
    assert git(repo, "log", "-1", "--format=%s", "main~1") == "merged on another host"
    assert git(remote, "rev-parse", "main") == outcome.commit == ref(repo, "main")


def test_fetch_first_blocks_when_the_default_branches_diverged(repo: Path, tree: Path,
                                                               tmp_path: Path) -> None:
    remote = make_remote(repo, tmp_path / "shared.git")
    git(repo, "push", "-q", "origin", "main")
    other = tmp_path / "other-host"
    git(tmp_path, "clone", "-q", "-b", "main", str(remote), str(other))
    git(other, "config", "user.name", "other host")
    git(other, "config", "user.email", "other@orch.invalid")
    commit_file(other, "other.txt", "other\n", "there")
    git(other, "push", "-q", "origin", "main")
    commit_file(repo, "local.txt", "local\n", "here")
    before = ref(repo, "main")
    outcome = merge_task(repo, tree, BRANCH, "main", push=True, fetch_first=True)
    assert outcome.result == "blocked" and "diverged" in outcome.reason
    assert ref(repo, "main") == before
