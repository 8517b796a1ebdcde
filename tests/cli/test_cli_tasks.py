"""`orch init`, `orch task ...`, `orch cancel`, `orch pipeline show` through the CLI's error
boundary (SPEC sections 1, 9 and 10), plus the issue-2 flow through the real console script."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from support.checkout import CHECKOUT
from support.cli import CliResult, orch_script
from support.env import keep_env
from typer.testing import CliRunner

from orch.cli import app
from orch.config import load_settings
from orch.state.tasks import TASK_COLUMNS

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
Result = tuple[int, str, str]


@pytest.fixture
def run(cli: Callable[..., Result]) -> Callable[..., Result]:
    """`cli`, checking that no command ever prints a Python traceback."""

    def call(home: Path | None, *args: str) -> Result:
        code, out, err = cli(home, *args)
        assert "Traceback" not in err and "Traceback" not in out, err
        return code, out, err

    return call


def one_error(err: str, *parts: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    return lines[0]


def add(run: Callable[..., Result], home: Path, title: str, *extra: str) -> dict:
    code, out, err = run(home, "task", "add", "--repo", "app", "--title", title, "--json",
                         *extra)
    assert code == 0, err
    return json.loads(out)


def show(run: Callable[..., Result], home: Path, task_id: int) -> dict:
    code, out, err = run(home, "task", "show", str(task_id), "--json")
    assert code == 0, err
    return json.loads(out)


def listing(run: Callable[..., Result], home: Path, *args: str) -> list[dict]:
    code, out, err = run(home, "task", "list", "--json", *args)
    assert code == 0, err
    return json.loads(out)


def fingerprint(home: Path) -> dict[str, str]:
    """The state file, its WAL and every artifact: what a refused command must not touch."""
    shot = {}
    for path in [home / "orch.db", home / "orch.db-wal", *sorted((home / "tasks").rglob("*"))]:
        if path.is_file():
            shot[str(path.relative_to(home))] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            shot[str(path.relative_to(home))] = "dir"
    return shot


# ---------------------------------------------------------------- init

def test_init_creates_the_home(tmp_path: Path, run: Callable[..., Result],
                               git_repo: Callable[..., Path]) -> None:
    home, repo = tmp_path / "deep" / "home", git_repo()
    code, out, err = run(home, "init", "--repo", f"app={repo}")
    assert (code, err) == (0, "")
    assert "wrote orch.yaml" in out
    for name in ("orch.yaml", "orch.db"):
        assert (home / name).is_file()
    for name in ("tasks", "worktrees", "logs"):
        assert (home / name).is_dir()
    settings = load_settings(home, environ={})
    assert settings.repos["app"].path == repo
    assert settings.repos["app"].default_branch == "main"
    text = (home / "orch.yaml").read_text()
    assert text.startswith("# orch configuration")  # the commented example, not a dump
    assert "# repos:" in text


def test_init_without_repos_writes_the_shipped_example(tmp_path: Path,
                                                        run: Callable[..., Result]) -> None:
    home = tmp_path / "home"
    assert run(home, "init")[0] == 0
    assert (home / "orch.yaml").read_bytes() == (CHECKOUT / "config" / "orch.yaml").read_bytes()
    assert dict(load_settings(home, environ={}).repos) == {}


def test_init_twice_keeps_an_edited_config_and_the_state(
        orch_home: Path, run: Callable[..., Result]) -> None:
    config = orch_home / "orch.yaml"
    config.write_text(config.read_text().replace("max_rounds: 3", "max_rounds: 2") + "# mine\n")
    edited = config.read_bytes()
    add(run, orch_home, "keep me")
    code, out, err = run(orch_home, "init")
    assert (code, err) == (0, "")
    assert "kept existing orch.yaml" in out
    assert config.read_bytes() == edited
    assert [task["title"] for task in listing(run, orch_home)] == ["keep me"]


def test_init_repo_on_an_existing_home_is_refused(
        orch_home: Path, run: Callable[..., Result], git_repo: Callable[..., Path]) -> None:
    before = (orch_home / "orch.yaml").read_bytes()
    state = fingerprint(orch_home)
    code, _, err = run(orch_home, "init", "--repo", f"lib={git_repo('lib')}")
    assert code == 1
    one_error(err, str(orch_home / "orch.yaml"))
    assert (orch_home / "orch.yaml").read_bytes() == before
    assert fingerprint(orch_home) == state


@pytest.mark.parametrize("option", ["app", "app=", "=/srv/app", "my app=/srv/app",
                                    "-app=/srv/app", "app/x=/srv/app"])
def test_init_bad_repo_option_is_a_usage_error(
        option: str, tmp_path: Path, run: Callable[..., Result]) -> None:
    home = tmp_path / "home"
    code, _, err = run(home, "init", "--repo", option)
    assert code == 2
    one_error(err, "--repo")
    assert not home.exists()


def test_init_same_repo_twice_is_a_usage_error(tmp_path: Path, run: Callable[..., Result],
                                               git_repo: Callable[..., Path]) -> None:
    repo = git_repo()
    code, _, err = run(tmp_path / "home", "init", "--repo", f"app={repo}", "--repo",
                       f"app={repo}")
    assert code == 2
    one_error(err)
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("name", ["null", "true", "no", "0x1f", "017", "1.5"])
def test_init_repo_names_stay_strings(name: str, tmp_path: Path, run: Callable[..., Result],
                                      git_repo: Callable[..., Path]) -> None:
    """Names that YAML would read as null, a boolean or a number are written quoted."""
    home = tmp_path / "home"
    code, _, err = run(home, "init", "--repo", f"{name}={git_repo()}")
    assert code == 0, err
    assert set(load_settings(home, environ={}).repos) == {name}
    code, _, err = run(home, "task", "add", "--repo", name, "--title", "T")
    assert code == 0, err


def test_home_that_is_a_file(tmp_path: Path, run: Callable[..., Result]) -> None:
    home = tmp_path / "not-a-dir"
    home.write_text("x")
    code, _, err = run(home, "init")
    assert code == 1
    one_error(err, str(home))
    code, _, err = run(home, "task", "list")
    assert code == 5
    one_error(err, str(home))
    assert home.read_text() == "x"


def test_init_on_a_broken_config_is_a_config_error(orch_home: Path,
                                                   run: Callable[..., Result]) -> None:
    (orch_home / "orch.yaml").write_text("max_rounds: [\n")
    code, _, err = run(orch_home, "init")
    assert code == 4
    one_error(err, "orch.yaml")


# ---------------------------------------------------------------- task add

def test_task_add_prints_the_new_id(orch_home: Path, run: Callable[..., Result]) -> None:
    for expected in ("1", "2"):
        code, out, err = run(orch_home, "task", "add", "--repo", "app", "--title", "T")
        assert (code, out, err) == (0, f"{expected}\n", "")


def test_task_add_json_is_the_task_of_task_show(orch_home: Path,
                                               run: Callable[..., Result]) -> None:
    task = add(run, orch_home, "Add a health endpoint", "--body", "GET /health",
               "--priority", "5")
    assert set(task) == set(TASK_COLUMNS)
    assert task == show(run, orch_home, task["id"])["task"]
    assert (task["repo"], task["title"], task["body"], task["priority"]) == (
        "app", "Add a health endpoint", "GET /health", 5)
    assert (task["stage"], task["state"], task["round"], task["admitted"]) == (
        "analysis", "waiting", 0, 0)
    assert task["paused_at"] is None and task["hold_reason"] is None
    assert ISO.match(task["created_at"]) and ISO.match(task["updated_at"])


def test_task_add_writes_00_task_md(orch_home: Path, run: Callable[..., Result]) -> None:
    task = add(run, orch_home, "Title: with a colon", "--body", "the body text")
    text = (orch_home / "tasks" / str(task["id"]) / "00-task.md").read_text()
    assert text.startswith("---\n")
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert (meta["id"], meta["repo"], meta["title"]) == (task["id"], "app", "Title: with a colon")
    assert "the body text" in body


def test_task_add_body_file(orch_home: Path, run: Callable[..., Result],
                            tmp_path: Path) -> None:
    body = tmp_path / "body.md"
    body.write_text("line one\nline two — ünïcode\n", encoding="utf-8")
    task = add(run, orch_home, "T", "--body-file", str(body))
    assert task["body"] == "line one\nline two — ünïcode\n"
    assert "line two" in (orch_home / "tasks" / str(task["id"]) / "00-task.md").read_text()


@pytest.mark.parametrize("args", [
    ("--body", "x", "--body-file", "body.md"),
    ("--body-file", "does-not-exist.md"),
])
def test_task_add_body_options_refused(args: tuple[str, ...], orch_home: Path,
                                       run: Callable[..., Result], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "body.md").write_text("x")
    before = fingerprint(orch_home)
    code, _, err = run(orch_home, "task", "add", "--repo", "app", "--title", "T", *args)
    assert code == 2
    one_error(err)
    assert fingerprint(orch_home) == before


def test_task_add_unknown_repo_exits_3_and_writes_nothing(
        orch_home: Path, run: Callable[..., Result]) -> None:
    before = fingerprint(orch_home)
    code, out, err = run(orch_home, "task", "add", "--repo", "nope", "--title", "T")
    assert (code, out) == (3, "")
    one_error(err, "'nope'", "app")
    assert fingerprint(orch_home) == before
    assert listing(run, orch_home, "--all") == []


def test_task_add_empty_title_is_refused(orch_home: Path, run: Callable[..., Result]) -> None:
    before = fingerprint(orch_home)
    code, _, err = run(orch_home, "task", "add", "--repo", "app", "--title", "   ")
    assert code == 2
    one_error(err, "title")
    assert fingerprint(orch_home) == before


def test_task_add_priority_out_of_range(orch_home: Path, run: Callable[..., Result]) -> None:
    before = fingerprint(orch_home)
    code, _, err = run(orch_home, "task", "add", "--repo", "app", "--title", "T",
                       "--priority", str(2**63))
    assert code == 2
    one_error(err, "priority")
    assert fingerprint(orch_home) == before
    assert add(run, orch_home, "T", "--priority", str(-(2**63)))["priority"] == -(2**63)


def test_task_add_missing_title_is_a_usage_error(orch_home: Path,
                                                 run: Callable[..., Result]) -> None:
    code, _, err = run(orch_home, "task", "add", "--repo", "app")
    assert code == 2
    one_error(err, "--title")


# ---------------------------------------------------------------- task import

def test_import_yaml_list(orch_home: Path, run: Callable[..., Result], tmp_path: Path) -> None:
    backlog = tmp_path / "backlog.yaml"
    backlog.write_text("- repo: app\n  title: first\n  body: |\n    two\n    lines\n"
                       "- {repo: app, title: second, priority: 7}\n")
    code, out, err = run(orch_home, "task", "import", str(backlog))
    assert (code, err) == (0, "")
    assert "2 task(s): 1 2" in out
    rows = listing(run, orch_home)
    assert [(t["title"], t["body"], t["priority"]) for t in sorted(rows, key=lambda t: t["id"])] \
        == [("first", "two\nlines\n", 0), ("second", "", 7)]
    for task_id in (1, 2):
        assert (orch_home / "tasks" / str(task_id) / "00-task.md").is_file()
        assert show(run, orch_home, task_id)["events"][0]["kind"] == "created"


def test_import_jsonl_with_blank_lines(orch_home: Path, run: Callable[..., Result],
                                       tmp_path: Path) -> None:
    backlog = tmp_path / "backlog.jsonl"
    backlog.write_text('{"repo": "app", "title": "a"}\n\n'
                       '{"repo": "app", "title": "b", "body": null, "priority": -1}\n')
    code, out, err = run(orch_home, "task", "import", str(backlog), "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"ids": [1, 2]}
    assert {t["title"]: t["priority"] for t in listing(run, orch_home)} == {"a": 0, "b": -1}


BAD_IMPORTS = {
    "yaml: priority not an integer": (
        "backlog.yaml", "- {repo: app, title: one}\n- {repo: app, title: two}\n"
        "- {repo: app, title: three, priority: high}\n", 3, 2, "priority"),
    "yaml: missing title": (
        "backlog.yml", "- {repo: app, title: one}\n- repo: app\n  body: no title\n", 2, 2,
        "title"),
    "yaml: unknown key": (
        "backlog.yaml", "- {repo: app, title: one}\n- {repo: app, title: two, prio: 1}\n", 2, 2,
        "'prio'"),
    "yaml: not a mapping": ("backlog.yaml", "- {repo: app, title: one}\n- just text\n", 2, 2,
                            "expected an object"),
    "yaml: duplicate key": (
        "backlog.yaml", "- {repo: app, title: one}\n- {repo: app, title: a, title: b}\n", 2, 2,
        "duplicate"),
    "jsonl: broken JSON": (
        "backlog.jsonl", '{"repo": "app", "title": "a"}\n\n{"repo": "app", "title": \n', 3, 2,
        "JSON"),
    "jsonl: empty title": (
        "backlog.jsonl", '{"repo": "app", "title": "a"}\n{"repo": "app", "title": ""}\n', 2, 2,
        "title"),
    "jsonl: blank title": (
        "backlog.jsonl", '{"repo": "app", "title": "a"}\n{"repo": "app", "title": "  "}\n', 2,
        2, "title"),
    "jsonl: priority beyond SQLite's range": (
        "backlog.jsonl", '{"repo": "app", "title": "a"}\n'
        '{"repo": "app", "title": "b", "priority": 99999999999999999999}\n', 2, 2, "priority"),
    "jsonl: unknown repo": (
        "backlog.jsonl", '{"repo": "app", "title": "a"}\n{"repo": "nope", "title": "b"}\n', 2,
        3, "'nope'"),
    "yaml: unknown repo": (
        "backlog.yaml", "- {repo: app, title: one}\n\n- {repo: other, title: two}\n", 3, 3,
        "'other'"),
}


@pytest.mark.parametrize("case", BAD_IMPORTS, ids=list(BAD_IMPORTS))
def test_import_is_all_or_nothing(case: str, orch_home: Path, run: Callable[..., Result],
                                  tmp_path: Path) -> None:
    name, text, line, exit_code, detail = BAD_IMPORTS[case]
    backlog = tmp_path / name
    backlog.write_text(text)
    before = fingerprint(orch_home)
    code, out, err = run(orch_home, "task", "import", str(backlog))
    assert code == exit_code, err
    assert out == ""
    one_error(err, f"{backlog}:{line}", detail)
    assert fingerprint(orch_home) == before
    assert listing(run, orch_home, "--all") == []


@pytest.mark.parametrize(("name", "text"), [
    ("backlog.txt", "repo: app\n"), ("backlog.yaml", "repo: app\ntitle: T\n")])
def test_import_refuses_other_shapes(name: str, text: str, orch_home: Path,
                                     run: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / name).write_text(text)
    code, _, err = run(orch_home, "task", "import", str(tmp_path / name))
    assert code == 2
    one_error(err, str(tmp_path / name))


def test_import_missing_file(orch_home: Path, run: Callable[..., Result],
                             tmp_path: Path) -> None:
    code, _, err = run(orch_home, "task", "import", str(tmp_path / "nope.yaml"))
    assert code == 2
    one_error(err, "nope.yaml")


# ---------------------------------------------------------------- task list / show

@pytest.fixture
def two_repo_home(tmp_path: Path, run: Callable[..., Result],
                  git_repo: Callable[..., Path]) -> Path:
    home = tmp_path / "home2"
    code, _, err = run(home, "init", "--repo", f"app={git_repo('app')}",
                       "--repo", f"lib={git_repo('lib')}")
    assert code == 0, err
    for repo, title in (("app", "a1"), ("lib", "l1"), ("app", "a2")):
        assert run(home, "task", "add", "--repo", repo, "--title", title)[0] == 0
    assert run(home, "cancel", "3")[0] == 0
    return home


def test_task_list(two_repo_home: Path, run: Callable[..., Result]) -> None:
    rows = listing(run, two_repo_home)
    assert sorted(t["title"] for t in rows) == ["a1", "l1"]
    assert all(set(t) == set(TASK_COLUMNS) for t in rows)
    every = listing(run, two_repo_home, "--all")
    assert [t["title"] for t in every] == ["a1", "l1", "a2"]
    assert every[2]["stage"] == "cancelled" and every[2]["state"] == "closed"
    assert [t["title"] for t in listing(run, two_repo_home, "--repo", "lib")] == ["l1"]
    assert [t["title"] for t in listing(run, two_repo_home, "--repo", "app", "--all")] == [
        "a1", "a2"]


def test_task_list_text(two_repo_home: Path, run: Callable[..., Result]) -> None:
    code, out, err = run(two_repo_home, "task", "list")
    assert (code, err) == (0, "")
    assert "a1" in out and "l1" in out and "a2" not in out


def test_task_list_empty(orch_home: Path, run: Callable[..., Result]) -> None:
    assert listing(run, orch_home) == []
    code, out, _ = run(orch_home, "task", "list")
    assert code == 0 and out.strip() == "no open tasks"


def test_task_list_unknown_repo(orch_home: Path, run: Callable[..., Result]) -> None:
    code, _, err = run(orch_home, "task", "list", "--repo", "nope")
    assert code == 3
    one_error(err, "'nope'")


def test_task_show_json(orch_home: Path, run: Callable[..., Result]) -> None:
    task = add(run, orch_home, "T")
    detail = show(run, orch_home, task["id"])
    assert set(detail) == {"task", "jobs", "runs", "events", "artifacts"}
    assert set(detail["task"]) == set(TASK_COLUMNS)
    assert detail["jobs"] == [] and detail["runs"] == []
    assert detail["artifacts"] == ["00-task.md"]
    assert [event["kind"] for event in detail["events"]] == ["created"]
    assert detail["events"][0]["task_id"] == task["id"]


def test_task_show_text(orch_home: Path, run: Callable[..., Result]) -> None:
    add(run, orch_home, "Add a health endpoint")
    code, out, err = run(orch_home, "task", "show", "1")
    assert (code, err) == (0, "")
    for part in ("task 1", "Add a health endpoint", "analysis", "waiting", "timeline",
                 "created", "00-task.md"):
        assert part in out


def test_titles_are_printed_literally(orch_home: Path, run: Callable[..., Result]) -> None:
    add(run, orch_home, "Fix [/red] parsing of [bold] tags")
    for args in (("task", "show", "1"), ("task", "list")):
        code, out, err = run(orch_home, *args)
        assert (code, err) == (0, "")
        assert "[/red]" in out


@pytest.mark.parametrize(("task_id", "exit_code"), [("99", 3), ("0", 3), ("abc", 2)])
def test_task_show_unknown(task_id: str, exit_code: int, orch_home: Path,
                           run: Callable[..., Result]) -> None:
    code, out, err = run(orch_home, "task", "show", task_id, "--json")
    assert (code, out) == (exit_code, "")
    one_error(err)
    if exit_code == 3:
        one_error(err, f"no such task: {task_id}")


# ---------------------------------------------------------------- cancel

def test_cancel_many_ids_applies_the_good_ones(orch_home: Path,
                                               run: Callable[..., Result]) -> None:
    for title in ("a", "b", "c"):
        add(run, orch_home, title)
    code, out, err = run(orch_home, "cancel", "1", "99", "3")
    assert code == 3
    one_error(err, "99")
    assert "task 1" in out and "task 3" in out
    states = {t["id"]: (t["stage"], t["state"]) for t in listing(run, orch_home, "--all")}
    assert states == {1: ("cancelled", "closed"), 2: ("analysis", "waiting"),
                      3: ("cancelled", "closed")}
    assert [e["kind"] for e in show(run, orch_home, 1)["events"]] == ["created", "cancelled"]


def test_cancel_a_closed_task_is_refused(orch_home: Path, run: Callable[..., Result]) -> None:
    add(run, orch_home, "a")
    assert run(orch_home, "cancel", "1")[0] == 0
    before = show(run, orch_home, 1)
    code, _, err = run(orch_home, "cancel", "1")
    assert code == 1
    one_error(err, "task 1", "closed")
    assert show(run, orch_home, 1) == before
    # the worst status wins: 3 (no such task) over 1 (refused)
    code, _, err = run(orch_home, "cancel", "1", "42")
    assert code == 3
    assert len(err.splitlines()) == 2


def test_cancel_needs_an_id(orch_home: Path, run: Callable[..., Result]) -> None:
    code, _, err = run(orch_home, "cancel")
    assert code == 2
    one_error(err)


# ---------------------------------------------------------------- pipeline show

def test_pipeline_show_json(orch_home: Path, run: Callable[..., Result]) -> None:
    code, out, err = run(orch_home, "pipeline", "show", "--json")
    assert (code, err) == (0, "")
    stages = json.loads(out)["stages"]
    assert [s["name"] for s in stages] == ["analysis", "development", "review", "testing",
                                           "staging", "merge"]
    for stage in stages:
        assert {"name", "runner", "role", "gate", "on_fail"} <= set(stage)
    by_name = {s["name"]: s for s in stages}
    assert (by_name["analysis"]["runner"], by_name["analysis"]["role"],
            by_name["analysis"]["gate"]) == ("agent", "analyst", "analysis_ready")
    assert by_name["analysis"]["on_fail"] is None
    assert by_name["review"]["on_fail"] == "development"
    assert (by_name["testing"]["runner"], by_name["testing"]["role"],
            by_name["testing"]["gate"]) == ("test-runner", None, "tests_passed")
    assert by_name["merge"]["gate"] == "merged"


def test_pipeline_show_mermaid(orch_home: Path, run: Callable[..., Result]) -> None:
    code, out, err = run(orch_home, "pipeline", "show", "--mermaid")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> analysis" in lines
    assert any(line.startswith("    review --> development") for line in lines)
    assert any(line.startswith("    merge --> done") for line in lines)


def test_pipeline_show_text_and_exclusive_options(orch_home: Path,
                                                  run: Callable[..., Result]) -> None:
    code, out, err = run(orch_home, "pipeline", "show")
    assert (code, err) == (0, "")
    assert "analysis" in out and "source:" in out
    code, _, err = run(orch_home, "pipeline", "show", "--json", "--mermaid")
    assert code == 2
    one_error(err)


# ---------------------------------------------------------------- usage errors

@pytest.mark.parametrize("args", [
    ("task", "list", "--home", "{home}"),
    ("task", "add", "--repo", "app", "--title", "T", "--verbose"),
    ("pipeline", "show", "--version"),
    ("task", "list", "--no-such-option"),
    ("no-such-command",),
])
def test_global_options_after_the_command_are_usage_errors(
        args: tuple[str, ...], orch_home: Path, run: Callable[..., Result]) -> None:
    before = fingerprint(orch_home)
    argv = [arg.replace("{home}", str(orch_home)) for arg in args]
    code, _, err = run(None if "--home" in argv else orch_home, *argv)
    assert code == 2
    one_error(err)
    assert fingerprint(orch_home) == before


def test_version(run: Callable[..., Result]) -> None:
    code, out, _ = run(None, "--version")
    assert code == 0 and out.startswith("orch ")


def test_cli_runner_on_the_app(orch_home: Path, clean_env: None) -> None:
    """The typer app itself works under CliRunner (the fast path other tests may use)."""
    result = CliRunner().invoke(app, ["--home", str(orch_home), "task", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


def test_a_run_builds_only_its_command_and_help_still_lists_all(
        cli: Callable[..., CliResult], orch_home: Path) -> None:
    from orch.cli import _app_for, app

    slim = _app_for(["--home", "x", "tick", "--json"])
    assert [info.name for info in slim.registered_commands] == ["tick"]
    assert not slim.registered_groups
    task = _app_for(["task", "list"])
    assert len(task.registered_groups) == 1 and not task.registered_commands
    assert _app_for(["--help"]) is app and _app_for(["nosuch"]) is app
    code, out, _ = cli(orch_home, "tick", "--json")
    assert code == 0 and json.loads(out)["claimed"] == []
    code, _, err = cli(orch_home, "tikc")
    assert code == 2 and "tick" in err
    code, out, _ = cli(None, "--help")
    assert code == 0 and "queue" in out and "tick" in out


# ---------------------------------------------------------------- the real console script

def test_issue_2_done_when_through_the_console_script(
        tmp_path: Path, git_repo: Callable[..., Path]) -> None:
    env = {k: v for k, v in os.environ.items() if keep_env(k)}
    home, repo = tmp_path / "H", git_repo()

    def orch(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([orch_script(), "--home", str(home), *args], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in proc.stderr
        return proc

    init = orch("init", "--repo", f"app={repo}")
    assert init.returncode == 0, init.stderr
    added = orch("task", "add", "--repo", "app", "--title", "T", "--json")
    assert added.returncode == 0, added.stderr
    task = json.loads(added.stdout)
    shown = orch("task", "show", str(task["id"]), "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["task"] == task
    assert (detail["task"]["stage"], detail["task"]["state"]) == ("analysis", "waiting")
    missing = orch("task", "show", "99")
    assert missing.returncode == 3
    assert missing.stdout == ""
    one_error(missing.stderr, "no such task: 99")
    late = subprocess.run([orch_script(), "task", "list", "--home", str(home)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert late.returncode == 2
    one_error(late.stderr, "--home")
