"""`orch init`: the home, its commented orch.yaml and its database; opening the state."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.config import AGENT_PRESETS, Settings, load_settings
from orch.errors import RefusedError, UsageError
from orch.home import HOME_DIRS, Home
from orch.state.db import Database

REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class InitResult:
    home: Path
    config_written: bool
    repos: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def parse_repo_option(text: str) -> tuple[str, Path]:
    """`NAME=PATH` from `orch init --repo`; the path is made absolute."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise UsageError(f"--repo {text!r}: expected NAME=PATH")
    if not REPO_NAME.match(name):
        raise UsageError(f"--repo {text!r}: repo names use letters, digits, '.', '_' and '-'")
    return name, Path(path).expanduser().absolute()


def packaged_config_text() -> str:
    return (Path(__file__).resolve().parents[2] / "data" / "orch.yaml").read_text("utf-8")


AGENTS_BEGIN = "agents:\n"
AGENTS_END = "\nrepos: {}\n"
ROLE_NOTES = {
    "tester": "used only with flags.test_runner_enabled: false",
}
AGENT_KINDS = tuple(AGENT_PRESETS)
KIND_NOTES = {
    "claude": ("Point it at a proxy or gateway with ANTHROPIC_BASE_URL in env_file.",),
    "codex": ("Name the provider (base_url, env_key) in $CODEX_HOME/config.toml.",),
    "aider": ("aider is the developer only: it commits itself and orch's report wrapper",
              "writes 10-dev-report.md from what it did. It cannot write outside its",
              "repository, so the roles whose deliverable is a judgment written in the",
              "artifacts folder (analysis, review, test report) stay with Claude Code."),
}


def agents_yaml(kind: str, python: str | None = None) -> str:
    """The `agents:` lines of KIND's presets (claude, codex or aider), one role a line;
    `{python}` in a preset becomes this interpreter (orch's own, for its wrappers)."""
    if kind not in AGENT_PRESETS:
        raise UsageError(f"--agents {kind!r}: expected one of {', '.join(AGENT_KINDS)}")
    lines = [f"  # {kind} presets (orch init --agents {kind}); docs/agents.md explains each "
             "flag", *(f"  # {line}" for line in KIND_NOTES.get(kind, ()))]
    for role, spec in AGENT_PRESETS[kind].items():
        if role in ROLE_NOTES:
            lines.append(f"  # {role}: {ROLE_NOTES[role]}")
        lines.append(f"  {role + ':':<10} {_flow(spec, python or sys.executable)}")
    return "\n".join(lines) + "\n"


def _flow(spec: dict[str, Any], python: str) -> str:
    """One role as a YAML flow mapping (JSON strings are YAML double-quoted strings)."""
    command = ", ".join(json.dumps(element.replace("{python}", python))
                        for element in spec["command"])
    output = json.dumps(spec["output"]) if spec["output"] else "null"
    return f"{{command: [{command}], output: {output}, timeout_s: {spec['timeout_s']}}}"


def _with_agents(text: str, kind: str) -> str:
    """The packaged text with its `agents:` block replaced by KIND's presets."""
    start = text.index(AGENTS_BEGIN) + len(AGENTS_BEGIN)
    end = text.index(AGENTS_END, start)
    return text[:start] + agents_yaml(kind) + text[end:]


def render_config(repos: list[tuple[str, Path]], agents: str = "claude") -> str:
    """The commented example config with KIND's agent presets; `--repo` entries replace its
    empty `repos: {}`."""
    text = _with_agents(packaged_config_text(), agents)
    if not repos:
        return text
    lines = ["repos:"]
    for name, path in repos:
        lines += repo_lines(name, path)
    return text.replace("repos: {}\n", "\n".join(lines) + "\n", 1)


def default_branch_of(path: Path) -> str:
    """main, else master when the repository has it, else its checked-out branch."""
    from orch import gitops

    for name in ("main", "master"):
        if gitops.branch_exists(path, name):
            return name
    return gitops.current_branch(path) or "main"


def repo_lines(name: str, path: Path) -> list[str]:
    """One `--repo` entry: its path, its default branch (main, master, else the checked-out
    branch), and the test command detected from the project's layout (orch.testenv), with
    a comment saying what was found."""
    from orch import testenv
    from orch.availability import is_git_repo

    branch = default_branch_of(path) if is_git_repo(path) else "main"
    found = testenv.detect(path) if path.is_dir() else testenv.TestEnv(
        "none", testenv.DEFAULT_COMMAND, {}, f"{path} does not exist yet: the default")
    # quoted: a repo named null, true, no or 0x1f must stay that string in YAML
    return [f"  {json.dumps(name)}:", f"    path: {json.dumps(str(path))}",
            f"    default_branch: {json.dumps(branch)}", "    max_active: 1",
            *testenv.yaml_lines(found, "    ")]


def init_home(home: Path, repo_options: list[str], agents: str = "claude") -> InitResult:
    """Create the home, a commented orch.yaml (with `agents` presets) and the database;
    idempotent."""
    if agents not in AGENT_PRESETS:
        raise UsageError(f"--agents {agents!r}: expected one of {', '.join(AGENT_KINDS)}")
    repos = [parse_repo_option(option) for option in repo_options]
    names = [name for name, _ in repos]
    if len(set(names)) != len(names):
        raise UsageError("--repo: the same repo name is given twice")
    config = Home(home).config_file
    if config.exists() and repos:
        raise RefusedError(f"{config} exists and orch never rewrites it: add the repos "
                           "under `repos:` in that file instead")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RefusedError(f"{home}: cannot create the orch home: {exc.strerror or exc}") from exc
    written = False
    if not config.exists():
        from orch.artifacts import write_atomic

        write_atomic(config, render_config(repos, agents))
        written = True
    settings = load_settings(home)
    for sub in HOME_DIRS:
        (home / sub).mkdir(exist_ok=True)
    open_state(settings).close()
    return InitResult(home, written, tuple(names), repo_warnings(repos))


def repo_warnings(repos: list[tuple[str, Path]]) -> tuple[str, ...]:
    """A warning for each `--repo` PATH that is not a git repository (the home is still
    made: the repository may be cloned there later; `orch doctor` fails until it is)."""
    from orch.availability import is_git_repo

    warnings = []
    for name, path in repos:
        if not path.exists():
            warnings.append(f"repo {name}: {path} does not exist (clone it there, or fix "
                            f"repos.{name}.path in orch.yaml); its tasks wait until it does")
        elif not is_git_repo(path):
            warnings.append(f"repo {name}: {path} is not a git repository (git init it, or "
                            f"fix repos.{name}.path in orch.yaml); its tasks wait until it is")
    return tuple(warnings)


def open_state(settings: Settings, *, create: bool = True) -> Database:
    """Open (creating and migrating as needed) the home's state: `state:` or orch.db."""
    from orch.state import open_location

    return open_location(settings.state_location, create=create, host=settings.host_name)
