"""The test-runner against small real pytest projects made in tmp_path (SPEC section 8)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from orch import procs
from orch.artifacts import TEST_REPORT_FILE, read_document
from orch.runners.test_runner import (
    TestSettings,
    is_pytest_command,
    parse_junit,
    run_tests,
)

PYTEST = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider")
META_KEYS = ["result", "status", "exit_code", "reason", "tests", "duration_s", "command",
             "started_at", "finished_at"]
ALIGNED = {"PASS": ("passed", 0), "FAIL": ("failed", 1), "DEFER": ("deferred", 75)}


def project(root: Path, files: dict[str, str]) -> Path:
    """Write a small project: {relative path: source}."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def run(workdir: Path, **settings) -> tuple[dict, str]:
    """Run the tests with the report written, check it is consistent, return (meta, body)."""
    settings.setdefault("command", PYTEST)
    settings.setdefault("timeout_s", 60)
    report = workdir.parent / f"{workdir.name}-report" / TEST_REPORT_FILE
    outcome = run_tests(workdir, TestSettings(**settings), report_path=report, grace_s=0.5)
    document = read_document(report)
    assert document.meta == outcome.meta
    assert document.body.rstrip("\n") == outcome.body.rstrip("\n")
    status, exit_status = ALIGNED[outcome.meta["result"]]
    assert outcome.meta["status"] == status
    assert outcome.exit_status == exit_status
    return outcome.meta, outcome.body


PASSING = {
    "tests/test_ok.py": (
        "import pytest\n"
        "def test_one(): pass\n"
        "def test_two(): pass\n"
        "@pytest.mark.skip(reason='later')\n"
        "def test_skipped(): pass\n"
    ),
}


def test_pass_counts_the_tests_and_appends_the_target(tmp_path):
    workdir = project(tmp_path / "repo", {**PASSING, "other/test_no.py": "def test_x(): 1/0\n"})
    meta, body = run(workdir, target="tests")
    assert list(meta) == META_KEYS
    assert meta["result"] == "PASS" and meta["reason"] == "passed" and meta["exit_code"] == 0
    assert meta["tests"] == {"passed": 2, "failed": 0, "errors": 0, "skipped": 1}
    assert meta["command"].endswith("-m pytest -q -p no:cacheprovider tests")
    assert "junitxml" not in meta["command"]
    assert meta["started_at"] <= meta["finished_at"]
    assert meta["duration_s"] > 0
    assert "**PASS**" in body and "2 passed" in body
    assert not list(workdir.rglob("*.xml"))  # the JUnit file lived outside the tree


def test_a_failing_test_is_tests_failed_and_named(tmp_path):
    workdir = project(tmp_path / "repo", {
        **PASSING,
        "tests/test_bad.py": (
            "class TestMath:\n"
            "    def test_sum(self):\n"
            "        assert 1 + 1 == 3, 'arithmetic is broken'\n"
        ),
    })
    meta, body = run(workdir)
    assert (meta["result"], meta["reason"], meta["exit_code"]) == ("FAIL", "tests-failed", 1)
    assert meta["tests"] == {"passed": 2, "failed": 1, "errors": 0, "skipped": 1}
    assert "## Failing tests" in body
    named = "tests.test_bad.TestMath::test_sum (failed): AssertionError: arithmetic is broken"
    assert named in body
    assert "1 failed" in body.split("## Output")[1]  # the output tail is there too


def test_an_error_in_a_fixture_counts_as_an_error(tmp_path):
    workdir = project(tmp_path / "repo", {
        "test_fix.py": (
            "import pytest\n"
            "@pytest.fixture\n"
            "def broken(): raise OSError('no disk')\n"
            "def test_uses(broken): pass\n"
            "def test_fine(): pass\n"
        ),
    })
    meta, body = run(workdir)
    assert (meta["result"], meta["reason"]) == ("FAIL", "tests-failed")
    assert meta["tests"] == {"passed": 1, "failed": 0, "errors": 1, "skipped": 0}
    assert "test_fix::test_uses (error)" in body


def test_no_tests(tmp_path):
    workdir = project(tmp_path / "repo", {"README.md": "nothing to test\n"})
    meta, _ = run(workdir)
    assert (meta["result"], meta["reason"], meta["exit_code"]) == ("FAIL", "no-tests", 5)
    assert meta["tests"] == {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}


def test_a_usage_error_is_a_tool_error(tmp_path):
    workdir = project(tmp_path / "repo", PASSING)
    meta, _ = run(workdir, command=(*PYTEST, "--no-such-option"))
    assert (meta["result"], meta["reason"], meta["exit_code"]) == ("DEFER", "tool-error", 4)


def test_a_conftest_that_raises_at_import(tmp_path):
    workdir = project(tmp_path / "repo", {
        **PASSING, "conftest.py": "raise RuntimeError('boom in conftest')\n"})
    meta, body = run(workdir)
    # pytest reports a broken conftest as a usage error: exit 4, which SPEC maps to DEFER.
    assert meta["exit_code"] == 4
    assert (meta["result"], meta["reason"]) == ("DEFER", "tool-error")
    assert "boom in conftest" in body


def test_a_collection_error_is_exit_2_and_a_tool_error(tmp_path):
    workdir = project(tmp_path / "repo", {**PASSING, "tests/test_syntax.py": "def test_x(:\n"})
    meta, body = run(workdir)
    assert meta["exit_code"] == 2
    assert (meta["result"], meta["reason"]) == ("DEFER", "tool-error")
    assert meta["tests"]["errors"] == 1
    assert "test_syntax (error): collection failure" in body


def test_a_hanging_test_times_out_and_its_grandchild_dies(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    workdir = project(tmp_path / "repo", {
        "test_hang.py": (
            "import subprocess, time\n"
            "def test_hang():\n"
            "    child = subprocess.Popen(['sleep', '300'])\n"
            f"    open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
            "    time.sleep(300)\n"
        ),
    })
    started = time.monotonic()
    meta, body = run(workdir, timeout_s=3)
    assert time.monotonic() - started < 10
    assert (meta["result"], meta["reason"]) == ("FAIL", "timeout")
    assert meta["exit_code"] < 0  # the return code seen: killed by a signal
    assert "timed out" in body
    grandchild = int(pid_file.read_text())
    assert procs.liveness(grandchild, procs.start_ticks(grandchild)) != "alive"


def test_a_failing_smoke_command_fails_a_pass(tmp_path):
    workdir = project(tmp_path / "repo", PASSING)
    smoke = (("true",), ("sh", "-c", "echo smoke broke >&2; exit 3"), ("touch", "never"))
    meta, body = run(workdir, smoke=smoke)
    assert (meta["result"], meta["reason"], meta["exit_code"]) == ("FAIL", "smoke-failed", 0)
    assert "exited 3" in body and "smoke broke" in body
    assert not (workdir / "never").exists()  # stops at the first failure


@pytest.mark.parametrize("smoke", [("no-such-smoke-cmd",), ("sleep", "30")])
def test_a_smoke_command_that_cannot_start_or_hangs_fails(tmp_path, smoke):
    workdir = project(tmp_path / "repo", PASSING)
    meta, _ = run(workdir, command=("true",), smoke=(smoke,), timeout_s=1)
    assert (meta["result"], meta["reason"], meta["exit_code"]) == ("FAIL", "smoke-failed", 0)


def test_smoke_commands_that_pass_keep_the_pass(tmp_path):
    workdir = project(tmp_path / "repo", PASSING)
    meta, _ = run(workdir, smoke=(("true",), ("sh", "-c", "exit 0")))
    assert (meta["result"], meta["reason"]) == ("PASS", "passed")


def test_smoke_is_not_run_after_a_failure(tmp_path):
    workdir = project(tmp_path / "repo", {"test_bad.py": "def test_x(): assert 0\n"})
    meta, body = run(workdir, smoke=(("touch", "ran"),))
    assert meta["reason"] == "tests-failed"
    assert not (workdir / "ran").exists() and "Smoke" not in body


@pytest.mark.parametrize(("argv", "result", "reason", "exit_code"), [
    (("true",), "PASS", "passed", 0),
    (("false",), "FAIL", "command-failed", 1),
    (("sh", "-c", "kill -9 $$"), "FAIL", "command-failed", -9),
    (("sleep", "30"), "FAIL", "timeout", -15),
    (("no-such-test-cmd",), "DEFER", "tool-error", None),
])
def test_non_pytest_commands(tmp_path, argv, result, reason, exit_code):
    workdir = project(tmp_path / "repo", PASSING)
    meta, _ = run(workdir, command=argv, timeout_s=1)
    assert "tests" not in meta
    assert (meta["result"], meta["reason"], meta["exit_code"]) == (result, reason, exit_code)


def test_a_pytest_that_cannot_start_defers(tmp_path):
    workdir = project(tmp_path / "repo", PASSING)
    meta, body = run(workdir, command=("pytest-not-installed-here", "-q"))
    # The basename is not 'pytest', so it is judged as any command: cannot start -> DEFER.
    assert (meta["result"], meta["reason"], meta["exit_code"]) == ("DEFER", "tool-error", None)
    assert "could not start" in body
    fake_pytest = tmp_path / "bin" / "pytest"
    meta, _ = run(workdir, command=(str(fake_pytest),))
    assert (meta["result"], meta["reason"], meta["exit_code"]) == ("DEFER", "tool-error", None)
    assert meta["tests"] == {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}


def test_a_pytest_killed_by_a_signal_defers(tmp_path):
    workdir = project(tmp_path / "repo", {
        "test_die.py": "import os, signal\ndef test_x(): os.kill(os.getpid(), signal.SIGKILL)\n"})
    meta, _ = run(workdir)
    assert (meta["result"], meta["reason"], meta["exit_code"]) == ("DEFER", "tool-error", -9)


def test_without_a_report_path_and_with_callbacks(tmp_path):
    workdir = project(tmp_path / "repo", PASSING)
    groups: list[tuple[int, int]] = []
    log = tmp_path / "logs" / "run.log"
    outcome = run_tests(workdir, TestSettings(command=PYTEST, smoke=(("echo", "smoked"),)),
                        report_path=None, log_path=log,
                        on_start=lambda pg, ticks: groups.append((pg, ticks)))
    assert outcome.exit_status == 0
    assert len(groups) == 2  # the test command and the smoke command
    assert "2 passed" in log.read_text() and "smoked" in log.read_text()
    assert not list(tmp_path.rglob(TEST_REPORT_FILE))


def test_is_pytest_command():
    assert is_pytest_command(["pytest", "-q"])
    assert is_pytest_command(["/venv/bin/py.test"])
    assert is_pytest_command(["python", "-m", "pytest"])
    assert is_pytest_command([sys.executable, "-m", "pytest", "-x"])
    assert is_pytest_command(("python3.11", "-m", "pytest"))
    assert not is_pytest_command(["python", "-m", "unittest"])
    assert not is_pytest_command(["make", "test"])
    assert not is_pytest_command(["python", "pytest"])
    assert not is_pytest_command([])


def test_parse_junit_testsuite_root_and_bad_files(tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuite tests="4">'
        '<testcase classname="a.b" name="t1"/>'
        '<testcase classname="a.b" name="t2"><failure message="boom&#10;second">x</failure>'
        '</testcase>'
        '<testcase classname="a.b" name="t3"><error>first line\nsecond</error></testcase>'
        '<testcase classname="a.b" name="t4"><skipped message="later"/></testcase>'
        '</testsuite>')
    counts = parse_junit(xml)
    assert counts.as_meta() == {"passed": 1, "failed": 1, "errors": 1, "skipped": 1}
    assert counts.failures == ["a.b::t2 (failed): boom", "a.b::t3 (error): first line"]
    xml.write_text("<testsuites><testsuite>")
    assert parse_junit(xml).problem and parse_junit(xml).as_meta()["passed"] == 0
    assert parse_junit(tmp_path / "missing.xml").problem == "pytest wrote no JUnit XML"
