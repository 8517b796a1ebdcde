"""`python -m orch.report_wrapper`: aider's report, written from what it did (docs/agents.md).

A stand-in `aider` (a script: no aider is installed here) edits and commits in a real
git repository, as aider does with auto-commits; the wrapper writes the report into
the artifacts folder outside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.git import make_repo


def _aider(path: Path, exit_code: int) -> Path:
    path.write_text(f"""#!/bin/sh
echo "aider: editing calc.py"
echo 'x = 1' > calc.py && git add calc.py && git -c user.name=a -c user.email=a@a \\
  commit -q -m "aider: add x"
exit {exit_code}
""")
    path.chmod(0o755)
    return path


def _run(tmp_path: Path, exit_code: int) -> tuple[subprocess.CompletedProcess[str], Path]:
    repo = make_repo(tmp_path / "repo")
    artifacts = tmp_path / "tasks" / "1"
    artifacts.mkdir(parents=True)
    aider = _aider(tmp_path / "aider", exit_code)
    done = subprocess.run([sys.executable, "-m", "orch.report_wrapper", "10-dev-report.md",
                           "--", str(aider), "--message-file", "prompt.md"], cwd=repo,
                          env={**os.environ, "ORCH_ARTIFACTS": str(artifacts)},
                          capture_output=True, text=True, timeout=60)
    return done, artifacts / "10-dev-report.md"


def test_the_report_names_the_commits_and_the_output(tmp_path: Path) -> None:
    done, report = _run(tmp_path, 0)
    assert done.returncode == 0, done.stderr
    assert "aider: editing calc.py" in done.stdout  # its output passes through to the log
    text = report.read_text()
    assert "aider: add x" in text and "aider: editing calc.py" in text


def test_a_failed_run_writes_no_report_and_exits_as_it_did(tmp_path: Path) -> None:
    done, report = _run(tmp_path, 3)
    assert done.returncode == 3 and not report.exists()
