"""The project's own environment for its tests (orch.testenv), through the CLI.

Real projects of each layout in tmp_path: `orch init --repo` writes the detected test
command (with a comment saying what it found), `orch test-run` runs it, `orch doctor`
checks that pytest imports there and that the package under test comes from the
worktree. The projects' main branch has a bug that a task worktree fixes, so "the
worktree's code was tested" is seen in the verdict, not assumed: with an editable
install into the main checkout's virtualenv, the main checkout's `.venv/bin/python`
alone would test the bug.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.cli import CliResult
from support.projects import (
    PROJECT,
    SETUPTOOLS,
    commit_all,
    fix_in_worktree,
    package,
    run,
    tool,
    tool_env,
    venv_with_editable_install,
    write,
)

Cli = Callable[..., CliResult]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, clean_env: None) -> dict[str, str]:
    """orch's own environment as a user's shell would have it: uv and Poetry on PATH,
    no active virtualenv; Poetry's environments kept in tmp (set by the Poetry test)."""
    values = tool_env()
    for key in ("VIRTUAL_ENV", "PYTHONPATH"):
        monkeypatch.delenv(key, raising=False)
    for key in ("PATH", "UV_PYTHON_DOWNLOADS"):
        monkeypatch.setenv(key, values[key])
    return values


def init(cli: Cli, home: Path, repo: Path) -> dict[str, Any]:
    """`orch init --repo app=REPO`; returns repos.app of the written orch.yaml."""
    code, _, err = cli(home, "init", "--repo", f"app={repo}")
    assert code == 0, err
    return yaml.safe_load((home / "orch.yaml").read_text())["repos"]["app"]


def comment(home: Path) -> str:
    """The `# detected: ...` comment init wrote above the command."""
    lines = (home / "orch.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "# detected:" in line)
    found = []
    for line in lines[start:]:
        if not line.strip().startswith("#"):
            break
        found.append(line.strip().lstrip("# "))
    return " ".join(found)


def doctor_test_check(cli: Cli, home: Path) -> dict[str, str]:
    _, out, err = cli(home, "doctor", "--json")
    assert "Traceback" not in out + err
    return next(c for c in json.loads(out)["checks"] if c["name"] == "test app")


def verdict(cli: Cli, home: Path | None, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = cli(home, "test-run", *args, "--json")
    assert code in (0, 1, 75), err
    return code, json.loads(out)


# --------------------------------------------------------------------------- what init writes


LAYOUTS: dict[str, dict[str, str]] = {
    "tox": {"pyproject.toml": PROJECT, "tox.ini": "[tox]\nenv_list = py\n"},
    "nox": {"pyproject.toml": PROJECT,
            "noxfile.py": "import nox\n\n\n@nox.session\ndef tests(session):\n"
                          "    session.run('pytest')\n"},
    "plain pyproject": {"pyproject.toml": PROJECT + SETUPTOOLS},
    "requirements": {"requirements-dev.txt": "pytest\n", "app/__init__.py": ""},
    "nothing": {"README.md": "# not Python\n"},
}
EXPECTED = {
    "tox": (["tox", "-e", "py", "--"], None, "tox.ini"),
    "nox": (["nox", "-s", "tests", "--"], None, "noxfile.py: nox runs session `tests`"),
    "plain pyproject": (["python", "-m", "pytest", "-q"], {"PYTHONPATH": "{worktree}"},
                        "pyproject.toml and no project environment"),
    "requirements": (["python", "-m", "pytest", "-q"], {"PYTHONPATH": "{worktree}"},
                     "pip install -r requirements-dev.txt pytest"),
    "nothing": (["python", "-m", "pytest", "-q"], None, "no Python project files"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_init_writes_the_detected_command_with_a_comment(layout: str, tmp_path: Path,
                                                         cli: Cli, env: dict[str, str]) -> None:
    repo = tmp_path / "app"
    write(repo, LAYOUTS[layout])
    commit_all(repo)
    written = init(cli, tmp_path / "home", repo)
    command, test_env, said = EXPECTED[layout]
    assert written["test"]["command"] == command
    assert written["test"].get("env") == test_env
    assert said in comment(tmp_path / "home")
    assert cli(tmp_path / "home", "config", "show", "--json")[0] == 0  # it loads


def test_pdm_and_hatch_use_the_main_checkouts_interpreter(tmp_path: Path, cli: Cli,
                                                          env: dict[str, str]) -> None:
    # PDM records its interpreter in .pdm-python; a Hatch project here keeps its
    # environment in the project (hatch itself is not installed: its .venv is used)
    pdm = package(tmp_path / "pdm", PROJECT + SETUPTOOLS + "[tool.pdm]\n")
    python = venv_with_editable_install(pdm, env, name="env-of-pdm")
    write(pdm, {"pdm.lock": "# pdm lock\n", ".pdm-python": f"{python}\n"})
    commit_all(pdm)
    written = init(cli, tmp_path / "h1", pdm)
    assert written["test"]["command"] == [str(python), "-m", "pytest", "-q"]
    assert written["test"]["env"] == {"PYTHONPATH": "{worktree}/src"}
    assert "PDM (pdm.lock)" in comment(tmp_path / "h1")

    hatch = package(tmp_path / "hatch", PROJECT + SETUPTOOLS, src=False)
    write(hatch, {"hatch.toml": "[envs.default]\ndependencies = ['pytest']\n"})
    python = venv_with_editable_install(hatch, env)
    commit_all(hatch)
    written = init(cli, tmp_path / "h2", hatch)
    assert written["test"]["command"] == [str(python), "-m", "pytest", "-q"]
    assert written["test"]["env"] == {"PYTHONPATH": "{worktree}"}
    assert "Hatch environments" in comment(tmp_path / "h2")


# --------------------------------------------------------------------------- a virtualenv


@pytest.mark.parametrize("src", [True, False], ids=["src-layout", "flat-layout"])
def test_an_editable_install_tests_the_worktree_not_the_main_checkout(
        src: bool, tmp_path: Path, cli: Cli, env: dict[str, str]) -> None:
    repo = package(tmp_path / "app", PROJECT + SETUPTOOLS, src=src)
    python = venv_with_editable_install(repo, env)  # points at the main checkout
    commit_all(repo)
    home = tmp_path / "home"
    written = init(cli, home, repo)
    assert written["test"]["command"] == [str(python), "-m", "pytest", "-q"]
    assert written["test"]["env"] == {"PYTHONPATH": "{worktree}/src" if src else "{worktree}"}
    assert "the virtualenv .venv/" in comment(home)

    check = doctor_test_check(cli, home)
    assert check["status"] == "ok", check
    assert "package app resolves in the worktree" in check["detail"]

    worktree = fix_in_worktree(repo, home / "worktrees" / "app" / "1", src=src)
    code, meta = verdict(cli, home, str(worktree))
    assert (code, meta["result"]) == (0, "PASS"), meta  # the worktree's fixed code
    code, meta = verdict(cli, home, str(repo))
    assert (code, meta["result"]) == (1, "FAIL")  # the main checkout's bug

    # without the env, the editable install wins for a src layout: doctor says so and how
    config = home / "orch.yaml"
    config.write_text("\n".join(line for line in config.read_text().splitlines()
                                if not line.strip().startswith("env: {PYTHONPATH")) + "\n")
    check = doctor_test_check(cli, home)
    if src:
        assert check["status"] == "fail"
        assert "the main checkout (an editable install)" in check["detail"]
        assert 'env: {PYTHONPATH: "{worktree}/src"}' in check["detail"]
        assert verdict(cli, home, str(worktree))[1]["result"] == "FAIL"  # tested main's bug
    else:  # `python -m pytest` puts the worktree (its cwd) first anyway
        assert check["status"] == "ok"


def test_doctor_says_how_to_get_pytest_into_the_environment(tmp_path: Path, cli: Cli,
                                                            env: dict[str, str]) -> None:
    repo = package(tmp_path / "app", PROJECT + SETUPTOOLS)
    uv = tool("uv")
    run([uv, "venv", "-q", ".venv", "--python", "python3"], repo, env)  # no pytest in it
    commit_all(repo)
    home = tmp_path / "home"
    init(cli, home, repo)
    check = doctor_test_check(cli, home)
    assert check["status"] == "fail"
    assert "cannot import pytest: ModuleNotFoundError" in check["detail"]
    assert f"`{repo}/.venv/bin/python -m pip install pytest`" in check["detail"]


def test_test_run_without_a_home_detects_the_project(tmp_path: Path, cli: Cli,
                                                     env: dict[str, str]) -> None:
    # a CI checkout with its own virtualenv: no home, the same detection as init
    repo = package(tmp_path / "app", PROJECT + SETUPTOOLS)
    venv_with_editable_install(repo, env)
    (repo / "src" / "app" / "__init__.py").write_text(
        "def add(a, b):\n    return a + b\n")
    code, out, err = cli(tmp_path / "no-home", "test-run", str(repo))
    assert code == 0, out + err
    # the test command's own output comes first, live; then orch's verdict line
    verdict = next(line for line in out.splitlines() if line.startswith("PASS ("))
    assert f"{repo}/.venv/bin/python -m pytest -q" in verdict
    assert "detected: the virtualenv .venv/" in out
    assert not (tmp_path / "no-home").exists()


# --------------------------------------------------------------------------- uv and Poetry


def test_a_uv_project_syncs_each_worktree_from_its_lock(tmp_path: Path, cli: Cli,
                                                        env: dict[str, str]) -> None:
    uv = tool("uv")
    repo = package(tmp_path / "app", PROJECT + '[dependency-groups]\ndev = ["pytest"]\n\n'
                   + SETUPTOOLS)
    run([uv, "lock", "-q", "--python", "python3"], repo, env)
    commit_all(repo)
    home = tmp_path / "home"
    written = init(cli, home, repo)
    assert written["test"]["command"] == ["uv", "run", "--frozen", "pytest", "-q"]
    assert written["test"]["env"] == {"PYTHONPATH": "{worktree}/src"}
    assert "uv.lock" in comment(home)

    check = doctor_test_check(cli, home)
    assert check["status"] == "ok", check
    assert "package app resolves in the worktree (src/app)" in check["detail"]

    worktree = fix_in_worktree(repo, home / "worktrees" / "app" / "1")
    assert verdict(cli, home, str(worktree))[1]["result"] == "PASS"
    assert (worktree / ".venv").is_dir() and not (repo / ".venv").exists()
    assert verdict(cli, home, str(repo))[1]["result"] == "FAIL"


def test_a_poetry_project_uses_its_environment_outside_the_project(
        tmp_path: Path, cli: Cli, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    poetry = tool("poetry")
    venvs = tmp_path / "poetry-venvs"
    monkeypatch.setenv("POETRY_VIRTUALENVS_PATH", str(venvs))
    monkeypatch.setenv("POETRY_VIRTUALENVS_IN_PROJECT", "false")
    tools = env | {"POETRY_VIRTUALENVS_PATH": str(venvs),
                   "POETRY_VIRTUALENVS_IN_PROJECT": "false"}
    repo = package(tmp_path / "app", textwrap.dedent("""\
        [tool.poetry]
        name = "app"
        version = "0.1.0"
        description = ""
        authors = ["orch tests <tests@orch.invalid>"]
        packages = [{include = "app", from = "src"}]

        [tool.poetry.dependencies]
        python = ">=3.11"

        [tool.poetry.group.dev.dependencies]
        pytest = "*"

        [build-system]
        requires = ["poetry-core"]
        build-backend = "poetry.core.masonry.api"
        """))
    run([poetry, "install", "-q", "--no-interaction"], repo, tools)  # the project: editable
    commit_all(repo)
    home = tmp_path / "home"
    written = init(cli, home, repo)
    python = Path(written["test"]["command"][0])
    assert python.is_relative_to(venvs) and written["test"]["command"][1:] == [
        "-m", "pytest", "-q"]
    assert written["test"]["env"] == {"PYTHONPATH": "{worktree}/src"}
    assert "Poetry (poetry.lock)" in comment(home)

    check = doctor_test_check(cli, home)
    assert check["status"] == "ok", check
    worktree = fix_in_worktree(repo, home / "worktrees" / "app" / "1")
    assert verdict(cli, home, str(worktree))[1]["result"] == "PASS"
    assert verdict(cli, home, str(repo))[1]["result"] == "FAIL"


# --------------------------------------------------------------------------- the pipeline

FIX_AND_TEST = """\
stages:
  - name: development
    runner: command
    command:
      - sh
      - -c
      - >-
        printf 'def add(a, b):\\n    return a + b\\n' > src/app/__init__.py &&
        git -c user.name=dev -c user.email=dev@orch.invalid commit -qam "fix add"
  - {name: testing, runner: test-runner, on_fail: development}
"""


def test_a_task_passes_the_testing_stage_on_its_worktrees_code(
        tmp_path: Path, cli: Cli, env: dict[str, str]) -> None:
    repo = package(tmp_path / "app", PROJECT + SETUPTOOLS)
    venv_with_editable_install(repo, env)
    commit_all(repo)
    home = tmp_path / "home"
    init(cli, home, repo)
    (home / "pipeline.yaml").write_text(FIX_AND_TEST)
    config = home / "orch.yaml"
    config.write_text(config.read_text().replace("pipeline: default", "pipeline: pipeline.yaml")
                      .replace("retry_backoff_s: 60", "retry_backoff_s: 0"))
    assert cli(home, "task", "add", "--repo", "app", "--title", "fix add")[0] == 0
    for _ in range(8):
        assert cli(home, "tick", "--quiet")[0] == 0
        shown = json.loads(cli(home, "task", "show", "1", "--json")[1])
        if shown["task"]["state"] == "closed":
            break
    assert shown["task"]["stage"] == "done", shown["events"]
    report = (home / "tasks" / "1" / "13-test-report.md").read_text()
    assert "result: PASS" in report and ".venv/bin/python -m pytest -q" in report
