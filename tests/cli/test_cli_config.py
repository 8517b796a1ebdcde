"""Configuration through the CLI (SPEC section 2): every mistake is exit 4 and one line naming
file, key and line, and a refused command leaves the database and the artifacts untouched.
Loading the configuration directly is tested in tests/unit/test_config.py."""

from __future__ import annotations

import hashlib
import sqlite3
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from support.config import write_config

from orch.config import load_settings
from orch.pipeline import default_pipeline_path
from orch.state.schema import MIGRATIONS, SCHEMA_VERSION

Cli = Callable[..., tuple[int, str, str]]


def snapshot(home: Path) -> dict[str, str | None]:
    """Hashes of the state file and its WAL (None: absent) and every artifact file."""
    shot: dict[str, str | None] = {}
    for name in ("orch.db", "orch.db-wal"):
        path = home / name
        shot[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    for path in sorted((home / "tasks").rglob("*")):
        shot[str(path.relative_to(home))] = (hashlib.sha256(path.read_bytes()).hexdigest()
                                             if path.is_file() else "dir")
    return shot


def assert_one_error_line(code: int, err: str, expected_code: int, *parts: str) -> str:
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    return lines[0]


def assert_refused_changes_nothing(cli: Cli, home: Path, *parts: str) -> str:
    """`task add` (a command that would write) exits 4, and nothing on disk moved."""
    before = snapshot(home)
    code, out, err = cli(home, "task", "add", "--repo", "app", "--title", "must not land")
    line = assert_one_error_line(code, err, 4, *parts)
    assert out == ""
    assert snapshot(home) == before
    return line


# ---------------------------------------------------------------- orch.yaml mistakes

FILE_CASES = {
    "malformed YAML": ("max_rounds: 1: 2\n", None, 4, None),
    "unknown key": ("max_concurency: 2\n", "max_concurency", 4, "did you mean 'max_concurrency'"),
    "unknown nested key": ("    tset: {}\n", "repos.app.tset", 4, "did you mean 'test'"),
    "unknown flag": ("flags:\n  serial_gate_enabld: true\n", "flags.serial_gate_enabld", 5,
                     "serial_gate_enabled"),
    "wrong type": ('max_concurrency: "two"\n', "max_concurrency", 4, "expected an integer"),
    "wrong type of a flag": ("flags:\n  serial_gate_enabled: maybe\n",
                             "flags.serial_gate_enabled", 5, "true or false"),
    "max_attempts 0": ("max_attempts: 0\n", "max_attempts", 4, ">= 1"),
    "heartbeat timeout not above interval": (
        "heartbeat_interval_s: 30\nheartbeat_timeout_s: 30\n", "heartbeat_timeout_s", 5,
        "greater than heartbeat_interval_s"),
    "negative backoff": ("retry_backoff_s: -1\n", "retry_backoff_s", 4, ">= 0"),
    "negative max_concurrency": ("max_concurrency: -1\n", "max_concurrency", 4, ">= 0"),
    "max_active 0": ("    max_active: 0\n", "repos.app.max_active", 4, ">= 1"),
    "nested timeout 0": ("    test:\n      timeout_s: 0\n", "repos.app.test.timeout_s", 5, ">= 1"),
    "negative budget": ("budget: {task_usd: -1}\n", "budget.task_usd", 4, ">= 0"),
    "duplicate key": ("max_rounds: 1\nmax_rounds: 2\n", "max_rounds", 5, "duplicate"),
    "empty agent argv": ("agents:\n  analyst: {command: []}\n", "agents.analyst.command", 5,
                         "argv"),
    "recursive alias": ("agents: &x {a: *x}\n", "agents.a", 4, "recursive alias"),
    "repo without path": ("  other:\n    default_branch: main\n", "repos.other", 4,
                          "'path'"),
}


@pytest.mark.parametrize("case", FILE_CASES, ids=list(FILE_CASES))
def test_config_mistake_is_one_line_exit_4_and_changes_nothing(
        case: str, orch_home: Path, cli: Cli) -> None:
    extra, key, line, detail = FILE_CASES[case]
    config = write_config(orch_home, extra)
    parts = [f"{config}:{line}:"]
    if key is not None:
        parts.append(f": {key}:")
    if detail is not None:
        parts.append(detail)
    assert_refused_changes_nothing(cli, orch_home, *parts)
    # read-only commands are refused the same way
    code, _, err = cli(orch_home, "task", "list")
    assert_one_error_line(code, err, 4, *parts)


def test_malformed_yaml_says_so(orch_home: Path, cli: Cli) -> None:
    write_config(orch_home, "max_rounds: 1: 2\n")
    line = assert_refused_changes_nothing(cli, orch_home, "orch.yaml:4:")
    assert "malformed YAML" in line


def test_top_level_not_a_mapping(orch_home: Path, cli: Cli) -> None:
    (orch_home / "orch.yaml").write_text("- just\n- a list\n", encoding="utf-8")
    assert_refused_changes_nothing(cli, orch_home, "orch.yaml:1:", "expected a mapping")


def test_undecodable_config_is_a_config_error(orch_home: Path, cli: Cli) -> None:
    (orch_home / "orch.yaml").write_bytes(b"max_rounds: \xff\xfe\n")
    assert_refused_changes_nothing(cli, orch_home, "orch.yaml")


def test_error_is_fixed_by_editing_the_file(orch_home: Path, cli: Cli) -> None:
    write_config(orch_home, "max_concurency: 2\n")
    assert cli(orch_home, "task", "list")[0] == 4
    write_config(orch_home, "max_concurrency: 2\n")
    code, out, err = cli(orch_home, "task", "list", "--json")
    assert (code, out.strip(), err) == (0, "[]", "")


# ---------------------------------------------------------------- the environment

@pytest.mark.parametrize(("name", "value", "detail"), [
    ("ORCH_SERIAL_GATE_ENABLED", "maybe", "expected a boolean"),
    ("ORCH_IMPOSSIBLE_QUEUED_SANITIZE_ENABLED", "", "expected a boolean"),
    ("ORCH_MAX_CONCURRENCY", "two", "expected an integer"),
    ("ORCH_MAX_CONCURRENCY", "1.5", "expected an integer"),
    ("ORCH_MAX_ATTEMPTS", "0", ">= 1"),
    ("ORCH_RETRY_BACKOFF_S", "-5", ">= 0"),
    ("ORCH_HEARTBEAT_TIMEOUT_S", "5", "greater than heartbeat_interval_s"),
])
def test_bad_environment_value_is_a_config_error(
        name: str, value: str, detail: str, orch_home: Path, cli: Cli,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    line = assert_refused_changes_nothing(cli, orch_home, name, detail)
    # the variable is at fault, not a line of orch.yaml that holds a good value
    assert "orch.yaml" not in line


def test_other_orch_variables_are_not_configuration(
        orch_home: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """What orch gives its agents (and nested keys) is ignored, so an agent can call orch."""
    agent_env = {"ORCH_TASK_ID": "5", "ORCH_JOB_ID": "x", "ORCH_RUN_ID": "7",
                 "ORCH_STAGE": "analysis", "ORCH_ROUND": "not a number", "ORCH_REPO": "nope",
                 "ORCH_ARTIFACTS": "/nowhere", "ORCH_WORKTREE": "/nowhere",
                 "ORCH_REPOS": "garbage", "ORCH_AGENTS": "garbage", "ORCH_BUDGET": "-1",
                 "ORCH_FLAGS": "garbage", "ORCH_NOTIFY_ANYTHING": "1"}
    for name, value in agent_env.items():
        monkeypatch.setenv(name, value)
    code, out, err = cli(orch_home, "task", "add", "--repo", "app", "--title", "from an agent")
    assert (code, out.strip(), err) == (0, "1", "")
    settings = load_settings(orch_home)
    assert settings.repos.keys() == {"app"}
    assert settings.budget.task_usd == 20


def test_orch_home_variable_is_used_without_home_option(
        tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch,
        git_repo: Callable[..., Path]) -> None:
    home = tmp_path / "via-env"
    monkeypatch.setenv("ORCH_HOME", str(home))
    code, _, err = cli(None, "init", "--repo", f"app={git_repo()}")
    assert code == 0, err
    assert (home / "orch.yaml").is_file()
    assert (home / "orch.db").is_file()


# ---------------------------------------------------------------- pipeline files

GOOD_STAGE = "  - {name: build, runner: command, command: [make]}\n"
PIPELINE_CASES = {
    "unknown runner": ("  - {name: x, runner: robot}\n", "stages[1].runner", 3, "'robot'"),
    "unknown gate": ("  - {name: x, runner: agent, role: analyst, gate: vibes}\n",
                     "stages[1].gate", 3, "'vibes'"),
    "agent the config lacks": ("  - {name: x, runner: agent, role: wizard, gate: dev_done}\n",
                               "stages[1].role", 3, "'wizard'"),
    "agent stage without role": ("  - {name: x, runner: agent, gate: dev_done}\n",
                                 "stages[1].role", 3, "role is required"),
    "agent stage without gate": ("  - {name: x, runner: agent, role: analyst}\n",
                                 "stages[1].gate", 3, "gate is required"),
    "bad on_fail target": ("  - {name: x, runner: merge, on_fail: nowhere}\n",
                           "stages[1].on_fail", 3, "'nowhere'"),
    "duplicate stage name": ("  - {name: build, runner: merge}\n", "stages[1].name", 3,
                             "duplicate stage name 'build'"),
    "unknown stage key": ("  - {name: x, runner: merge, gaet: merged}\n", "stages[1].gaet", 3,
                          "unknown key"),
    "terminal stage name": ("  - {name: done, runner: merge}\n", "stages[1].name", 3,
                            "terminal"),
    "command stage without argv": ("  - {name: x, runner: command}\n", "stages[1].command", 3,
                                   "argv"),
    "block style names the key's own line": (
        "  - name: x\n    runner: agent\n    role: analyst\n    gate: vibes\n",
        "stages[1].gate", 6, "'vibes'"),
}


@pytest.mark.parametrize("case", PIPELINE_CASES, ids=list(PIPELINE_CASES))
def test_bad_pipeline_file_is_a_config_error(case: str, orch_home: Path, cli: Cli) -> None:
    stage, key, line, detail = PIPELINE_CASES[case]
    write_config(orch_home, "pipeline: pipeline.yaml\n")
    pipeline = orch_home / "pipeline.yaml"
    pipeline.write_text("stages:\n" + GOOD_STAGE + stage, encoding="utf-8")
    assert_refused_changes_nothing(cli, orch_home, f"{pipeline}:{line}:", f": {key}:", detail)
    code, _, err = cli(orch_home, "pipeline", "show")
    assert_one_error_line(code, err, 4, f"{pipeline}:{line}:")


def test_bad_pipeline_does_not_even_migrate_an_old_database(orch_home: Path, cli: Cli) -> None:
    """The config and pipeline are checked before the state file is opened (and upgraded)."""
    (orch_home / "orch.db").unlink()
    conn = sqlite3.connect(str(orch_home / "orch.db"))
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    write_config(orch_home, "pipeline: pipeline.yaml\n")
    (orch_home / "pipeline.yaml").write_text("stages:\n  - {name: x, runner: robot}\n")
    assert_refused_changes_nothing(cli, orch_home, "pipeline.yaml:2:", "'robot'")
    (orch_home / "pipeline.yaml").write_text("stages:\n  - {name: x, runner: merge}\n")
    assert cli(orch_home, "task", "add", "--repo", "app", "--title", "T")[0] == 0
    conn = sqlite3.connect(str(orch_home / "orch.db"))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_good_custom_pipeline_is_used(orch_home: Path, cli: Cli) -> None:
    write_config(orch_home, "pipeline: pipeline.yaml\n")
    (orch_home / "pipeline.yaml").write_text(
        "stages:\n" + GOOD_STAGE + "  - {name: ship, runner: human, on_fail: build}\n",
        encoding="utf-8")
    code, out, err = cli(orch_home, "task", "add", "--repo", "app", "--title", "T", "--json")
    assert code == 0, err
    assert '"stage": "build"' in out


def test_malformed_pipeline_file(orch_home: Path, cli: Cli) -> None:
    write_config(orch_home, "pipeline: pipeline.yaml\n")
    pipeline = orch_home / "pipeline.yaml"
    pipeline.write_text("stages:\n" + GOOD_STAGE + "  - {name: x\n", encoding="utf-8")
    assert_refused_changes_nothing(cli, orch_home, str(pipeline), "malformed YAML")


def test_empty_pipeline_file(orch_home: Path, cli: Cli) -> None:
    write_config(orch_home, "pipeline: pipeline.yaml\n")
    pipeline = orch_home / "pipeline.yaml"
    pipeline.write_text("stages: []\n", encoding="utf-8")
    assert_refused_changes_nothing(cli, orch_home, str(pipeline), "stages")


def test_missing_pipeline_file_names_the_config(orch_home: Path, cli: Cli) -> None:
    config = write_config(orch_home, "pipeline: nowhere.yaml\n")
    assert_refused_changes_nothing(cli, orch_home, str(config), "pipeline",
                                   str(orch_home / "nowhere.yaml"))


def test_tester_agent_needed_when_test_runner_is_off(
        orch_home: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default pipeline's testing stage needs the `tester` agent with the flag off
    (`orch init` writes one: here it was removed)."""
    config = orch_home / "orch.yaml"
    config.write_text("\n".join(line for line in config.read_text().splitlines()
                                if not line.startswith("  tester:")) + "\n")
    monkeypatch.setenv("ORCH_TEST_RUNNER_ENABLED", "off")
    default = default_pipeline_path()
    testing_line = next(number for number, text in
                        enumerate(default.read_text().splitlines(), start=1)
                        if "name: testing" in text)
    assert_refused_changes_nothing(cli, orch_home, f"{default}:{testing_line}:",
                                   "stages[3].role", "'tester'")
    write_config(orch_home, "agents:\n  analyst: {command: [a]}\n  developer: {command: [d]}\n"
                 "  reviewer: {command: [r]}\n  tester: {command: [t, '{prompt}']}\n")
    code, _, err = cli(orch_home, "task", "add", "--repo", "app", "--title", "T")
    assert code == 0, err


# ---------------------------------------------------------------- unavailable repos

def test_missing_or_non_git_repo_is_not_a_config_error(
        orch_home: Path, cli: Cli, tmp_path: Path) -> None:
    plain = tmp_path / "plain-dir"
    plain.mkdir()
    write_config(orch_home, textwrap.indent(textwrap.dedent(f"""\
        gone:
          path: {tmp_path / "unmounted"}
        plain:
          path: {plain}
        """), "  "))
    for repo in ("gone", "plain", "app"):
        code, out, err = cli(orch_home, "task", "add", "--repo", repo, "--title", f"for {repo}")
        assert code == 0, err
        assert err == ""
    code, out, _ = cli(orch_home, "task", "list", "--json")
    assert code == 0
    assert out.count('"repo"') == 3
    assert cli(orch_home, "pipeline", "show", "--json")[0] == 0


def test_repo_path_key_is_still_required(orch_home: Path, cli: Cli) -> None:
    write_config(orch_home, "  other: {}\n")
    assert_refused_changes_nothing(cli, orch_home, "repos.other", "'path'")


# ---------------------------------------------------------------- defaults and shipped files


def test_commands_run_on_defaults_without_orch_yaml(tmp_path: Path, cli: Cli) -> None:
    home = tmp_path / "bare"
    code, _, err = cli(home, "pipeline", "show", "--json")
    assert code == 0, err
    code, _, err = cli(home, "task", "add", "--repo", "app", "--title", "T")
    assert_one_error_line(code, err, 3, "'app'", "none configured")


