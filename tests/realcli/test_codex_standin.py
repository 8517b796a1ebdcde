"""The real Codex CLI (0.171, pinned) against the scripted stand-in provider.

These tests prove the facts orch's Codex presets rest on: under Codex's own
sandbox (`-s workspace-write`, no bypass), `--add-dir {artifacts}` lets the agent
write its deliverable outside the worktree, the git-dir flags let it commit in a
`git worktree`, and provider failures end the run quickly with `turn.failed`.
/tmp is taken out of the sandbox's writable roots (see write_codex_home), so a
pass here is owed to the flags, not to the tests living under /tmp.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from support.codex_env import (
    INSTALL_HINT,
    PRESETS,
    Run,
    Task,
    codex_bin,
    codex_env,
    make_task,
    render,
    run_codex,
    write_codex_home,
)
from support.fake_openai import Error, FakeOpenAI, Step, Text, add_file_patch, apply_patch, shell

PLAIN = ["codex", "exec", "--json", "-s", "workspace-write", "{prompt}"]


@pytest.fixture(autouse=True)
def _codex_installed() -> None:
    """Skip (fail under CI) when the pinned codex is not installed."""
    if codex_bin() is None:
        message = f"the real Codex CLI is not installed: {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def events(run: Run) -> list[dict[str, Any]]:
    """The JSONL events codex printed."""
    return [json.loads(line) for line in run.stdout.splitlines() if line.strip()]


def run_role(tmp_path: Path, task: Task, template: list[str], steps: list[Step],
             timeout: float = 60) -> tuple[Run, FakeOpenAI]:
    """Run codex with `template` rendered for `task` against a scripted provider."""
    with FakeOpenAI(steps) as api:
        home = write_codex_home(tmp_path / "codex-home", api.base_url)
        argv = render(template, task.values("Do the task in the brief."))
        return run_codex(argv, task.worktree, codex_env(home), timeout), api


def test_analyst_preset_writes_the_deliverable_outside_the_worktree(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    deliverable = task.artifacts / "02-analysis.md"
    steps: list[Step] = [apply_patch(add_file_patch(str(deliverable), "# Analysis\nok")),
                         Text("Wrote the analysis.")]
    run, api = run_role(tmp_path, task, PRESETS["analyst"], steps)
    assert run.exit_code == 0, run.stderr
    assert deliverable.read_text() == "# Analysis\nok\n"
    assert events(run)[-1]["type"] == "turn.completed"
    headers = {k.lower(): v for k, v in api.turn_requests()[0]["headers"].items()}
    assert headers["authorization"] == "Bearer sk-dummy"


def test_without_add_dir_the_sandbox_refuses_the_artifacts_folder(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    deliverable = task.artifacts / "02-analysis.md"
    steps: list[Step] = [apply_patch(add_file_patch(str(deliverable), "# Analysis")),
                         Text("Wrote the analysis.")]
    run, _ = run_role(tmp_path, task, PLAIN, steps)
    assert run.exit_code == 0  # a hollow success: only the deliverable's absence tells
    assert not deliverable.exists()
    assert "patch rejected: writing outside of the project" in run.stderr


# A project test that opens a loopback socket, as tests with a local server do.
SOCKET_TEST = """import socket


def test_loopback():
    with socket.create_server(("127.0.0.1", 0)) as server:
        socket.create_connection(server.getsockname()).close()
"""


def developer_steps(task: Task) -> list[Step]:
    """Edit, run the tests with orch's python, commit, write the report."""
    return [shell("printf 'def add(a, b):\\n    return a + b\\n' > calc.py"),
            shell("python3 -m pytest -q -p no:cacheprovider"),
            shell("git add -A && git commit -q -m 'Add calc.add'"),
            shell(f"echo 'Added calc.add.' > {task.artifacts}/10-dev-report.md"),
            Text("Committed.")]


def test_developer_preset_commits_in_a_git_worktree(tmp_path: Path) -> None:
    task = make_task(tmp_path, {"test_calc.py": SOCKET_TEST})
    run, api = run_role(tmp_path, task, PRESETS["developer"], developer_steps(task))
    assert run.exit_code == 0, run.stderr
    assert task.commits() == 1
    assert (task.artifacts / "10-dev-report.md").read_text() == "Added calc.add.\n"
    assert '"exit_code":0' in api.tool_outputs()[1], api.tool_outputs()  # pytest passed


def test_plain_workspace_write_cannot_commit_yet_exits_0(tmp_path: Path) -> None:
    task = make_task(tmp_path, {"test_calc.py": SOCKET_TEST})
    run, api = run_role(tmp_path, task, PLAIN, developer_steps(task))
    assert run.exit_code == 0
    assert events(run)[-1]["type"] == "turn.completed"
    assert task.commits() == 0
    assert "index.lock': Read-only file system" in api.tool_outputs()[2]


def test_without_network_access_the_sandbox_refuses_even_loopback(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    probe = "python3 -c 'import socket; socket.socket().close(); print(\"socket ok\")'"
    run, api = run_role(tmp_path, task, PRESETS["analyst"], [shell(probe), Text("ok")])
    assert run.exit_code == 0
    assert "PermissionError: [Errno 1] Operation not permitted" in api.tool_outputs()[0]


def test_503_at_capacity_ends_in_turn_failed_at_once(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    steps: list[Step] = [Error(503, "Selected model is at capacity.", "server_is_overloaded")]
    run, _ = run_role(tmp_path, task, PRESETS["developer"], steps)
    assert run.exit_code == 1
    assert run.duration_s < 15
    last = events(run)[-1]
    assert last == {"type": "turn.failed", "error": {
        "message": "Selected model is at capacity. Please try a different model."}}


def test_unreachable_provider_ends_the_run_under_the_preset(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    with FakeOpenAI([]) as api:
        closed = api.base_url
    home = write_codex_home(tmp_path / "codex-home", closed)
    argv = render(PRESETS["analyst"], task.values("Analyse."))
    run = run_codex(argv, task.worktree, codex_env(home), timeout=60)
    assert not run.timed_out and run.exit_code == 1
    assert events(run)[-1] == {"type": "turn.failed", "error": {
        "message": "Connection failed: error sending request"}}
