"""The test-runner against small real pytest projects made in tmp_path (SPEC section 8)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from orch import procs
from orch.artifacts import TEST_REPORT_FILE, read_document
from orch.procs.marks import adhoc_mark
from orch.runners.pytest_argv import junitxml_disabled
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


def run(workdir: Path, mark: str | None = None, **settings) -> tuple[dict, str]:
    """Run the tests with the report written, check it is consistent, return (meta, body)."""
    settings.setdefault("command", PYTEST)
    settings.setdefault("timeout_s", 60)
    report = workdir.parent / f"{workdir.name}-report" / TEST_REPORT_FILE
    outcome = run_tests(workdir, TestSettings(**settings), report_path=report, grace_s=0.5,
                        mark=mark)
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


def test_a_conftest_that_raises_at_import_is_the_codes_fault(tmp_path):
    workdir = project(tmp_path / "repo", {
        **PASSING, "conftest.py": "raise RuntimeError('boom in conftest')\n"})
    meta, body = run(workdir)
    # pytest exits 4 ("ImportError while loading conftest"): the developer broke the code
    assert meta["exit_code"] == 4
    assert (meta["result"], meta["reason"]) == ("FAIL", "collection-error")
    assert "boom in conftest" in body


def test_a_conftest_with_an_import_error_is_the_codes_fault(tmp_path):
    workdir = project(tmp_path / "repo", {**PASSING, "conftest.py": "import no_such_module_x\n"})
    meta, _ = run(workdir)
    assert (meta["result"], meta["reason"], meta["exit_code"]) == ("FAIL", "collection-error", 4)


def test_a_syntax_error_in_a_test_module_is_exit_2_and_the_codes_fault(tmp_path):
    workdir = project(tmp_path / "repo", {**PASSING, "tests/test_syntax.py": "def test_x(:\n"})
    meta, body = run(workdir)
    assert meta["exit_code"] == 2
    assert (meta["result"], meta["reason"]) == ("FAIL", "collection-error")
    assert meta["tests"]["errors"] == 1
    assert "test_syntax (error): collection failure" in body


def test_a_syntax_error_is_the_codes_fault_without_junit_too(tmp_path):
    workdir = project(tmp_path / "repo", {**PASSING, "tests/test_syntax.py": "def test_x(:\n"})
    meta, _ = run(workdir, command=(*PYTEST, "-p", "no:junitxml"))
    assert (meta["result"], meta["reason"], meta["exit_code"]) == ("FAIL", "collection-error", 2)
    assert "tests" not in meta


def test_x_under_xdist_after_a_failure_is_the_codes_fault(tmp_path):
    pytest.importorskip("xdist", reason="pip install -e '.[test]' (pytest-xdist)")
    workdir = project(tmp_path / "repo", {
        "test_many.py": "".join(f"def test_{i}(): assert {i} != 3\n" for i in range(12))})
    meta, _ = run(workdir, command=(*PYTEST, "-n", "2", "-x"))
    assert meta["exit_code"] in (1, 2)  # 2: xdist's -x stops the workers (an interruption)
    assert (meta["result"], meta["reason"]) == ("FAIL", "tests-failed")
    assert meta["tests"]["failed"] >= 1


def test_no_junitxml_is_respected(tmp_path):
    workdir = project(tmp_path / "repo", PASSING)
    meta, _ = run(workdir, command=(*PYTEST, "-p", "no:junitxml"))
    assert (meta["result"], meta["reason"], meta["exit_code"]) == ("PASS", "passed", 0)
    assert "tests" not in meta and "junitxml" not in meta["command"].replace("no:junitxml", "")
    failing = project(tmp_path / "bad", {"test_bad.py": "def test_x(): assert 0\n"})
    meta, _ = run(failing, command=(*PYTEST, "-pno:junitxml"))
    assert (meta["result"], meta["reason"], meta["exit_code"]) == ("FAIL", "tests-failed", 1)


def test_an_interpreter_without_pytest_defers(tmp_path):
    venv_python = tmp_path / "venv" / "bin" / "python"
    import venv

    venv.create(tmp_path / "venv", with_pip=False)
    workdir = project(tmp_path / "repo", PASSING)
    meta, body = run(workdir, command=(str(venv_python), "-I", "-m", "pytest", "-q"))
    assert (meta["result"], meta["reason"], meta["exit_code"]) == ("DEFER", "tool-error", 1)
    assert "No module named pytest" in body


def test_a_server_a_test_starts_in_its_own_session_does_not_outlive_the_run(tmp_path):
    pid_file = tmp_path / "server.pid"
    workdir = project(tmp_path / "repo", {
        "test_srv.py": (
            "import subprocess\n"
            "def test_starts_a_server():\n"
            "    server = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
            f"    open({str(pid_file)!r}, 'w').write(str(server.pid))\n"
        ),
    })
    meta, _ = run(workdir, mark=adhoc_mark())  # orch test-run's and every run's
    assert meta["result"] == "PASS"
    server = int(pid_file.read_text())
    assert not Path(f"/proc/{server}").exists() or \
        Path(f"/proc/{server}/stat").read_text().split(")")[1].split()[0] == "Z"


def test_live_output_comes_while_the_tests_run(tmp_path):
    workdir = project(tmp_path / "repo", {
        "test_slow.py": "import time\ndef test_a(): pass\ndef test_b(): time.sleep(3)\n"})
    seen: list[tuple[float, bytes]] = []
    started = time.monotonic()
    run_tests(workdir, TestSettings(command=(sys.executable, "-m", "pytest", "-v")),
              report_path=None,
              echo=lambda chunk: seen.append((time.monotonic() - started, chunk)))
    first_pass = next(at for at, chunk in seen if b"PASSED" in chunk)  # test_a's
    assert first_pass < seen[-1][0] - 2.0  # shown before the slow test ended


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
    assert is_pytest_command(["python3", "-X", "dev", "-W", "error", "-m", "pytest"])
    assert is_pytest_command(["python", "-I", "-mpytest"])
    assert is_pytest_command(["uv", "run", "pytest", "-q"])
    assert is_pytest_command(["uv", "run", "--frozen", "--with", "pytest-xdist", "python",
                              "-m", "pytest"])
    assert is_pytest_command(["uv", "run", "-m", "pytest"])
    assert not is_pytest_command(["uv", "run", "python", "manage.py", "test"])
    assert not is_pytest_command(["python", "-c", "import pytest"])
    assert is_pytest_command(["pytest", "-q"])
    assert is_pytest_command(["/venv/bin/py.test"])
    assert is_pytest_command(["python", "-m", "pytest"])
    assert is_pytest_command([sys.executable, "-m", "pytest", "-x"])
    assert is_pytest_command(("python3.11", "-m", "pytest"))
    assert not is_pytest_command(["python", "-m", "unittest"])
    assert not is_pytest_command(["make", "test"])
    assert not is_pytest_command(["python", "pytest"])
    assert not is_pytest_command([])


def test_junitxml_disabled_in_argv_or_addopts():
    assert junitxml_disabled(["pytest", "-p", "no:junitxml"])
    assert junitxml_disabled(["uv", "run", "pytest", "-pno:junitxml"])
    assert junitxml_disabled(["pytest"], {"PYTEST_ADDOPTS": "-q -p no:junitxml"})
    assert not junitxml_disabled(["pytest", "-p", "no:cacheprovider"])
    assert not junitxml_disabled(["pytest"], {"PYTEST_ADDOPTS": "'unbalanced"})


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
