"""`python -m orch.report_wrapper REPORT -- COMMAND...`: a deliverable for an agent that
cannot write one.

aider edits only files of its own git repository, so it cannot write the task's
report into the artifacts folder (which lies outside the worktree). This wrapper
runs COMMAND in the worktree (its output passes through to the run's log), and
when it exits 0 writes `$ORCH_ARTIFACTS/REPORT` from what the agent did: the
commits it added (aider commits each edit itself) and the tail of its output. It
exits as COMMAND did. It invents nothing: a run that committed nothing gets a
report saying so, and `dev_done` still needs a commit (docs/agents.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TAIL_CHARS = 4000
TIMEOUT_S = 30 * 24 * 3600.0  # the supervisor enforces the role's timeout_s


def main(argv: list[str] | None = None) -> int:
    """Run COMMAND, then write REPORT into $ORCH_ARTIFACTS when it exited 0."""
    from orch import procs

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m orch.report_wrapper REPORT -- COMMAND...", file=sys.stderr)
        return 2
    report, command = args[0], args[2:]
    artifacts = os.environ.get("ORCH_ARTIFACTS")
    if not artifacts or "/" in report:
        print("orch.report_wrapper: needs ORCH_ARTIFACTS and a file name", file=sys.stderr)
        return 2
    cwd = Path.cwd()
    base = _head(cwd)
    run = procs.run_in_group(command, cwd=cwd, env=dict(os.environ), timeout_s=TIMEOUT_S,
                             log_path=Path("/dev/stdout"))
    if run.start_error:
        return 127
    code = run.exit_code if run.exit_code is not None else 1
    if code == 0:
        text = _report_text(command[0], _commits(cwd, base), run.output_tail)
        (Path(artifacts) / report).write_text(text, encoding="utf-8")
    return code if code >= 0 else 128 - code


def _head(cwd: Path) -> str | None:
    from orch import gitops

    try:
        return gitops.head_commit(cwd)
    except Exception:
        return None


def _commits(cwd: Path, base: str | None) -> list[str]:
    """One line per commit added since `base` (newest first)."""
    from orch import gitops

    if base is None:
        return []
    try:
        return gitops.log_oneline(cwd, f"{base}..HEAD")
    except Exception:
        return []


def _report_text(agent: str, commits: list[str], output: str) -> str:
    listed = "\n".join(f"- {line}" for line in commits) or "- none: nothing was committed"
    tail = output[-TAIL_CHARS:].replace("```", "'''")
    return (f"# Development report\n\nWritten by orch's report wrapper from what "
            f"`{agent}` did (it cannot write outside its repository).\n\n"
            f"## Commits\n\n{listed}\n\n## The end of its output\n\n```text\n{tail}\n```\n")


if __name__ == "__main__":
    sys.exit(main())
