"""The merge runner: merge a task branch, write 15-merge-report.md, log what was done (SPEC §8).

The git work lives in orch.gitops; this module turns its MergeOutcome into the
report that the `merged` gate (orch.gates) judges.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orch.artifacts import write_document
from orch.gitops import Log, MergeFence, MergeOutcome, merge_task
from orch.timeutil import now_iso


def run_merge(repo_path: Path, worktree_path: Path, branch: str, default_branch: str, *,
              push: bool, report_path: Path | None, log_path: Path | None = None,
              log: Log | None = None, fence: MergeFence | None = None,
              fetch_first: bool = False) -> MergeOutcome:
    """Merge BRANCH into DEFAULT_BRANCH, write the report (when REPORT_PATH) and the log
    (to LOG_PATH, or through LOG). FENCE guards the moves (gitops.merge); when the run
    loses its job there, FenceLost propagates and no report is written. FETCH_FIRST: a
    repo several hosts merge into, whose remote default branch is fetched first."""
    log = log or _log_to(log_path)
    log(f"merge {branch} into {default_branch} (repo {repo_path}, push {'on' if push else 'off'})")
    outcome = merge_task(Path(repo_path), Path(worktree_path), branch, default_branch,
                         push=push, log=log, fence=fence, fetch_first=fetch_first)
    log(f"result: {outcome.result}; {outcome.reason}")
    if report_path is not None:
        write_document(Path(report_path), report_meta(outcome, branch, default_branch),
                       report_body(outcome, branch, default_branch))
        log(f"wrote {report_path}")
    return outcome


def _log_to(log_path: Path | None) -> Log:
    """A function that appends one timestamped line to LOG_PATH (or drops it when None)."""

    def log(message: str) -> None:
        if log_path is None:
            return
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(f"{now_iso()} merge: {message}\n")

    return log


def report_meta(outcome: MergeOutcome, branch: str, default_branch: str) -> dict[str, Any]:
    """The front matter of 15-merge-report.md."""
    return {
        "result": outcome.result,
        "commit": outcome.commit,
        "pushed": outcome.pushed,
        "defer": outcome.defer,
        "conflicts": list(outcome.conflicts),
        "reason": outcome.reason,
        "branch": branch,
        "default_branch": default_branch,
        "finished_at": now_iso(),
    }


def report_body(outcome: MergeOutcome, branch: str, default_branch: str) -> str:
    """A readable account of the merge and, when it did not go through, what to do next."""
    title = f"# Merge of `{branch}` into `{default_branch}`\n\n"
    if outcome.result == "merged":
        return title + _merged_body(outcome, default_branch)
    if outcome.result == "conflict":
        return title + _conflict_body(outcome, branch, default_branch)
    return title + _blocked_body(outcome)


def _merged_body(outcome: MergeOutcome, default_branch: str) -> str:
    text = (f"**Merged.** `{default_branch}` now points at `{outcome.commit}` "
            f"(the task branch rebased onto it, history linear).\n\n{outcome.reason}\n")
    if outcome.pushed is False:
        text += ("\n## The push failed\n\nThe local fast-forward is done; only the push is "
                 "missing. Fix the remote (network, credentials, a rejected update), "
                 f"push `{default_branch}` by hand or run `orch retry`.\n")
    return text


def _conflict_body(outcome: MergeOutcome, branch: str, default_branch: str) -> str:
    files = "".join(f"- `{name}`\n" for name in outcome.conflicts)
    return (f"**Conflict.** {outcome.reason}; `{branch}` and `{default_branch}` are "
            f"unchanged.\n\n## Conflicting files\n\n{files}\n## What to do\n\n"
            "Nothing by hand: the task goes back to its developer, whose prompt lists these "
            f"files and says what to do: rebase `{branch}` onto `{default_branch}` in the "
            "task worktree, keep the intent of both sides in each file, continue the "
            "rebase, run the tests. The merge stage runs again once the pipeline passes.\n")


def _blocked_body(outcome: MergeOutcome) -> str:
    if outcome.defer:
        return (f"**Deferred.** {outcome.reason}. Nothing was changed; orch tries again "
                "after the retry backoff.\n")
    return (f"**Blocked.** {outcome.reason}\n\nNothing was changed and nothing of the working "
            "tree was touched. Resolve the cause, then `orch retry` the task.\n")

