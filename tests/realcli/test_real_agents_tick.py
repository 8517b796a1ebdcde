"""orch with the real Claude Code and Codex CLIs, through `orch tick`, with the presets
exactly as `orch init --agents` writes them, against the scripted stand-in providers.

The environment adds only what a user sets for a proxy or gateway (docs/agents.md):
the base URL, a dummy key, the CLIs' isolation and retry variables. orch's own timing
is shortened with ORCH_* overrides.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import time
from pathlib import Path

import pytest
from support.claude_cli import claude_binary, require_claude
from support.codex_env import codex_bin, write_codex_home
from support.fake_anthropic import Bash, FakeAnthropic, Turn, Write, error, text, tools
from support.fake_openai import Error, FakeOpenAI, Step, Text, shell
from support.realhome import RealHome, git, verdicts

from orch.procs import tree

require_claude()

ANALYSIS = [{"name": "analysis", "runner": "agent", "role": "analyst",
             "gate": "analysis_ready", "deliverables": ["02-analysis.md"]}]
DEVELOPMENT = [{"name": "development", "runner": "agent", "role": "developer",
                "gate": "dev_done", "deliverables": ["10-dev-report.md"]}]


@pytest.fixture
def api() -> FakeAnthropic:
    claude_binary()  # under CI a missing CLI fails here
    with FakeAnthropic() as server:
        yield server


def claude_home(tmp_path: Path, api: FakeAnthropic, stages: list | None = None,
                **orch: str) -> RealHome:
    return RealHome(tmp_path, "claude", api.env(tmp_path / "claude-config"), stages, **orch)


def analysis_turns(home: RealHome, task: int) -> list[Turn]:
    return [tools(Write(str(home.artifacts(task) / "02-analysis.md"),
                        "# Analysis\n\nadd() subtracts; it must add.\n")),
            text("Wrote the analysis.")]


def developer_turns(home: RealHome, task: int, message: str, code: str) -> list[Turn]:
    wt, art = home.worktree(task), home.artifacts(task)
    return [tools(Write(str(wt / "calc.py"), code)),
            tools(Bash("python3 -m pytest -q -p no:cacheprovider")),
            tools(Bash(f'git add -A && git commit -q -m "{message}"')),
            tools(Write(str(art / "10-dev-report.md"), f"# Development report\n\n{message}\n")),
            text("Done.")]


def review_turns(home: RealHome, task: int, verdict: str) -> list[Turn]:
    review = f"---\nverdict: {verdict}\n---\n# Review\n1. [major] calc.py: document add.\n"
    return [tools(Bash("git diff main...HEAD")),
            tools(Write(str(home.artifacts(task) / "12-review.md"), review)),
            text(verdict)]


def turns_of_tester(home: RealHome, task: int) -> list[Turn]:
    report = "---\nresult: PASS\nstatus: passed\nexit_code: 0\n---\n# Tests\n1 passed.\n"
    return [tools(Bash("python3 -m pytest -q -p no:cacheprovider")),
            tools(Write(str(home.artifacts(task) / "13-test-report.md"), report)),
            text("1 passed.")]


def test_a_whole_task_with_claude_in_every_agent_role(tmp_path: Path,
                                                      api: FakeAnthropic) -> None:
    """task add -> done: analysis, development, a review asking for changes (back to
    development, round 1), development again, approval, the tester agent (test-runner
    off), merge. Every stage with the real claude and the preset `orch init` wrote."""
    home = claude_home(tmp_path, api, ORCH_TEST_RUNNER_ENABLED="false")
    task = home.add_task()
    fixed = "def add(a, b):\n    return a + b\n"
    documented = '"""Calculator."""\n\n\ndef add(a, b):\n    """The sum."""\n    return a + b\n'
    scripts = {("analysis", 0): analysis_turns(home, task),
               ("development", 0): developer_turns(home, task, "Fix add", fixed),
               ("review", 0): review_turns(home, task, "REQUEST_CHANGES"),
               ("development", 1): developer_turns(home, task, "Document add", documented),
               ("review", 1): review_turns(home, task, "APPROVE"),
               ("testing", 1): turns_of_tester(home, task)}
    loaded: list[tuple[str, int]] = []

    def load_next() -> bool:
        """Load the script of the queued job's stage and round; claim only then."""
        if not home.queued(task):
            return False
        row = home.task(task)
        key = (row["stage"], row["round"])
        if key in scripts and key not in loaded:
            api.load(scripts[key])
            loaded.append(key)
        return True

    advanced = home.drive(lambda _: home.task(task)["state"] == "closed",
                          before_tick=load_next)
    assert home.task(task)["stage"] == "done", verdicts(advanced)
    assert [v for v in verdicts(advanced) if v[2] != "SKIP"] == [
        ("analysis", "development", "PASS"), ("development", "review", "PASS"),
        ("review", "development", "FAIL"), ("development", "review", "PASS"),
        ("review", "testing", "PASS"), ("testing", "staging", "PASS"),
        ("merge", "done", "PASS")]
    agent_runs = [r for r in home.runs(task) if r["stage"] != "merge"]
    assert [r["outcome"] for r in agent_runs] == ["succeeded"] * 6
    assert all(r["session_id"] and r["cost_usd"] > 0 and r["tokens"] > 0 for r in agent_runs)
    assert all(r["denials"] == 0 for r in agent_runs)
    assert git(home.repo, "log", "-3", "--format=%s").splitlines()[:2] == [
        "Document add", "Fix add"]
    assert "return a + b" in (home.repo / "calc.py").read_text()
    assert api.unknown == []


@pytest.fixture
def openai() -> FakeOpenAI:
    if codex_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("the real Codex CLI is not installed: bash tests/realcli/install.sh")
        pytest.skip("the real Codex CLI is not installed: bash tests/realcli/install.sh")
    with FakeOpenAI([]) as provider:
        yield provider


def codex_home(tmp_path: Path, base_url: str, stages: list | None = None,
               **orch: str) -> RealHome:
    """`orch init --agents codex`; CODEX_HOME's config names the provider (retries 0)."""
    config = write_codex_home(tmp_path / "codex-home", base_url)
    return RealHome(tmp_path, "codex", {"CODEX_HOME": str(config),
                                        "OPENAI_API_KEY": "sk-dummy"}, stages, **orch)


def write_file(path: Path, content: str) -> Step:
    """A shell step writing `content` to `path` (the artifacts folder is an --add-dir)."""
    return shell(f"printf %s {shlex.quote(content)} > {shlex.quote(str(path))}")


def codex_developer_steps(home: RealHome, task: int) -> list[Step]:
    report = home.artifacts(task) / "10-dev-report.md"
    return [shell("printf 'def add(a, b):\\n    return a + b\\n' > calc.py"),
            shell("python3 -m pytest -q -p no:cacheprovider"),
            shell("git add -A && git commit -q -m 'Fix add'"),
            write_file(report, "# Development report\n\nFixed add.\n"), Text("Committed.")]


def test_codex_developer_commits_in_its_worktree_and_passes(tmp_path: Path,
                                                            openai: FakeOpenAI) -> None:
    home = codex_home(tmp_path, openai.base_url, DEVELOPMENT)
    task = home.add_task()
    openai.load(codex_developer_steps(home, task))
    advanced = home.drive(lambda entries: bool(entries), timeout=180)
    assert verdicts(advanced) == [("development", "done", "PASS")]
    (run,) = home.runs(task)
    assert run["outcome"] == "succeeded" and run["session_id"] and run["tokens"] > 0
    assert git(home.repo, "log", "-1", "--format=%s", "orch/1-fix-add") == "Fix add"


def test_a_whole_task_with_codex_in_every_agent_role(tmp_path: Path,
                                                     openai: FakeOpenAI) -> None:
    """task add -> done with the Codex presets: the analyst and the reviewer write their
    deliverables through --add-dir, the developer commits in its worktree, the tester
    agent (test-runner off) runs the tests and writes its report."""
    home = codex_home(tmp_path, openai.base_url, ORCH_TEST_RUNNER_ENABLED="false")
    task = home.add_task()
    art = home.artifacts(task)
    review = "---\nverdict: APPROVE\n---\n# Review\nadd adds.\n"
    tested = "---\nresult: PASS\nstatus: passed\nexit_code: 0\n---\n# Tests\n1 passed.\n"
    scripts = {
        "analysis": [write_file(art / "02-analysis.md", "# Analysis\n\nadd() must add.\n"),
                     Text("Wrote the analysis.")],
        "development": codex_developer_steps(home, task),
        "review": [shell("git diff main...HEAD"), write_file(art / "12-review.md", review),
                   Text("APPROVE")],
        "testing": [shell("python3 -m pytest -q -p no:cacheprovider"),
                    write_file(art / "13-test-report.md", tested), Text("1 passed.")]}
    loaded: list[str] = []

    def load_next() -> bool:
        if not home.queued(task):
            return False
        stage = home.task(task)["stage"]
        if stage in scripts and stage not in loaded:
            openai.load(scripts[stage])
            loaded.append(stage)
        return True

    advanced = home.drive(lambda _: home.task(task)["state"] == "closed",
                          before_tick=load_next)
    assert home.task(task)["stage"] == "done", verdicts(advanced)
    assert [v for v in verdicts(advanced) if v[2] != "SKIP"] == [
        ("analysis", "development", "PASS"), ("development", "review", "PASS"),
        ("review", "testing", "PASS"), ("testing", "staging", "PASS"),
        ("merge", "done", "PASS")]
    agent_runs = [r for r in home.runs(task) if r["stage"] != "merge"]
    assert [r["outcome"] for r in agent_runs] == ["succeeded"] * 4
    assert all(r["session_id"] and r["tokens"] > 0 for r in agent_runs)
    assert "return a + b" in (home.repo / "calc.py").read_text()
    assert openai.script.remaining() == 0  # every stage ran its script


def _one_run(home: RealHome) -> tuple[list, dict]:
    task = home.add_task()
    advanced = home.drive(lambda entries: bool(entries), timeout=180)
    return verdicts(advanced), home.runs(task)[0]


@pytest.mark.parametrize(("status", "message"), [(429, "rate limited"), (529, "overloaded")])
def test_claude_provider_trouble_is_a_defer(tmp_path: Path, api: FakeAnthropic, status: int,
                                            message: str) -> None:
    api.load([error(status, message)])
    moves, run = _one_run(claude_home(tmp_path, api, ANALYSIS))
    assert moves == [("analysis", "analysis", "DEFER")]
    assert run["outcome"] == "deferred" and run["fault"] == "provider"


def test_claude_with_the_provider_unreachable_is_a_defer(tmp_path: Path) -> None:
    claude_binary()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    from support.fake_anthropic import claude_env

    env = claude_env(f"http://127.0.0.1:{closed}", tmp_path / "claude-config")
    moves, run = _one_run(RealHome(tmp_path, "claude", env, ANALYSIS))
    assert moves == [("analysis", "analysis", "DEFER")]
    assert run["outcome"] == "deferred"


def test_claude_with_an_invalid_key_holds_for_a_person(tmp_path: Path,
                                                       api: FakeAnthropic) -> None:
    api.load([error(401, "invalid x-api-key")])
    home = claude_home(tmp_path, api, ANALYSIS)
    moves, run = _one_run(home)
    assert moves == [("analysis", "analysis", "HOLD")]
    task = home.task(1)
    assert task["state"] == "held" and task["hold_kind"] == "auth"
    assert task["hold_reason"].startswith("agent authentication failed: ")
    assert "Invalid API key" in task["hold_reason"]
    assert run["outcome"] == "failed" and run["fault"] == "auth"


def test_claude_doing_nothing_is_a_retry_never_a_pass(tmp_path: Path,
                                                      api: FakeAnthropic) -> None:
    api.load([text("I have done it.")])
    moves, run = _one_run(claude_home(tmp_path, api, ANALYSIS))
    assert moves == [("analysis", "analysis", "RETRY")]
    assert run["outcome"] == "succeeded"  # a clean exit: the gate found no deliverable


def test_a_denied_tool_that_blocks_nothing_passes_with_the_denial_recorded(
        tmp_path: Path, api: FakeAnthropic) -> None:
    home = claude_home(tmp_path, api, ANALYSIS)
    api.load([tools(Bash("curl -s http://127.0.0.1:9/")),
              *analysis_turns(home, 1)])
    moves, run = _one_run(home)
    assert moves == [("analysis", "done", "PASS")]
    assert run["denials"] == 1
    events = home.rows("SELECT detail FROM events WHERE kind = 'denied'")
    assert events and "1 permission denial(s) (Bash)" in events[0]["detail"]
    shown = home.cli("task", "show", "1")
    assert shown.returncode == 0 and "denied" in shown.stdout


def test_the_presets_allow_every_detected_test_command_spelling(
        tmp_path: Path, api: FakeAnthropic) -> None:
    """The test command through each runner a layout may be detected with: none denied
    (the runners are not installed here: "command not found" is no denial)."""
    home = claude_home(tmp_path, api, ANALYSIS)
    spellings = ["python3 -m pytest -q", "python -m pytest -q", "pytest -q", "uv run pytest -q",
                 "poetry run pytest -q", "hatch run test", "pdm run pytest -q", "tox -e py",
                 "nox -s tests", ".venv/bin/python -m pytest -q",
                 "./.venv/bin/python -m pytest -q"]
    api.load([*(tools(Bash(command)) for command in spellings), *analysis_turns(home, 1)])
    moves, run = _one_run(home)
    assert moves == [("analysis", "done", "PASS")]
    assert run["denials"] == 0, home.rows("SELECT detail FROM events WHERE kind = 'denied'")


@pytest.mark.parametrize(("status", "message", "code"), [
    (500, "boom", None), (503, "Selected model is at capacity.", "server_is_overloaded")])
def test_codex_overload_wordings_are_a_defer(tmp_path: Path, openai: FakeOpenAI, status: int,
                                             message: str, code: str | None) -> None:
    openai.load([Error(status, message, code)])
    moves, run = _one_run(codex_home(tmp_path, openai.base_url, ANALYSIS))
    assert moves == [("analysis", "analysis", "DEFER")]
    assert run["outcome"] == "deferred" and run["fault"] == "provider"
    said = "high demand" if status == 500 else message  # Codex's own wording for any 500
    assert said in Path(run["log_path"]).read_text(errors="replace")


def test_codex_with_the_provider_unreachable_is_a_defer(tmp_path: Path) -> None:
    if codex_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("the real Codex CLI is not installed: bash tests/realcli/install.sh")
        pytest.skip("the real Codex CLI is not installed: bash tests/realcli/install.sh")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    moves, run = _one_run(codex_home(tmp_path, f"http://127.0.0.1:{closed}/v1", ANALYSIS))
    assert moves == [("analysis", "analysis", "DEFER")]
    assert run["outcome"] == "deferred"


def test_codex_with_an_invalid_key_holds_for_a_person(tmp_path: Path,
                                                      openai: FakeOpenAI) -> None:
    openai.load([Error(401, "Incorrect API key provided: sk-dummy.", "invalid_api_key")])
    home = codex_home(tmp_path, openai.base_url, ANALYSIS)
    moves, run = _one_run(home)
    assert moves == [("analysis", "analysis", "HOLD")]
    task = home.task(1)
    assert task["state"] == "held" and task["hold_kind"] == "auth", task
    assert task["hold_reason"].startswith("agent authentication failed: ")
    assert run["outcome"] == "failed" and run["fault"] == "auth"


def test_codex_doing_nothing_is_a_retry_never_a_pass(tmp_path: Path,
                                                    openai: FakeOpenAI) -> None:
    openai.load([Text("I have done it.")])
    moves, run = _one_run(codex_home(tmp_path, openai.base_url, ANALYSIS))
    assert moves == [("analysis", "analysis", "RETRY")]
    assert run["outcome"] == "succeeded"  # a clean exit: the gate found no deliverable


def test_a_setsid_tool_process_ends_after_claude_and_its_supervisor_are_sigkilled(
        tmp_path: Path, api: FakeAnthropic) -> None:
    """Claude runs each Bash tool in a new session; `setsid sleep 999 &` leaves it in
    another one. SIGKILL claude and the supervisor: the next tick's reaper ends both
    sleeps and the tool's shell by the run's mark."""
    home = claude_home(tmp_path, api, ANALYSIS, ORCH_HEARTBEAT_TIMEOUT_S="3")
    # claude refuses a plain long `sleep`, and the analyst's allow-list has python3 but
    # not setsid: python starts `setsid sleep 999`, then blocks on something else
    detach = ("python3 -c \"import subprocess; subprocess.Popen(['setsid', 'sleep', '999']); "
              "subprocess.run(['tail', '-f', '/dev/null'])\"")
    api.load([tools(Bash(detach, timeout=600000)), text("done")])
    task = home.add_task()
    home.tick()
    (job,) = home.rows("SELECT * FROM jobs WHERE task_id = ?", (task,))
    mark = _mark(home, job["run_id"])
    try:
        _kill_claude_and_check_the_reap(home, job, mark)
    finally:
        tree.end_run_tree(mark, grace_s=1)  # nothing of a failed check outlives the test


def _kill_claude_and_check_the_reap(home: RealHome, job: dict, mark: str) -> None:
    """Wait for the tool's processes (claude also starts helpers of its own: bash,
    sort, xargs), SIGKILL claude and the supervisor, tick once."""
    deadline = time.monotonic() + 60
    while not {"sleep", "tail"} <= set(_comms(mark).values()):
        assert time.monotonic() < deadline, _comms(mark)
        time.sleep(0.2)
    comms = _comms(mark)
    supervisor = job["pid"] if job["pid"] else None
    claude = [pid for pid, comm in comms.items() if comm == "claude"]
    for pid in [*claude, *([supervisor] if supervisor else [])]:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert {"sleep", "tail"} <= set(_comms(mark).values())  # the tool outlived claude
    report = home.tick()
    assert report["reaped"] == [job["id"]]
    assert _comms(mark) == {}
    assert tree.find_run_processes(mark) == []


def _mark(home: RealHome, run_id: int) -> str:
    from orch.home import Home

    return Home(home.home).run_mark(run_id)


def _comms(mark: str) -> dict[int, str]:
    return {proc.pid: proc.comm for proc in tree.find_run_processes(mark)}
