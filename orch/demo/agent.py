"""The demo agent: a small deterministic stand-in for an AI coding agent.

`python -m orch.demo.agent ROLE` does what a real agent of that role is asked
to do, without any model: it reads the task from $ORCH_ARTIFACTS, writes its
artifact with the front matter the gate reads, and (developer) makes a real
commit on the task branch in $ORCH_WORKTREE. It prints a result object in the
shape of `claude -p --output-format json`, so orch's output parsing runs too.

Used by `orch demo` and by the tests; never by a real pipeline.
Environment knobs for tests: ORCH_DEMO_REVIEW=REQUEST_CHANGES_ONCE makes the
reviewer ask for changes in round 0 and approve later.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _git(worktree: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=worktree, check=True, capture_output=True,
                          text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"}).stdout


def analyst(artifacts: Path, worktree: Path, round_no: int) -> str:
    task = (artifacts / "00-task.md").read_text(encoding="utf-8")
    _write(artifacts / "02-analysis.md",
           "# Analysis\n\nDemo analysis of the task below: add a greeting module with a "
           f"test.\n\n{task.split('---', 2)[-1].strip()}\n")
    return "analysis written"


def developer(artifacts: Path, worktree: Path, round_no: int) -> str:
    source = worktree / "greeting.py"
    source.write_text(f'"""Written by the orch demo developer (round {round_no})."""\n\n\n'
                      "def greet(name: str) -> str:\n"
                      '    return f"Hello, {name}!"\n', encoding="utf-8")
    test = worktree / "tests" / "test_greeting.py"
    test.parent.mkdir(exist_ok=True)
    test.write_text("from greeting import greet\n\n\n"
                    "def test_greet():\n"
                    '    assert greet("orch") == "Hello, orch!"\n', encoding="utf-8")
    _git(worktree, "add", "greeting.py", "tests/test_greeting.py")
    _git(worktree, "-c", "user.name=orch demo", "-c", "user.email=demo@orch.invalid",
         "commit", "-q", "--allow-empty", "-m", f"demo: greeting (round {round_no})")
    _write(artifacts / "10-dev-report.md",
           f"# Development report\n\nRound {round_no}: added greeting.py and its test.\n")
    return "committed greeting.py"


def reviewer(artifacts: Path, worktree: Path, round_no: int) -> str:
    verdict = "APPROVE"
    if os.environ.get("ORCH_DEMO_REVIEW") == "REQUEST_CHANGES_ONCE" and round_no == 0:
        verdict = "REQUEST_CHANGES"
    _write(artifacts / "12-review.md",
           f"---\nverdict: {verdict}\n---\n# Review\n\n"
           + ("1. [major] Please add a docstring to greet().\n" if verdict != "APPROVE"
              else "Looks good.\n"))
    return f"review {verdict}"


def tester(artifacts: Path, worktree: Path, round_no: int) -> str:
    command = ([sys.executable, "-m", "pytest", "-q"] if importlib.util.find_spec("pytest")
               else [sys.executable, "-m", "unittest", "discover", "-s", "tests"])
    result = subprocess.run(command, cwd=worktree, check=False, capture_output=True, text=True)
    passed = result.returncode == 0
    _write(artifacts / "13-test-report.md",
           f"---\nresult: {'PASS' if passed else 'FAIL'}\n"
           f"status: {'passed' if passed else 'failed'}\nexit_code: {result.returncode}\n---\n"
           f"# Test report\n\n```\n{result.stdout[-2000:]}\n```\n")
    return "tests run"


ROLES = {"analyst": analyst, "developer": developer, "reviewer": reviewer, "tester": tester}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ROLES:
        print(f"usage: python -m orch.demo.agent {{{','.join(ROLES)}}}", file=sys.stderr)
        return 2
    started = time.time()
    artifacts = Path(os.environ["ORCH_ARTIFACTS"])
    worktree = Path(os.environ["ORCH_WORKTREE"])
    round_no = int(os.environ.get("ORCH_ROUND", "0"))
    summary = ROLES[argv[0]](artifacts, worktree, round_no)
    print(json.dumps({"type": "result", "subtype": "success", "is_error": False,
                      "result": summary, "session_id": f"demo-{os.environ.get('ORCH_RUN_ID')}",
                      "total_cost_usd": 0.0, "duration_ms": int((time.time() - started) * 1000),
                      "usage": {"input_tokens": 0, "output_tokens": 0}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
