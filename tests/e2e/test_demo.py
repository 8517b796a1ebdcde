"""`orch demo` through the installed console script: one task from analysis to merged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from support.cli import orch_script
from support.git import run_git

from orch.artifacts import MERGE_REPORT_FILE, read_document

STAGES = ["development", "review", "testing", "merge"]


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("ORCH_", "GIT_"))}
    env.update(TMPDIR=str(tmp_path / "tmp"), ORCH_HOME=str(tmp_path / "not-this-one"),
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", HOME=str(tmp_path))  # no user git config
    (tmp_path / "tmp").mkdir()
    return env


def orch(env: dict[str, str], *args: str, timeout: float = 80) -> subprocess.CompletedProcess:
    return subprocess.run([orch_script(), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


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


def test_demo_refuses_a_home_in_use(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    home = tmp_path / "used"
    home.mkdir()
    (home / "orch.yaml").write_text("max_concurrency: 1\n")
    done = orch(env, "--home", str(home), "demo", timeout=30)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and "new or empty" in done.stderr
    assert sorted(p.name for p in home.iterdir()) == ["orch.yaml"]


def test_demo_without_home_uses_a_temporary_one_and_removes_it(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    done = orch(env, "demo")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "was removed" in done.stdout and "orch demo --keep" in done.stdout
    assert list((tmp_path / "tmp").iterdir()) == []


def test_the_demo_project_passes_under_pytest_and_unittest(tmp_path: Path) -> None:
    from orch.config import load_settings
    from orch.demo.run import demo_config, demo_test_command, make_repo

    repo = tmp_path / "repo"
    commit = make_repo(repo)
    assert run_git(repo, "rev-parse", "main") == commit
    assert run_git(repo, "status", "--porcelain") == ""
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    for argv in (demo_test_command(), [sys.executable, "-m", "unittest", "discover", "-s",
                                       "tests"]):
        done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / "orch.yaml").write_text(demo_config(repo, demo_test_command()))
    settings = load_settings(tmp_path, environ={})
    assert settings.repo("demo").path == repo and settings.retry_backoff_s == 0
    assert settings.agents["developer"].command == (sys.executable, "-m", "orch.demo.agent",
                                                    "developer")
    assert all(role.output == "claude-json" for role in settings.agents.values())


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
    from orch.demo.run import DemoStep, run_demo

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
