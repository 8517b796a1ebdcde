"""The real Claude Code CLI against our scripted stand-in for the Anthropic API.

These pin down what orch's presets and judging rely on: with the role presets
(tests/realcli/claude_cli.py) the real CLI writes into the artifacts folder
outside its worktree, runs the project's tests and commits; provider errors end
quickly (CLAUDE_CODE_MAX_RETRIES=0) with `is_error` and `api_error_status`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support.claude_cli import Layout, base_env, claude_binary, require_claude, run_claude, run_git
from support.fake_anthropic import (
    Bash,
    FakeAnthropic,
    Write,
    claude_env,
    error,
    text,
    tools,
)

require_claude()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    claude_binary()  # under CI a missing CLI fails here, before anything is built
    return Layout.make(tmp_path)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "user-home"


def test_analyst_writes_outside_its_worktree_through_add_dir(layout: Layout, home: Path) -> None:
    report = layout.artifacts / "02-analysis.md"
    with FakeAnthropic([tools(Write(str(report), "# Analysis\n")), text("Wrote it.")]) as api:
        outcome = run_claude(layout.argv("analyst"), layout.worktree,
                             api.env(layout.config, base=base_env(home)))
    result = outcome.result
    assert outcome.returncode == 0, outcome.stderr
    assert report.read_text(encoding="utf-8") == "# Analysis\n"
    assert result["is_error"] is False and result["subtype"] == "success"
    assert result["permission_denials"] == []
    assert result["session_id"] and result["total_cost_usd"] > 0
    assert result["usage"]["input_tokens"] > 0
    assert api.unknown == []


def test_accept_edits_alone_denies_the_artifacts_and_the_run_still_succeeds(
        layout: Layout, home: Path) -> None:
    """The old preset: acceptEdits covers the worktree only; the denial is no error."""
    report = layout.artifacts / "02-analysis.md"
    argv = [str(claude_binary()), "-p", "--output-format", "json",
            "--permission-mode", "acceptEdits", "--", "Do the task."]
    with FakeAnthropic([tools(Write(str(report), "x\n")), text("Could not write.")]) as api:
        outcome = run_claude(argv, layout.worktree, api.env(layout.config, base=base_env(home)))
    result = outcome.result
    assert outcome.returncode == 0 and result["is_error"] is False
    assert not report.exists()
    assert [d["tool_name"] for d in result["permission_denials"]] == ["Write"]
    assert result["permission_denials"][0]["tool_input"]["file_path"] == str(report)


def test_tester_runs_the_tests_and_writes_its_report_but_may_not_edit_code(
        layout: Layout, home: Path) -> None:
    wt, report = layout.worktree, layout.artifacts / "13-test-report.md"
    script = [
        tools(Bash("python -m pytest -q")),
        tools(Write(str(wt / "calc.py"), "def add(a, b):\n    return a + b\n")),
        tools(Write(str(report), "---\nresult: FAIL\n---\n")),
        text("1 failed."),
    ]
    with FakeAnthropic(script) as api:
        env = api.env(layout.config, base=base_env(home), PYTHONDONTWRITEBYTECODE="1")
        outcome = run_claude(layout.argv("tester"), wt, env)
    result = outcome.result
    assert outcome.returncode == 0 and result["is_error"] is False
    assert "1 failed" in api.output_texts()[0]
    assert [d["tool_input"]["file_path"] for d in result["permission_denials"]] == [
        str(wt / "calc.py")]
    assert report.exists() and "a - b" in (wt / "calc.py").read_text(encoding="utf-8")


def test_reviewer_reads_the_diff_and_writes_its_review(layout: Layout, home: Path) -> None:
    review = layout.artifacts / "12-review.md"
    script = [
        tools(Bash("git diff main...HEAD && git log --oneline -3"),
              Bash(f"cat {layout.artifacts / '00-task.md'}")),
        tools(Write(str(review), "---\nverdict: APPROVE\n---\n")),
        text("Approved."),
    ]
    with FakeAnthropic(script) as api:
        outcome = run_claude(layout.argv("reviewer"), layout.worktree,
                             api.env(layout.config, base=base_env(home)))
    result = outcome.result
    assert result["is_error"] is False and result["permission_denials"] == []
    assert "# Fix add" in api.output_texts()[1]
    assert review.exists()


def test_developer_runs_the_tests_commits_and_reports(layout: Layout, home: Path) -> None:
    wt, report = layout.worktree, layout.artifacts / "10-dev-report.md"
    script = [
        tools(Write(str(wt / "calc.py"), "def add(a, b):\n    return a + b\n")),
        tools(Bash("python3 -m pytest -q")),
        tools(Bash("python -m pytest -q && pytest -q")),
        tools(Bash('git add -A && git commit -q -m "Fix add"')),
        tools(Write(str(report), "# Development report\n")),
        text("Done."),
    ]
    with FakeAnthropic(script) as api:
        env = api.env(layout.config, base=base_env(home), PYTHONDONTWRITEBYTECODE="1")
        outcome = run_claude(layout.argv("developer"), wt, env)
    result = outcome.result
    assert outcome.returncode == 0 and result["is_error"] is False, outcome.stdout[-2000:]
    assert result["permission_denials"] == []
    outputs = api.output_texts()
    assert "1 passed" in outputs[1] and outputs[2].count("1 passed") == 2
    assert run_git(wt, "log", "-1", "--format=%s") == "Fix add"
    assert run_git(wt, "status", "--porcelain") == ""
    assert report.exists()


def test_developer_may_not_push(layout: Layout, home: Path) -> None:
    script = [tools(Bash("git push origin HEAD")), text("Not pushed.")]
    with FakeAnthropic(script) as api:
        outcome = run_claude(layout.argv("developer"), layout.worktree,
                             api.env(layout.config, base=base_env(home)))
    denials = outcome.result["permission_denials"]
    assert [d["tool_input"]["command"] for d in denials] == ["git push origin HEAD"]


@pytest.mark.parametrize(("status", "kind"), [(429, "rate_limit_error"),
                                              (529, "overloaded_error"),
                                              (401, "authentication_error")])
def test_provider_errors_end_at_once_with_their_status(
        layout: Layout, home: Path, status: int, kind: str) -> None:
    with FakeAnthropic([error(status, f"scripted {status}")]) as api:
        outcome = run_claude(layout.argv("analyst"), layout.worktree,
                             api.env(layout.config, base=base_env(home)))
    result = outcome.result
    assert outcome.returncode == 1
    assert result["is_error"] is True and result["subtype"] == "success"
    assert result["api_error_status"] == status and result["api_error_type"] == kind
    assert f"scripted {status}" in result["result"]
    assert len(api.main_requests) == 1      # CLAUDE_CODE_MAX_RETRIES=0: no retry
    assert outcome.seconds < 30


def test_an_unreachable_provider_ends_at_once_without_a_status(layout: Layout, home: Path) -> None:
    with socket.socket() as probe:           # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = claude_env(f"http://127.0.0.1:{port}", layout.config, base=base_env(home))
    outcome = run_claude(layout.argv("analyst"), layout.worktree, env)
    result = outcome.result
    assert outcome.returncode == 1 and result["is_error"] is True
    assert result["api_error_status"] is None and result["terminal_reason"] == "api_error"
    assert "ECONNREFUSED" in result["result"]
    assert outcome.seconds < 30


def test_an_allow_list_prefix_is_a_whole_word(layout: Layout, home: Path) -> None:
    """`Bash(python:*)` does not allow `python3 -m pytest` (the old developer preset)."""
    argv = [str(claude_binary()), "-p", "--output-format", "json",
            "--allowedTools=Bash(python:*)", "--", "Run the tests."]
    script = [tools(Bash("python3 -m pytest -q")), tools(Bash("python -m pytest -q")),
              text("Ran them.")]
    with FakeAnthropic(script) as api:
        env = api.env(layout.config, base=base_env(home), PYTHONDONTWRITEBYTECODE="1")
        outcome = run_claude(argv, layout.worktree, env)
    denied = [d["tool_input"]["command"] for d in outcome.result["permission_denials"]]
    assert denied == ["python3 -m pytest -q"]
    assert "1 failed" in api.output_texts()[1]


def marked(marker: str) -> list[int]:
    """The pids of live processes whose environment holds `marker` (NAME=value)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in env:
            found.append(int(entry))
    return found


def test_sigkill_leaves_the_tools_processes_carrying_the_run_marker(
        layout: Layout, home: Path, tmp_path: Path) -> None:
    """Why orch needs more than claude's process group: each Bash tool is a new session,
    and a SIGKILLed claude leaves it (and what it setsid'd) running; they keep the
    environment, so a per-run marker finds them."""
    marker = f"ORCH_RUN_ID=realcli-{tmp_path.name}"
    script = [tools(Bash("setsid sleep 999 & tail -f /dev/null")), text("done")]
    argv = [str(claude_binary()), "-p", "--output-format", "json", "--allowedTools=Bash",
            "--", "Run it."]
    with FakeAnthropic(script) as api:
        env = api.env(layout.config, base=base_env(home), ORCH_RUN_ID=marker.split("=")[1])
        proc = subprocess.Popen(argv, cwd=layout.worktree, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while len(marked(marker)) < 4 and time.monotonic() < deadline:
                time.sleep(0.2)         # claude, the tool's bash, sleep, tail
            proc.kill()
            proc.wait(timeout=30)
            survivors = marked(marker)
            sessions = {os.getsid(pid) for pid in survivors}
        finally:
            for pid in marked(marker):
                os.kill(pid, signal.SIGKILL)
    assert len(survivors) == 3 and proc.pid not in survivors
    assert proc.pid not in sessions and len(sessions) == 2   # the tool's, the setsid'd one
