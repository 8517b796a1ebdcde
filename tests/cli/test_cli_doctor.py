"""`orch doctor` (SPEC section 8) on real homes, with fake `claude`, `ssh` and `docker`
scripts first on an isolated PATH (they record their argv and play the real messages)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from support.cli import CliResult
from support.git import run_git

SSH_SCRIPT = """#!/bin/sh
printf '%s\\n' "$@" > "{log}"
case "$FAKE_SSH" in
  denied) echo "deploy@staging: Permission denied (publickey)." >&2; exit 255;;
  refused) echo "ssh: connect to host staging port 22: Connection refused" >&2; exit 255;;
  hang) sleep 60;;
esac
exit 0
"""


@pytest.fixture
def fakebin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated PATH: git, and a fake `claude` that does nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = shutil.which("git")
    assert git
    (bin_dir / "git").symlink_to(git)
    script(bin_dir, "claude", "#!/bin/sh\nexit 0\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def script(bin_dir: Path, name: str, text: str) -> Path:
    path = bin_dir / name
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def home(tmp_path: Path, cli: Callable[..., CliResult], git_repo: Callable[..., Path],
         fakebin: Path) -> Path:
    """A home with repo `app`, the default agents (claude) and a test command that works."""
    path = tmp_path / "home"
    code, _, err = cli(path, "init", "--repo", f"app={git_repo('app')}")
    assert code == 0, err
    edit(path, lambda c: c["repos"]["app"].update(
        test={"command": [sys.executable, "-m", "pytest", "-q"]}))
    return path


def edit(home: Path, change: Callable[[dict], object]) -> None:
    config = yaml.safe_load((home / "orch.yaml").read_text())
    change(config)
    (home / "orch.yaml").write_text(yaml.safe_dump(config))


def doctor(cli: Callable[..., CliResult], home: Path) -> tuple[int, dict[str, dict]]:
    """`orch doctor --json`: (exit code, {name: check})."""
    code, out, err = cli(home, "doctor", "--json")
    assert err == "" and "Traceback" not in out
    checks = json.loads(out)["checks"]
    for check in checks:
        assert set(check) == {"name", "status", "detail"}
        assert check["status"] in ("ok", "warn", "fail")
    assert code == (1 if any(c["status"] == "fail" for c in checks) else 0)
    return code, {check["name"]: check for check in checks}


def test_a_healthy_home(home: Path, cli: Callable[..., CliResult]) -> None:
    code, checks = doctor(cli, home)
    assert code == 0
    assert list(checks) == ["config", "pipeline", "database", "repo app", "agent analyst",
                            "agent developer", "agent reviewer", "test app", "tick"]
    assert all(c["status"] == "ok" for name, c in checks.items() if name != "tick")
    assert "integrity ok" in checks["database"]["detail"]
    assert checks["agent analyst"]["detail"].endswith("/bin/claude")
    assert checks["tick"]["status"] == "warn" and "cron seems not to run" in \
        checks["tick"]["detail"]


def test_human_output_has_one_marked_line_per_check(home: Path,
                                                    cli: Callable[..., CliResult]) -> None:
    code, out, _ = cli(home, "doctor")
    lines = out.splitlines()
    marked = [line for line in lines if line.startswith("[")]
    assert code == 0 and len(marked) == 9
    assert marked[0].startswith("[ ok ] config") and marked[8].startswith("[warn] tick")
    assert lines[-1] == "8 ok, 1 warning(s), 0 failed"
    # a long detail goes on under its column, never past the terminal's 80 columns
    assert all(len(line) <= 80 for line in lines)
    assert all(line.startswith(("[", " " * 10)) for line in lines[:-1]), out


def test_the_age_of_the_last_tick(home: Path, cli: Callable[..., CliResult]) -> None:
    assert cli(home, "tick", "--quiet")[0] == 0
    assert doctor(cli, home)[1]["tick"]["status"] == "ok"
    with sqlite3.connect(home / "orch.db") as conn:
        conn.execute("UPDATE meta SET value = '2020-01-01T00:00:00.000000Z' "
                     "WHERE key = 'last_tick_at'")
    tick = doctor(cli, home)[1]["tick"]
    assert tick["status"] == "warn" and "cron seems not to run" in tick["detail"]


def test_agents_missing_or_without_cost(home: Path, cli: Callable[..., CliResult],
                                        fakebin: Path) -> None:
    (fakebin / "claude").unlink()
    code, checks = doctor(cli, home)
    assert code == 1
    assert checks["agent analyst"]["status"] == "fail"
    assert "'claude' not found on PATH (stages analysis)" in checks["agent analyst"]["detail"]
    script(fakebin, "aider", "#!/bin/sh\nexit 0\n")
    edit(home, lambda c: c["agents"].update(
        analyst={"command": ["aider", "--message-file", "{prompt_file}"]},
        developer={"command": ["claude"], "output": "claude-json",
                   "env": {"PATH": str(fakebin / "nowhere")}},
        reviewer={"command": ["aider"], "output": "codex-jsonl"}))
    code, checks = doctor(cli, home)
    assert checks["agent analyst"]["status"] == "warn"
    assert "budgets don't limit" in checks["agent analyst"]["detail"]
    assert checks["agent reviewer"]["status"] == "warn"
    assert checks["agent developer"]["status"] == "fail"  # the role's own PATH counts


def test_the_tester_agent_is_checked_when_the_test_runner_is_off(
        home: Path, cli: Callable[..., CliResult]) -> None:
    edit(home, lambda c: (c["flags"].update(test_runner_enabled=False),
                          c["agents"].update(tester={"command": ["no-such-tester"]})))
    code, checks = doctor(cli, home)
    assert code == 1 and checks["agent tester"]["status"] == "fail"
    assert "test app" not in checks  # the test command is not what the stage runs


def test_a_config_error_is_a_failed_check_not_a_crash(home: Path,
                                                      cli: Callable[..., CliResult]) -> None:
    (home / "orch.yaml").write_text("max_concurrency: lots\n")
    code, checks = doctor(cli, home)
    assert code == 1
    assert checks["config"]["status"] == "fail"
    assert "orch.yaml:1: max_concurrency" in checks["config"]["detail"]
    assert checks["database"]["status"] == "ok"  # what can still be checked, is
    code, out, err = cli(home, "doctor")
    assert code == 1 and err == "" and out.startswith("[FAIL] config")


def test_a_broken_pipeline_file(home: Path, cli: Callable[..., CliResult]) -> None:
    edit(home, lambda c: c.update(pipeline=str(home / "missing.yaml")))
    code, checks = doctor(cli, home)
    assert code == 1 and checks["pipeline"]["status"] == "fail"


def test_unavailable_repos_fail(home: Path, cli: Callable[..., CliResult],
                                tmp_path: Path) -> None:
    edit(home, lambda c: c["repos"].update(
        gone={"path": str(tmp_path / "gone")},
        plain={"path": str(tmp_path)},
        trunk={"path": str(tmp_path / "repos" / "app"), "default_branch": "trunk"}))
    code, checks = doctor(cli, home)
    assert code == 1
    assert checks["repo app"]["status"] == "ok"
    assert "does not exist" in checks["repo gone"]["detail"]
    assert "not a git repository" in checks["repo plain"]["detail"]
    assert checks["repo trunk"]["status"] == "fail"
    assert "'trunk' does not exist" in checks["repo trunk"]["detail"]


def test_the_default_branch_is_checked(home: Path, cli: Callable[..., CliResult],
                                       tmp_path: Path) -> None:
    run_git(tmp_path / "repos" / "app", "branch", "-m", "main", "trunk")
    checks = doctor(cli, home)[1]
    assert checks["repo app"]["status"] == "fail"


@pytest.mark.parametrize(("command", "needle"), [
    (["no-such-runner", "--all"], "'no-such-runner' not found on PATH"),
    (["python-without-pytest", "-m", "pytest"], "could not run orch's check: ModuleNotFoundError"),
])
def test_the_test_command(command: list[str], needle: str, home: Path,
                          cli: Callable[..., CliResult], fakebin: Path) -> None:
    script(fakebin, "python-without-pytest",
           "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'pytest'\" >&2\nexit 1\n")
    edit(home, lambda c: c["repos"]["app"].update(test={"command": command}))
    code, checks = doctor(cli, home)
    assert code == 1 and checks["test app"]["status"] == "fail"
    assert needle in checks["test app"]["detail"]


def with_staging(home: Path, host: str | None) -> None:
    staging = {"container": "app-staging", "command": ["check", "{commit}"]}
    if host:
        staging["host"] = host
    edit(home, lambda c: c["repos"]["app"].update(staging=staging))


def test_the_ssh_channel_is_tried_with_batch_mode(home: Path, cli: Callable[..., CliResult],
                                                  fakebin: Path, tmp_path: Path) -> None:
    log = tmp_path / "ssh-argv"
    script(fakebin, "ssh", SSH_SCRIPT.format(log=log))
    with_staging(home, "deploy@staging")
    code, checks = doctor(cli, home)
    assert code == 0 and checks["staging app"]["status"] == "ok"
    assert log.read_text().splitlines() == ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                                            "deploy@staging", "true"]


@pytest.mark.parametrize(("mode", "outcome"), [("denied", "permanent-env"),
                                               ("refused", "transient-infra")])
def test_a_broken_ssh_channel_fails(mode: str, outcome: str, home: Path,
                                    cli: Callable[..., CliResult], fakebin: Path,
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script(fakebin, "ssh", SSH_SCRIPT.format(log=tmp_path / "ssh-argv"))
    monkeypatch.setenv("FAKE_SSH", mode)
    with_staging(home, "deploy@staging")
    code, checks = doctor(cli, home)
    assert code == 1 and checks["staging app"]["status"] == "fail"
    assert checks["staging app"]["detail"].startswith(f"ssh deploy@staging: {outcome}")


def test_without_ssh_installed(home: Path, cli: Callable[..., CliResult]) -> None:
    with_staging(home, "deploy@staging")
    checks = doctor(cli, home)[1]
    assert checks["staging app"]["status"] == "fail"
    assert "permanent-env" in checks["staging app"]["detail"]


def test_docker_here_when_there_is_no_host(home: Path, cli: Callable[..., CliResult],
                                           fakebin: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with_staging(home, None)
    checks = doctor(cli, home)[1]
    assert checks["staging app"]["status"] == "fail"
    assert "'docker' not found on PATH" in checks["staging app"]["detail"]
    script(fakebin, "docker", "#!/bin/sh\nexit 0\n")
    assert doctor(cli, home)[1]["staging app"]["status"] == "ok"
    # exec_host_side off: a configured host is not used, docker runs here
    with_staging(home, "deploy@staging")
    monkeypatch.setenv("ORCH_STAGING_RUNNER_EXEC_HOST_SIDE", "false")
    assert doctor(cli, home)[1]["staging app"]["detail"].endswith("/docker")


def test_no_database_is_a_failure_and_is_not_created(tmp_path: Path,
                                                     cli: Callable[..., CliResult],
                                                     fakebin: Path) -> None:
    empty = tmp_path / "empty-home"
    code, checks = doctor(cli, empty)
    assert code == 1
    assert checks["config"]["status"] == "warn" and "run orch init" in checks["config"]["detail"]
    assert checks["database"]["status"] == "fail" and "tick" not in checks
    assert not empty.exists()


def test_a_corrupt_database(home: Path, cli: Callable[..., CliResult]) -> None:
    (home / "orch.db").write_bytes(b"this is not a database" * 300)
    for suffix in ("-wal", "-shm"):
        (home / f"orch.db{suffix}").unlink(missing_ok=True)
    code, checks = doctor(cli, home)
    assert code == 1 and checks["database"]["status"] == "fail"
    assert "tick" not in checks


def test_a_database_newer_than_this_orch(home: Path, cli: Callable[..., CliResult]) -> None:
    with sqlite3.connect(home / "orch.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    code, checks = doctor(cli, home)
    assert code == 1 and "newer than this orch" in checks["database"]["detail"]
    with sqlite3.connect(home / "orch.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99  # doctor only reads
