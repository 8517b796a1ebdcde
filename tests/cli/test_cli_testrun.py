"""`orch test-run` on small real pytest projects made in tmp_path (SPEC section 8).

Through the CLI's error boundary in-process (`orch.cli.run`), once through the
installed console script, and against a real tick's testing stage: for the
same tree, CI and the pipeline must give the same verdict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from support.cli import CliResult, orch_script
from support.env import keep_env
from support.git import run_git

from orch.artifacts import TEST_REPORT_FILE, read_document

PASSING = {"tests/test_ok.py": "def test_one():\n    pass\n\n\ndef test_two():\n    pass\n"}
FAILING = {"tests/test_bad.py": "def test_sum():\n    assert 1 + 1 == 3, 'math broke'\n"}
HANGING = {"tests/test_hang.py": "import time\n\n\ndef test_forever():\n    time.sleep(600)\n"}
ALIGNED = {"PASS": ("passed", 0), "FAIL": ("failed", 1), "DEFER": ("deferred", 75)}


def project(root: Path, *layers: dict[str, str]) -> Path:
    """A directory with the given files ({relative path: text})."""
    root.mkdir(parents=True, exist_ok=True)
    for files in layers:
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture(autouse=True)
def fast_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The projects' pytest runs load no third-party plugins (much faster to start)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def python_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python` on PATH is this interpreter (the defaults run `python -m pytest -q`)."""
    monkeypatch.setenv("PATH", f"{python_bin(tmp_path)}{os.pathsep}{os.environ['PATH']}")


def python_bin(tmp_path: Path) -> Path:
    """A directory whose `python` runs this interpreter, its virtualenv included.

    A script, not a symlink: a symlink to a venv's python outside the venv's bin/
    is resolved to the base interpreter, which lacks the venv's packages.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "python"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
    script.chmod(0o755)
    return bin_dir


@pytest.fixture
def nohome(tmp_path: Path) -> Path:
    """A home that does not exist: test-run must work without it and not create it."""
    return tmp_path / "no-home"


def json_run(cli: Callable[..., CliResult], home: Path | None, *args: str
             ) -> tuple[int, dict]:
    """`orch test-run ARGS --json`: (exit code, the front matter), checked for alignment."""
    code, out, err = cli(home, "test-run", *args, "--json")
    assert "Traceback" not in err
    meta = json.loads(out)
    status, exit_status = ALIGNED[meta["result"]]
    assert meta["status"] == status and code == exit_status, (meta, err)
    return code, meta


# --- verdicts and exit statuses ---------------------------------------------------------


def test_pass_with_the_defaults_needs_no_home(tmp_path: Path, nohome: Path,
                                              cli: Callable[..., CliResult],
                                              python_on_path: None) -> None:
    tree = project(tmp_path / "app", PASSING)
    code, meta = json_run(cli, nohome, str(tree))
    assert code == 0 and meta["result"] == "PASS" and meta["reason"] == "passed"
    assert meta["tests"] == {"passed": 2, "failed": 0, "errors": 0, "skipped": 0}
    assert meta["command"] == "python -m pytest -q"
    assert not nohome.exists()  # no home, no orch.yaml, no database made


def test_human_output_of_a_pass(tmp_path: Path, nohome: Path, cli: Callable[..., CliResult],
                                python_on_path: None) -> None:
    tree = project(tmp_path / "app", PASSING)
    code, out, err = cli(nohome, "test-run", str(tree))
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("PASS (passed): python -m pytest -q, exit 0")
    assert "2 passed" in first and "detected: " in out and "report:" not in out


def test_the_current_directory_is_the_default_path(tmp_path: Path, nohome: Path,
                                                   cli: Callable[..., CliResult],
                                                   python_on_path: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project(tmp_path / "app", PASSING, FAILING))
    code, meta = json_run(cli, nohome)
    assert code == 1 and meta["tests"]["failed"] == 1


def test_a_failing_test_is_exit_1_and_the_report_names_it(
        tmp_path: Path, nohome: Path, cli: Callable[..., CliResult],
        python_on_path: None) -> None:
    tree = project(tmp_path / "app", PASSING, FAILING)
    report = tmp_path / "out" / "report.md"
    code, meta = json_run(cli, nohome, str(tree), "--report", str(report))
    assert code == 1 and meta["reason"] == "tests-failed" and meta["exit_code"] == 1
    assert meta["tests"] == {"passed": 2, "failed": 1, "errors": 0, "skipped": 0}
    document = read_document(report)
    assert document.meta == meta
    assert "test_bad.py" in document.body and "math broke" in document.body


def test_human_output_of_a_fail_shows_the_failing_tests(
        tmp_path: Path, nohome: Path, cli: Callable[..., CliResult],
        python_on_path: None) -> None:
    tree = project(tmp_path / "app", FAILING)
    code, out, _ = cli(nohome, "test-run", str(tree))
    assert code == 1
    assert out.startswith("FAIL (tests-failed)")
    assert "## Failing tests" in out and "test_sum" in out and "## Output" in out


def test_no_tests_is_a_fail(tmp_path: Path, nohome: Path, cli: Callable[..., CliResult],
                            python_on_path: None) -> None:
    tree = project(tmp_path / "app", {"README.md": "nothing to test\n"})
    code, meta = json_run(cli, nohome, str(tree))
    assert code == 1 and meta["reason"] == "no-tests" and meta["exit_code"] == 5


def test_a_pytest_usage_error_is_a_defer(tmp_path: Path, nohome: Path,
                                         cli: Callable[..., CliResult],
                                         python_on_path: None) -> None:
    tree = project(tmp_path / "app", PASSING)
    code, meta = json_run(cli, nohome, str(tree), "--target", "no/such/dir")
    assert code == 75 and meta["result"] == "DEFER" and meta["reason"] == "tool-error"
    assert meta["exit_code"] == 4
    assert meta["command"] == "python -m pytest -q no/such/dir"


def test_a_timeout_kills_the_run_and_fails(tmp_path: Path, nohome: Path,
                                           cli: Callable[..., CliResult],
                                           python_on_path: None) -> None:
    tree = project(tmp_path / "app", HANGING)
    code, meta = json_run(cli, nohome, str(tree), "--timeout", "2")
    assert code == 1 and meta["reason"] == "timeout"
    assert 2 <= meta["duration_s"] < 30


@pytest.mark.parametrize(("args", "needle"), [
    (("{tmp}/missing",), "no such directory"),
    (("{tmp}/a-file",), "not a directory"),
    (("{tmp}", "--timeout", "0"), "--timeout"),
    (("{tmp}", "--report", "{tmp}"), "is a directory"),
    (("{tmp}", "--timeout", "soon"), "--timeout"),
])
def test_bad_input_is_a_usage_error(args: tuple[str, ...], needle: str, tmp_path: Path,
                                    nohome: Path, cli: Callable[..., CliResult]) -> None:
    (tmp_path / "a-file").write_text("x")
    argv = [arg.format(tmp=tmp_path) for arg in args]
    code, out, err = cli(nohome, "test-run", *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and needle in err and "Traceback" not in err
    assert not nohome.exists()


# --- settings from a home -----------------------------------------------------------


def make_home(tmp_path: Path, cli: Callable[..., CliResult], repo: Path,
              test: dict | None = None, pipeline: Path | None = None) -> Path:
    """A home with repo `app` at REPO (its `test` section given), fast timings."""
    home = tmp_path / "home"
    code, _, err = cli(home, "init", "--repo", f"app={repo}")
    assert code == 0, err
    config = yaml.safe_load((home / "orch.yaml").read_text())
    config.update({"heartbeat_interval_s": 1, "heartbeat_timeout_s": 5, "retry_backoff_s": 0,
                   "cancel_grace_s": 1})
    if test is not None:
        config["repos"]["app"]["test"] = test
    if pipeline is not None:
        config["pipeline"] = str(pipeline)
    (home / "orch.yaml").write_text(yaml.safe_dump(config))
    return home


def test_a_home_naming_the_repo_at_path_applies_its_test_section(
        tmp_path: Path, nohome: Path, cli: Callable[..., CliResult],
        python_on_path: None) -> None:
    tree = project(tmp_path / "app", PASSING, {"slow/test_bad.py": FAILING["tests/test_bad.py"]})
    home = make_home(tmp_path, cli, tree, {"command": [sys.executable, "-m", "pytest", "-q"],
                                           "target": "tests", "timeout_s": 60})
    code, meta = json_run(cli, home, str(tree))
    assert code == 0 and meta["tests"]["passed"] == 2
    assert meta["command"] == f"{sys.executable} -m pytest -q tests"
    code, out, _ = cli(home, "test-run", str(tree))
    assert code == 0 and f"repo app in {home / 'orch.yaml'}" in out
    # --target replaces the section's target; '' drops it
    code, meta = json_run(cli, home, str(tree), "--target", "slow")
    assert code == 1 and meta["command"].endswith("-q slow")
    code, meta = json_run(cli, home, str(tree), "--target", "")
    assert code == 1 and meta["tests"] == {"passed": 2, "failed": 1, "errors": 0, "skipped": 0}
    # the same tree outside the home's config: the defaults (no target: the failure counts)
    code, meta = json_run(cli, nohome, str(tree))
    assert code == 1 and meta["command"] == "python -m pytest -q"


def test_the_repo_section_timeout_and_smoke_apply(tmp_path: Path,
                                                  cli: Callable[..., CliResult]) -> None:
    tree = project(tmp_path / "app", PASSING)
    home = make_home(tmp_path, cli, tree, {
        "command": [sys.executable, "-m", "pytest", "-q"], "timeout_s": 60,
        "smoke": [[sys.executable, "-c", "raise SystemExit(3)"]]})
    code, meta = json_run(cli, home, str(tree))
    assert code == 1 and meta["reason"] == "smoke-failed" and meta["exit_code"] == 0


def test_task_option_errors(tmp_path: Path, nohome: Path, cli: Callable[..., CliResult],
                            git_repo: Callable[..., Path]) -> None:
    code, _, err = cli(nohome, "test-run", "--task", "1")
    assert code == 3 and "no such task: 1" in err
    assert not nohome.exists()  # no database created for the look-up
    home = make_home(tmp_path, cli, git_repo("app"))
    code, _, err = cli(home, "test-run", "--task", "7")
    assert code == 3 and err.strip() == "error: no such task: 7"
    code, out, _ = cli(home, "task", "add", "--repo", "app", "--title", "Not started")
    assert code == 0
    code, _, err = cli(home, "test-run", "--task", out.strip())
    assert code == 2 and "has no worktree" in err


# --- CI and the pipeline agree ------------------------------------------------------------


def pipeline_file(tmp_path: Path) -> Path:
    """testing, then a human stage (so a FAIL has an on_fail stage to go back to)."""
    path = tmp_path / "pipeline.yaml"
    path.write_text("stages:\n"
                    "  - {name: testing, runner: test-runner, on_fail: approval}\n"
                    "  - {name: approval, runner: human}\n")
    return path


@pytest.mark.parametrize(("files", "verdict"), [
    ({**PASSING}, "PASS"),
    ({**PASSING, **FAILING}, "FAIL"),
    ({"README.md": "no tests here\n"}, "FAIL"),
])
def test_test_run_and_the_testing_stage_give_the_same_verdict(
        files: dict[str, str], verdict: str, tmp_path: Path,
        cli: Callable[..., CliResult], git_repo: Callable[..., Path]) -> None:
    repo = project(git_repo("app"), files)
    run_git(repo, "add", "--all")
    run_git(repo, "commit", "-q", "-m", "the tree under test")
    home = make_home(tmp_path, cli, repo, {"command": [sys.executable, "-m", "pytest", "-q"],
                                           "target": ".", "timeout_s": 60},
                     pipeline=pipeline_file(tmp_path))
    code, out, err = cli(home, "task", "add", "--repo", "app", "--title", "Check")
    task_id = out.strip()
    code, out, err = cli(home, "tick", "--json")
    assert code == 0 and json.loads(out)["claimed"], err
    code, out, _ = cli(home, "task", "show", task_id, "--json")
    detail = json.loads(out)
    job = detail["jobs"][0]
    assert job["runner"] == "test-runner" and job["verdict"] == verdict
    pipeline_meta = read_document(home / "tasks" / task_id / TEST_REPORT_FILE).meta
    assert pipeline_meta["result"] == verdict

    worktree = home / "worktrees" / "app" / task_id
    code, meta = json_run(cli, home, "--task", task_id)
    assert meta["result"] == verdict and meta["reason"] == pipeline_meta["reason"]
    assert meta["command"] == pipeline_meta["command"] and meta["tests"] == pipeline_meta["tests"]
    assert read_document(home / "tasks" / task_id / TEST_REPORT_FILE).meta == meta
    for path in (worktree, repo):  # the worktree and the repo itself: the repo's settings
        code, meta = json_run(cli, home, str(path))
        assert meta["result"] == verdict and meta["command"] == pipeline_meta["command"]


# --- the installed console script --------------------------------------------------------


def test_the_console_script_exit_status_and_json(tmp_path: Path) -> None:
    tree = project(tmp_path / "app", PASSING, FAILING)
    bin_dir = python_bin(tmp_path)
    env = {key: value for key, value in os.environ.items() if keep_env(key)}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", ORCH_HOME=str(tmp_path / "none"),
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    done = subprocess.run([orch_script(), "test-run", str(tree), "--json"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    meta = json.loads(done.stdout)
    assert meta["result"] == "FAIL" and meta["reason"] == "tests-failed"
    assert not (tmp_path / "none").exists()
    done = subprocess.run([orch_script(), "test-run", str(tmp_path / "missing")], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
