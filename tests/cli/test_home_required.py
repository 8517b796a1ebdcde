"""Only `orch init` makes a home (SPEC section 1): every other command that needs one
refuses a directory with neither orch.yaml nor orch.db, exit 4, and creates nothing.

The reproduction: `orch --home /typo tick` (and `queue`, and the same through `ORCH_HOME`
in a cron line with `--quiet`) made an empty home and said "nothing to do", forever.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import CliResult

Cli = Callable[..., CliResult]

# Every command that needs a home, with arguments it would otherwise accept.
NEEDS_HOME = [
    ("tick",), ("tick", "--json"), ("tick", "--dry-run"), ("queue",), ("queue", "--json"),
    ("task", "list"), ("task", "add", "--repo", "app", "--title", "T"), ("task", "show", "1"),
    ("pause", "1"), ("resume", "1"), ("retry", "1"), ("cancel", "1"), ("approve", "1"),
    ("reject", "1", "--reason", "no"), ("freeze", "--all"), ("unfreeze", "--all"), ("logs", "1"),
    ("metrics",), ("gc", "--dry-run"), ("pipeline", "show"), ("doctor",),
    ("test-run", "--task", "1"),
]


def orch_process(*args: str, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m orch ARGS` as a separate process, without our ORCH_* variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return subprocess.run([sys.executable, "-m", "orch", *args], env=base | (env or {}),
                          capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def refusal(home: Path) -> str:
    return f"error: no orch home at {home} (run orch init)\n"


def test_a_mistyped_home_is_refused_by_tick_and_queue(tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    for args in (("tick",), ("tick", "--json"), ("queue",)):
        done = orch_process("--home", str(typo), *args)
        assert (done.returncode, done.stdout, done.stderr) == (4, "", refusal(typo)), args
    assert not typo.exists()


def test_a_cron_line_with_a_mistyped_orch_home_fails_loudly(tmp_path: Path) -> None:
    typo = tmp_path / "orch-hmoe"
    done = orch_process("tick", "--quiet", env={"ORCH_HOME": str(typo)})
    assert (done.returncode, done.stdout, done.stderr) == (4, "", refusal(typo))
    assert not typo.exists()


@pytest.mark.parametrize("args", NEEDS_HOME, ids=" ".join)
def test_every_command_that_needs_a_home_refuses_an_empty_directory(
        args: tuple[str, ...], tmp_path: Path, cli: Cli) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = cli(empty, *args)
    assert (code, out, err) == (4, "", refusal(empty))
    assert list(empty.iterdir()) == []  # nothing created in it
    code, _, err = cli(tmp_path / "missing", *args)
    assert (code, err) == (4, refusal(tmp_path / "missing"))
    assert not (tmp_path / "missing").exists()


def test_a_home_is_a_directory_with_orch_yaml_or_orch_db(tmp_path: Path, cli: Cli) -> None:
    only_db = tmp_path / "db-only"
    assert cli(only_db, "init")[0] == 0
    (only_db / "orch.yaml").unlink()
    assert cli(only_db, "queue", "--json")[0] == 0
    only_yaml = tmp_path / "yaml-only"
    only_yaml.mkdir()
    (only_yaml / "orch.yaml").write_text("max_concurrency: 2\n", encoding="utf-8")
    code, out, err = cli(only_yaml, "tick", "--json")
    assert code == 0, err
    assert json.loads(out)["claimed"] == []
    assert (only_yaml / "orch.db").is_file()  # a configured home gets its database


def test_commands_that_need_no_home_create_none(tmp_path: Path, cli: Cli) -> None:
    nowhere = tmp_path / "nowhere"
    for args in (("--help",), ("--version",), ("tick", "--help"), ("task", "--help")):
        code, _, err = cli(nowhere, *args)
        assert code == 0, (args, err)
    tree = tmp_path / "tree"
    (tree / "tests").mkdir(parents=True)
    (tree / "tests" / "test_ok.py").write_text("def test_ok():\n    pass\n", encoding="utf-8")
    done = orch_process("--home", str(nowhere), "test-run", str(tree), "--json", "--quiet",
                        env={"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == "PASS"
    assert not nowhere.exists()
    code, _, err = cli(nowhere, "init")
    assert code == 0, err
    assert (nowhere / "orch.yaml").is_file() and (nowhere / "orch.db").is_file()


def test_init_warns_about_a_repo_path_that_is_not_a_git_repository(
        tmp_path: Path, cli: Cli, git_repo: Callable[..., Path]) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    home = tmp_path / "home"
    code, out, err = cli(home, "init", "--repo", f"app={git_repo('app')}",
                         "--repo", f"x={plain}", "--repo", f"y={tmp_path / 'not' / 'there'}")
    assert code == 0
    assert "repo: x" in out
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines)
    assert f"repo x: {plain} is not a git repository" in lines[0]
    assert f"repo y: {tmp_path / 'not' / 'there'} does not exist" in lines[1]
    code, out, _ = cli(home, "doctor", "--json")
    checks = {check["name"]: check for check in json.loads(out)["checks"]}
    assert code == 1
    assert checks["repo x"]["status"] == "fail" and "not a git repository" in \
        checks["repo x"]["detail"]
    assert checks["repo y"]["status"] == "fail"
    assert checks["repo app"]["status"] == "ok"


def test_init_of_a_git_repository_says_nothing_on_stderr(tmp_path: Path, cli: Cli,
                                                          git_repo: Callable[..., Path]) -> None:
    code, _, err = cli(tmp_path / "home", "init", "--repo", f"app={git_repo('app')}")
    assert (code, err) == (0, "")
