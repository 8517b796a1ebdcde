"""The test-runner (SPEC section 8): run the repo's tests, map the result, write the report.

One implementation serves the tick (inline, with heartbeats and the group
recorded on the run) and `orch test-run`, so CI and the pipeline judge alike.
Every process is started through orch.procs.run_in_group, in a new process
group that is killed when the command ends or times out.

The front matter of `13-test-report.md`:

- `result`: PASS, FAIL or DEFER; `status`: passed, failed or deferred, always
  the same verdict as `result`;
- `exit_code`: the test command's return code as Popen reports it (negative N:
  killed by signal N, e.g. at a timeout), or null when it could not start. A
  smoke failure keeps the test command's exit code (0): `reason` says why the
  result is FAIL;
- `reason`: passed, tests-failed, no-tests, timeout, tool-error, smoke-failed,
  or command-failed (a non-pytest command that exited non-zero);
- `tests`: {passed, failed, errors, skipped} counted from the JUnit XML, for
  pytest commands only (zeros when pytest wrote no XML);
- `duration_s`, `command` (the argv run, shell-quoted, without the temporary
  --junitxml option), `started_at`, `finished_at`.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.artifacts import write_document
from orch.model import Verdict
from orch.procs import GroupRun, run_in_group
from orch.timeutil import now_iso

OUTPUT_TAIL_LINES = 60
_STATUS = {Verdict.PASS: "passed", Verdict.FAIL: "failed", Verdict.DEFER: "deferred"}
_EXIT_STATUS = {Verdict.PASS: 0, Verdict.FAIL: 1, Verdict.DEFER: 75}


@dataclass(frozen=True)
class TestSettings:
    """The repo's `test` section, or the defaults."""

    __test__ = False  # not a pytest test class

    command: tuple[str, ...] = ("python", "-m", "pytest", "-q")
    target: str | None = None
    timeout_s: float = 900
    smoke: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class TestOutcome:
    """The report: its front matter (`meta`) and its Markdown body."""

    __test__ = False  # not a pytest test class

    meta: dict[str, Any]
    body: str

    @property
    def verdict(self) -> Verdict:
        """The verdict named by `result`."""
        return Verdict(self.meta["result"])

    @property
    def exit_status(self) -> int:
        """Exit status of `orch test-run`: 0 PASS, 1 FAIL, 75 DEFER."""
        return _EXIT_STATUS[self.verdict]


@dataclass
class TestCounts:
    """Test counts from the JUnit XML and the tests that did not pass."""

    __test__ = False  # not a pytest test class

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)  # "classname::name: first line"
    problem: str | None = None  # why the XML could not be read, if it could not

    def as_meta(self) -> dict[str, int]:
        return {"passed": self.passed, "failed": self.failed, "errors": self.errors,
                "skipped": self.skipped}


@dataclass(frozen=True)
class _Verdict:
    verdict: Verdict
    reason: str


# --- commands -------------------------------------------------------------------


def is_pytest_command(argv: list[str] | tuple[str, ...]) -> bool:
    """True for `pytest ...`, `py.test ...` or `<python*> -m pytest ...` (any path to them)."""
    if not argv:
        return False
    program = Path(argv[0]).name
    if program in ("pytest", "py.test"):
        return True
    return program.startswith("python") and list(argv[1:3]) == ["-m", "pytest"]


def build_argv(settings: TestSettings, junit_path: Path | None) -> list[str]:
    """The argv to run: the command, `--junitxml` for pytest, then the target when set."""
    argv = list(settings.command)
    if junit_path is not None:
        argv.append(f"--junitxml={junit_path}")
    if settings.target:
        argv.append(settings.target)
    return argv


def display_command(settings: TestSettings) -> str:
    """The command as a shell-quoted line, as the report shows it."""
    return shlex.join(build_argv(settings, None))


# --- JUnit XML ------------------------------------------------------------------


def parse_junit(path: Path) -> TestCounts:
    """Count the test cases of a JUnit XML file (<testsuites> or <testsuite> root).

    Each <testcase> counts once: failed when it has a <failure>, an error when
    it has an <error> (collection errors included), skipped when it has a
    <skipped>, passed otherwise. A missing or malformed file gives zeros and
    `problem`.
    """
    counts = TestCounts()
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        counts.problem = "pytest wrote no JUnit XML"
        return counts
    except (ET.ParseError, OSError) as exc:
        counts.problem = f"the JUnit XML is unreadable: {exc}"
        return counts
    for case in root.iter("testcase"):
        _count_case(counts, case)
    return counts


def _count_case(counts: TestCounts, case: ET.Element) -> None:
    failure, error = case.find("failure"), case.find("error")
    if failure is not None or error is not None:
        if failure is not None:
            counts.failed += 1
        else:
            counts.errors += 1
        counts.failures.append(_describe_case(case, failure if failure is not None else error))
    elif case.find("skipped") is not None:
        counts.skipped += 1
    else:
        counts.passed += 1


def _describe_case(case: ET.Element, problem: ET.Element | None) -> str:
    """`classname::name: first line of the message`."""
    name = "::".join(part for part in (case.get("classname"), case.get("name")) if part)
    message = ""
    if problem is not None:
        message = problem.get("message") or (problem.text or "")
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    kind = "error" if problem is not None and problem.tag == "error" else "failed"
    return f"{name or '?'} ({kind}): {first}" if first else f"{name or '?'} ({kind})"


# --- mapping --------------------------------------------------------------------


def pytest_verdict(run: GroupRun) -> _Verdict:
    """SPEC section 8 for pytest: 0 PASS; 1 tests-failed; 5 no-tests; timeout FAIL; rest DEFER."""
    if run.start_error is not None or run.exit_code is None:
        return _Verdict(Verdict.DEFER, "tool-error")
    if run.timed_out:
        return _Verdict(Verdict.FAIL, "timeout")
    mapping = {0: _Verdict(Verdict.PASS, "passed"),
               1: _Verdict(Verdict.FAIL, "tests-failed"),
               5: _Verdict(Verdict.FAIL, "no-tests")}
    return mapping.get(run.exit_code, _Verdict(Verdict.DEFER, "tool-error"))


def command_verdict(run: GroupRun) -> _Verdict:
    """Any other command: 0 PASS; timeout or any other exit FAIL; cannot start DEFER."""
    if run.start_error is not None or run.exit_code is None:
        return _Verdict(Verdict.DEFER, "tool-error")
    if run.timed_out:
        return _Verdict(Verdict.FAIL, "timeout")
    if run.exit_code == 0:
        return _Verdict(Verdict.PASS, "passed")
    return _Verdict(Verdict.FAIL, "command-failed")


def smoke_failed(run: GroupRun) -> bool:
    """A smoke command fails unless it started, finished in time and exited 0."""
    return run.start_error is not None or run.timed_out or run.exit_code != 0


# --- running ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Runner:
    """The options shared by the test command and the smoke commands."""

    workdir: Path
    env: dict[str, str] | None
    timeout_s: float
    log_path: Path | None
    on_start: Callable[[int, int], None] | None
    heartbeat: Callable[[], None] | None
    heartbeat_interval_s: float
    grace_s: float
    mark: str | None = None

    def run(self, argv: list[str]) -> GroupRun:
        return run_in_group(argv, cwd=self.workdir, env=self.env, timeout_s=self.timeout_s,
                            log_path=self.log_path, on_start=self.on_start,
                            heartbeat=self.heartbeat,
                            heartbeat_interval_s=self.heartbeat_interval_s,
                            grace_s=self.grace_s, mark=self.mark)


def run_tests(
    workdir: Path,
    settings: TestSettings,
    *,
    report_path: Path | None,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    on_start: Callable[[int, int], None] | None = None,
    heartbeat: Callable[[], None] | None = None,
    heartbeat_interval_s: float = 10.0,
    grace_s: float = 5.0,
    mark: str | None = None,
) -> TestOutcome:
    """Run the test command (then the smoke commands after a PASS) and judge it.

    With `mark` (the run's ORCH_RUN_MARK) every command carries it and nothing it
    started outlives it, even a server a test started in its own session.

    Each command runs in `workdir` in its own process group with
    `settings.timeout_s`; `on_start(pgid, start_ticks)` is called for every
    group started (the test command, then each smoke command), so the caller
    can record the group to kill if the tick dies. The report is written
    atomically to `report_path` when given, and returned either way.
    """
    runner = _Runner(workdir, env, settings.timeout_s, log_path, on_start, heartbeat,
                     heartbeat_interval_s, grace_s, mark)
    started_at, clock = now_iso(), time.monotonic()
    pytest = is_pytest_command(settings.command)
    junit_dir = Path(tempfile.mkdtemp(prefix="orch-junit-")) if pytest else None
    try:
        junit = junit_dir / "junit.xml" if junit_dir is not None else None
        run = runner.run(build_argv(settings, junit))
        counts = parse_junit(junit) if junit is not None else None
    finally:
        if junit_dir is not None:
            shutil.rmtree(junit_dir, ignore_errors=True)
    decision = pytest_verdict(run) if pytest else command_verdict(run)
    smoke_runs: list[tuple[tuple[str, ...], GroupRun]] = []
    if decision.verdict is Verdict.PASS:
        decision = _run_smoke(runner, settings.smoke, smoke_runs) or decision
    meta = _meta(decision, run, counts, settings, started_at, time.monotonic() - clock)
    outcome = TestOutcome(meta, render_body(meta, run, counts, smoke_runs))
    if report_path is not None:
        write_document(report_path, outcome.meta, outcome.body)
    return outcome


def _run_smoke(runner: _Runner, smoke: tuple[tuple[str, ...], ...],
               runs: list[tuple[tuple[str, ...], GroupRun]]) -> _Verdict | None:
    """Run the smoke commands in order; a FAIL verdict at the first that fails."""
    for argv in smoke:
        run = runner.run(list(argv))
        runs.append((argv, run))
        if smoke_failed(run):
            return _Verdict(Verdict.FAIL, "smoke-failed")
    return None


def _meta(verdict_: _Verdict, run: GroupRun, counts: TestCounts | None,
          settings: TestSettings, started_at: str, duration_s: float) -> dict[str, Any]:
    """The report's front matter, in the order of SPEC section 8."""
    meta: dict[str, Any] = {
        "result": str(verdict_.verdict),
        "status": _STATUS[verdict_.verdict],
        "exit_code": run.exit_code,
        "reason": verdict_.reason,
    }
    if counts is not None:
        meta["tests"] = counts.as_meta()
    meta.update({
        "duration_s": round(duration_s, 3),
        "command": display_command(settings),
        "started_at": started_at,
        "finished_at": now_iso(),
    })
    return meta


# --- report body ------------------------------------------------------------------


def render_body(meta: dict[str, Any], run: GroupRun, counts: TestCounts | None,
                smoke_runs: list[tuple[tuple[str, ...], GroupRun]]) -> str:
    """The human-readable report: summary, failing tests, smoke commands, output tail."""
    parts = ["# Test report", "", _summary(meta, run, counts)]
    if counts is not None and counts.failures:
        parts += ["", "## Failing tests", ""]
        parts += [f"- {line}" for line in counts.failures]
    if smoke_runs:
        parts += ["", "## Smoke commands", ""]
        parts += [f"- `{shlex.join(argv)}`: {_describe_run(r)}" for argv, r in smoke_runs]
    parts += ["", f"## Output (last {OUTPUT_TAIL_LINES} lines)", ""]
    parts.append(_fenced(_last_lines(run.output_tail, OUTPUT_TAIL_LINES)))
    failed_smoke = [r for _, r in smoke_runs if smoke_failed(r)]
    if failed_smoke:
        parts += ["", "## Smoke output (last lines)", ""]
        parts.append(_fenced(_last_lines(failed_smoke[-1].output_tail, OUTPUT_TAIL_LINES)))
    return "\n".join(parts) + "\n"


def _summary(meta: dict[str, Any], run: GroupRun, counts: TestCounts | None) -> str:
    line = f"**{meta['result']}** ({meta['reason']}): `{meta['command']}` {_describe_run(run)}"
    line += f" in {meta['duration_s']:.1f} s."
    if counts is not None:
        tests = counts.as_meta()
        line += " " + ", ".join(f"{n} {k}" for k, n in tests.items()) + "."
        if counts.problem:
            line += f" ({counts.problem}.)"
    return line


def _describe_run(run: GroupRun) -> str:
    if run.start_error is not None:
        return f"could not start: {run.start_error}"
    if run.timed_out:
        return f"timed out (killed, return code {run.exit_code})"
    if run.exit_code is not None and run.exit_code < 0:
        return f"killed by signal {-run.exit_code}"
    return f"exited {run.exit_code}"


def _last_lines(text: str, count: int) -> str:
    lines = text.rstrip("\n").splitlines()
    return "\n".join(lines[-count:])


def _fenced(text: str) -> str:
    """A code block whose fence is longer than any backtick run inside the text."""
    longest, run = 0, 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}" if text else "(no output)"
