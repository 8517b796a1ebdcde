"""Ctrl-C (SIGINT to a real orch process): exit 130 and one line saying what was left as it
was, for `logs --follow`, `demo`, `tick` and `test-run` (`queue --watch`: in
tests/cli/test_queue.py and, in a terminal, tests/cli/test_screens.py).

`orch test-run`'s own handling of Ctrl-C (live output, the tree stopped, no verdict) is
built with the test-runner's live output; the test here holds what any command owes:
130, one `interrupted:` line, nothing of the run left alive, no report written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from support.cli import CliResult
from support.demo import demo_env
from support.engine import alive, wait_for
from support.env import keep_env

Cli = Callable[..., CliResult]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if keep_env(k)}


def start(*args: str, environ: dict[str, str] | None = None, cwd: Path | None = None
          ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "orch", *args], env=environ or env(),
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, list[str]]:
    """SIGINT, then (stdout, the non-blank lines of stderr) once it exited."""
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    return out, [line for line in err.splitlines() if line.strip()]


def home_with(tmp_path: Path, git_repo: Callable[..., Path], command: list[str],
              runner: str = "command") -> Path:
    home = tmp_path / "home"
    home.mkdir()
    role = ", role: worker" if runner == "agent" else f", command: {json.dumps(command)}"
    (home / "pipeline.yaml").write_text(
        f"stages:\n  - {{name: work, runner: {runner}{role}, gate: exit_zero}}\n"
        "  - {name: check, runner: human, on_fail: work}\n")
    (home / "orch.yaml").write_text(
        "retry_backoff_s: 0\nheartbeat_interval_s: 1\ncancel_grace_s: 1\n"
        f"pipeline: pipeline.yaml\nagents:\n  worker: {{command: {json.dumps(command)}}}\n"
        f"repos:\n  app: {{path: {git_repo('app')}}}\n")
    return home


def job_status(cli: Cli, home: Path, task: int = 1) -> str:
    shown = json.loads(cli(home, "task", "show", str(task), "--json")[1])
    return shown["jobs"][0]["status"] if shown["jobs"] else "none"


def test_logs_follow(tmp_path: Path, git_repo: Callable[..., Path], cli: Cli) -> None:
    agent = ["sh", "-c", "echo started; sleep 60"]
    home = home_with(tmp_path, git_repo, agent, runner="agent")
    assert cli(home, "task", "add", "--repo", "app", "--title", "t")[0] == 0
    assert cli(home, "tick", "--quiet")[0] == 0
    wait_for(lambda: job_status(cli, home) == "running", 20, "the agent run")
    follower = start("--home", str(home), "logs", "1", "--follow")
    try:
        time.sleep(1.5)
        _, err = interrupt(follower)
        assert follower.returncode == 130
        assert err == ["interrupted: stopped printing the log of job 1; the run itself goes "
                       "on (orch logs 1 --follow shows it again)"]
        assert job_status(cli, home) == "running"  # only the reader stopped
    finally:
        cli(home, "cancel", "1")


def test_tick_with_an_inline_run(tmp_path: Path, git_repo: Callable[..., Path],
                                 cli: Cli) -> None:
    marker = tmp_path / "pid"
    home = home_with(tmp_path, git_repo, ["sh", "-c", f"echo $$ > {marker}; exec sleep 60"])
    assert cli(home, "task", "add", "--repo", "app", "--title", "t")[0] == 0
    ticker = start("--home", str(home), "tick")
    wait_for(lambda: marker.is_file() and marker.read_text().strip(), 20, "the inline run")
    pid = int(marker.read_text())
    _, err = interrupt(ticker)
    assert ticker.returncode == 130
    assert len(err) == 1 and err[0].startswith("interrupted: the tick stopped where it was")
    assert "the next tick reaps and retries that one" in err[0]
    wait_for(lambda: not alive(pid), 10, "the inline command to be stopped with the tick")
    assert cli(home, "tick", "--quiet")[0] == 0  # the next tick repairs it
    events = json.loads(cli(home, "task", "show", "1", "--json")[1])["events"]
    assert any(event["kind"] == "reaped" for event in events), events


def test_demo(tmp_path: Path) -> None:
    environ = demo_env(tmp_path)
    home = tmp_path / "demo-home"
    demo = subprocess.Popen([sys.executable, "-m", "orch", "--home", str(home), "demo"],
                            env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert demo.stdout is not None
    seen = []
    for line in demo.stdout:  # wait until the task exists and its agents run
        seen.append(line)
        if "==> development" in line or "started" in line:
            break
    _, err = interrupt(demo)
    assert demo.returncode == 130, "".join(seen)
    assert err == [f"interrupted: the demo stopped; its task, if it had one, was cancelled "
                   f"so that no demo agent keeps running; its home stays for a look: {home}"]
    shown = subprocess.run([sys.executable, "-m", "orch", "--home", str(home), "task", "show",
                            "1", "--json"], env=environ, capture_output=True, text=True,
                           timeout=60)
    task = json.loads(shown.stdout)["task"]
    assert (task["state"], task["stage"]) == ("closed", "cancelled")


def test_test_run(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    marker = tmp_path / "pid"
    (project / "tests" / "test_slow.py").write_text(
        "import os, time\n\n\ndef test_slow():\n"
        f"    open({str(marker)!r}, 'w').write(str(os.getpid()))\n    time.sleep(60)\n")
    report = tmp_path / "report.md"
    runner = start("test-run", str(project), "--report", str(report),
                   environ={**env(), "ORCH_HOME": str(tmp_path / "no-home")})
    wait_for(lambda: marker.is_file() and marker.read_text().strip(), 60, "the slow test")
    pid = int(marker.read_text())
    _, err = interrupt(runner)
    assert runner.returncode == 130
    assert err == ["interrupted: the test run stopped: its whole process tree was killed "
                   "and no verdict was written (no report, no test exit status)"], err
    assert not report.exists()  # no verdict
    wait_for(lambda: not alive(pid), 15, "the test process to be stopped")
