"""`orch demo` end to end: one task from analysis to merged through the installed console
script, a temporary home that is removed, and a demo out of time that cancels its task.
The demo's refusal of a used home is in tests/cli/test_cli_demo.py, its project in
tests/unit/test_demo_project.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from support.demo import demo_env, orch
from support.git import run_git

from orch.artifacts import MERGE_REPORT_FILE, read_document

STAGES = ["development", "review", "testing", "merge"]


def test_demo_goes_from_analysis_to_merged(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    home = tmp_path / "demo-home"
    done = orch(env, "--home", str(home), "demo")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    transitions = [line.split("==> ")[1].split()[0] for line in out.splitlines()
                   if "==> " in line]
    assert transitions == STAGES
    assert "staging: repo demo has no staging section" in out
    assert "timeline" in out and "closed" in out
    assert f"orch --home {home} task show 1" in out
    assert not (tmp_path / "not-this-one").exists()

    # the merged commit is on the demo repo's main, with the developer's work
    repo = home / "demo-repo"
    merged = read_document(home / "tasks" / "1" / MERGE_REPORT_FILE).meta["commit"]
    assert run_git(repo, "rev-parse", "main") == merged
    assert "demo: greeting" in run_git(repo, "log", "--format=%s", "-1", "main")
    assert (repo / "greeting.py").is_file()  # the checked-out main moved too
    assert run_git(repo, "status", "--porcelain") == ""

    # the home is a real one to look around in
    shown = json.loads(orch(env, "--home", str(home), "task", "show", "1", "--json").stdout)
    assert shown["task"]["stage"] == "done"
    assert [job["stage"] for job in shown["jobs"]] == ["analysis", *STAGES]
    assert all(job["verdict"] == "PASS" for job in shown["jobs"])


def test_demo_without_home_uses_a_temporary_one_and_removes_it(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    done = orch(env, "demo")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "was removed" in done.stdout and "orch demo --keep" in done.stdout
    assert list((tmp_path / "tmp").iterdir()) == []


def live_processes_mentioning(text: str) -> list[int]:
    """Pids (not zombies) whose command line mentions TEXT."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_a_demo_out_of_time_cancels_its_task_and_keeps_the_home(tmp_path: Path,
                                                                clean_env: None) -> None:
    from orch.engine.commands.demo import DemoStep, run_demo

    steps: list[DemoStep] = []
    home = tmp_path / "slow-home"
    result = run_demo(str(home), keep=False, progress=steps.append, time_limit_s=0.3)
    assert result.exit_status == 1 and result.timed_out and not result.removed
    assert result.stage == "cancelled" and result.merged_commit is None
    assert any("time limit" in step.detail for step in steps)
    assert (home / "orch.db").is_file()
    assert [e["kind"] for e in result.detail["events"]][-1] == "cancelled"
    deadline = time.monotonic() + 10
    while live_processes_mentioning(str(home)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_processes_mentioning(str(home)) == []  # the running agent was stopped
