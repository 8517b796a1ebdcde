"""Settings: `orch.yaml` loaded once into frozen, typed objects (SPEC section 2).

Everything the rest of orch knows about configuration comes from here: the
YAML is read, `ORCH_<KEY>` environment overrides are applied to top-level
scalars and flags, every key is checked for type and range, and a mistake
becomes a ConfigError naming the file, the key path and the line. Nothing
reads os.environ or YAML after this.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

from orch.errors import ConfigError, NotFoundError
from orch.frozen import frozen_record
from orch.home import CONFIG_FILE, Home
from orch.yamlio import KeyPath, dotted, load_yaml_file

FLAG_DEFAULTS: dict[str, bool] = {
    "serial_gate_enabled": True,
    "impossible_queued_sanitize_enabled": True,
    "analyst_questions_gate_enabled": True,
    "analyst_needs_input_autopause_enabled": True,
    "test_runner_enabled": True,
    "staging_runner_exec_host_side": True,
    "kick_enabled": True,
}

# top-level scalar: (type, minimum or None, default)
SCALARS: dict[str, tuple[type, int | None, Any]] = {
    "max_concurrency": (int, 0, 1),
    "heartbeat_interval_s": (int, 1, 10),
    "heartbeat_timeout_s": (int, 1, 60),
    "max_attempts": (int, 1, 3),
    "max_defers": (int, 0, 5),
    "max_rounds": (int, 0, 3),
    "retry_backoff_s": (int, 0, 60),
    "cancel_grace_s": (int, 0, 10),
    "retention_days": (int, 0, 14),
    "env_file": (str, None, None),
    "pipeline": (str, None, "default"),
    "log_max_mb": (int, 1, 100),
    "state": (str, None, None),
    "host": (str, None, None),
    "host_max_concurrency": (int, 0, None),
    "host_timeout_s": (int, 1, 300),
}
TOP_KEYS = (*SCALARS, "notify", "flags", "budget", "agents", "repos")
AGENT_KEYS = ("command", "output", "timeout_s", "env", "stdin")
AGENT_OUTPUTS = (None, "claude-json", "codex-jsonl")
REPO_KEYS = ("path", "default_branch", "max_active", "test", "staging", "merge")
TEST_KEYS = ("command", "target", "timeout_s", "smoke", "env")
STAGING_KEYS = ("host", "container", "command", "timeout_s", "transient_retries",
                "ssh_options")
MERGE_KEYS = ("push", "push_branches")
BUDGET_KEYS = ("task_usd", "day_usd")
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")

# --- the agents' presets (docs/agents.md explains every flag) -------------------------
# Verified with Claude Code 2.1.332 and Codex 0.171.0 in their default permission models
# (tests/realcli, tests/realcli/test_real_agents_tick.py). `orch init --agents KIND` writes one.

# The project's test command in the spellings an agent types (a `python:*` prefix is a
# whole word: it does not allow `python3 -m pytest`), and through the runners of the
# layouts a test command is detected from (uv, Poetry, Hatch, PDM, tox, nox, a .venv).
CLAUDE_TEST_TOOLS = ("Bash(python3:*) Bash(python:*) Bash(pytest:*) Bash(uv run:*) "
                     "Bash(poetry run:*) Bash(hatch run:*) Bash(pdm run:*) Bash(tox:*) "
                     "Bash(nox:*) Bash(.venv/bin/python:*) Bash(./.venv/bin/python:*)")
# `=`: --add-dir and --allowedTools take several values and would swallow the prompt;
# `--` ends them too. The artifacts folder lies outside the worktree: --add-dir opens it.
_CLAUDE = ["claude", "-p", "--output-format", "json", "--add-dir={artifacts}"]
# analyst, reviewer, tester: write their deliverable in the artifacts folder and nowhere
# else (`Edit(//abs/**)`: the doubled slash makes the rule path absolute), run the tests.
_CLAUDE_READER = [*_CLAUDE, f"--allowedTools=Edit(/{{artifacts}}/**) {CLAUDE_TEST_TOOLS}",
                  "--", "{prompt}"]
_CLAUDE_DEVELOPER = [*_CLAUDE, "--permission-mode", "acceptEdits",
                     f"--allowedTools=Bash(git:*) {CLAUDE_TEST_TOOLS}",
                     "--disallowedTools=Bash(git push:*)", "--", "{prompt}"]

# Codex's own sandbox, no approvals, orch's PATH for the agent's commands (no login
# shell), an unreachable provider ends the run, the artifacts folder writable.
_CODEX = ["codex", "exec", "--json", "-s", "workspace-write", "-c", 'approval_policy="never"',
          "-c", "allow_login_shell=false", "--disable", "unbounded_connection_retries",
          "--add-dir", "{artifacts}"]
# Loopback and network sockets for the project's tests (the sandbox refuses even loopback).
_CODEX_NETWORK = ["-c", "sandbox_workspace_write.network_access=true"]
# A commit in a worktree writes its private git dir and the main repository's objects,
# refs and logs; hooks and config stay read-only.
_CODEX_COMMIT = ["--add-dir", "{git_dir}", "--add-dir", "{git_common_dir}/objects",
                 "--add-dir", "{git_common_dir}/refs", "--add-dir", "{git_common_dir}/logs"]

_TIMEOUTS = {"analyst": 3600, "developer": 7200, "reviewer": 1800, "tester": 3600}


def _role(command: list[str], output: str | None, role: str) -> dict[str, Any]:
    return {"command": command, "output": output, "timeout_s": _TIMEOUTS[role]}


CLAUDE_PRESETS: dict[str, dict[str, Any]] = {
    "analyst": _role(_CLAUDE_READER, "claude-json", "analyst"),
    "developer": _role(_CLAUDE_DEVELOPER, "claude-json", "developer"),
    "reviewer": _role(_CLAUDE_READER, "claude-json", "reviewer"),
    "tester": _role(_CLAUDE_READER, "claude-json", "tester"),
}
CODEX_PRESETS: dict[str, dict[str, Any]] = {
    "analyst": _role([*_CODEX, "{prompt}"], "codex-jsonl", "analyst"),
    "developer": _role([*_CODEX, *_CODEX_NETWORK, *_CODEX_COMMIT, "{prompt}"], "codex-jsonl",
                       "developer"),
    "reviewer": _role([*_CODEX, "{prompt}"], "codex-jsonl", "reviewer"),
    "tester": _role([*_CODEX, *_CODEX_NETWORK, "{prompt}"], "codex-jsonl", "tester"),
}
# aider edits files of its own git repository only and prints no structured result: it
# can be the developer (it commits itself; orch's report wrapper writes 10-dev-report.md
# from what it did), never a role whose deliverable is a judgment written outside the
# repository (analysis, review, test report): those stay with Claude Code.
AIDER_DEVELOPER = ["{python}", "-m", "orch.report_wrapper", "10-dev-report.md", "--",
                   "aider", "--yes-always", "--no-check-update", "--no-analytics",
                   "--no-show-model-warnings", "--no-pretty", "--message-file", "{prompt_file}"]
AIDER_PRESETS: dict[str, dict[str, Any]] = {
    **CLAUDE_PRESETS, "developer": _role(AIDER_DEVELOPER, None, "developer")}
AGENT_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "claude": CLAUDE_PRESETS, "codex": CODEX_PRESETS, "aider": AIDER_PRESETS}
DEFAULT_AGENTS = CLAUDE_PRESETS


@frozen_record
class Flags:
    """The kill-switches under `flags:`."""

    serial_gate_enabled: bool = True
    impossible_queued_sanitize_enabled: bool = True
    analyst_questions_gate_enabled: bool = True
    analyst_needs_input_autopause_enabled: bool = True
    test_runner_enabled: bool = True
    staging_runner_exec_host_side: bool = True
    kick_enabled: bool = True


@frozen_record
class Budget:
    """`budget:` ceilings in USD (None: no ceiling)."""

    task_usd: float | None = None
    day_usd: float | None = None


@frozen_record
class AgentRole:
    """One role under `agents:`: the argv template and how its output is read."""

    name: str
    command: tuple[str, ...]
    output: str | None = None
    timeout_s: int = 3600
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: str | None = None


@frozen_record
class TestConfig:
    """A repo's `test:` section (the test-runner)."""

    command: tuple[str, ...] = ("python", "-m", "pytest", "-q")
    target: str | None = None
    timeout_s: int = 900
    smoke: tuple[tuple[str, ...], ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@frozen_record
class StagingConfig:
    """A repo's `staging:` section (the staging-runner)."""

    container: str
    command: tuple[str, ...]
    host: str | None = None
    timeout_s: int = 600
    transient_retries: int = 3
    ssh_options: tuple[str, ...] = ()


@frozen_record
class RepoConfig:
    """One repo under `repos:`."""

    name: str
    path: Path
    default_branch: str = "main"
    max_active: int = 1
    test: TestConfig = field(default_factory=TestConfig)
    staging: StagingConfig | None = None
    push: bool = False
    push_branches: bool = False


@frozen_record
class Settings:
    """All of `orch.yaml`, validated, with the environment's overrides applied."""

    home: Path
    config_file: Path
    max_concurrency: int = 1
    heartbeat_interval_s: int = 10
    heartbeat_timeout_s: int = 60
    max_attempts: int = 3
    max_defers: int = 5
    max_rounds: int = 3
    retry_backoff_s: int = 60
    cancel_grace_s: int = 10
    retention_days: int = 14
    env_file: Path | None = None
    notify: tuple[str, ...] | None = None
    pipeline: str = "default"
    flags: Flags = field(default_factory=Flags)
    budget: Budget = field(default_factory=Budget)
    agents: Mapping[str, AgentRole] = field(default_factory=dict)
    repos: Mapping[str, RepoConfig] = field(default_factory=dict)
    log_max_mb: int = 100
    state: str | None = None
    host: str | None = None
    host_max_concurrency: int | None = None
    host_timeout_s: int = 300
    environ: Mapping[str, str] = field(default_factory=dict)  # orch's own, read once here

    @property
    def paths(self) -> Home:
        """The home's layout (files, folders, locks)."""
        return Home(self.home)

    @property
    def db_path(self) -> Path:
        return self.paths.db_path

    @property
    def state_location(self) -> str:
        """Where the state lives: `state:` (a PostgreSQL URL), else the home's orch.db."""
        return self.state or str(self.db_path)

    @property
    def host_name(self) -> str:
        """This home's host name (`host:`, default the machine's hostname)."""
        return self.host or socket.gethostname()

    @property
    def host_limit(self) -> int:
        """Running jobs on this host at most (`host_max_concurrency`, default max_concurrency)."""
        if self.host_max_concurrency is None:
            return self.max_concurrency
        return self.host_max_concurrency

    def repo(self, name: str) -> RepoConfig:

        try:
            return self.repos[name]
        except KeyError:
            known = ", ".join(sorted(self.repos)) or "none configured"
            raise NotFoundError(f"no such repo: {name!r} (known: {known})") from None


def resolve_home(option: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """--home, else $ORCH_HOME, else $XDG_STATE_HOME/orch, else ~/.local/state/orch."""
    env = os.environ if environ is None else environ
    if option:
        return Path(option).expanduser().absolute()
    if env.get("ORCH_HOME"):
        return Path(env["ORCH_HOME"]).expanduser().absolute()
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state).expanduser().absolute() / "orch"


def load_settings(home: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Load `<home>/orch.yaml` (defaults when it does not exist) and the environment."""
    env = os.environ if environ is None else environ
    path = home / CONFIG_FILE
    data: Any = {}
    marks: dict[KeyPath, int] = {}
    if path.exists():
        data, marks = load_yaml_file(path)
        if data is None:
            data = {}
    return _Builder(str(path), marks, home).build(data, env)


class _Builder:
    """Validates the raw YAML data key by key, with the file and line at hand."""

    def __init__(self, file: str, marks: dict[KeyPath, int], home: Path) -> None:
        self.file = file
        self.marks = marks
        self.home = home
        self.from_env: dict[KeyPath, str] = {}  # keys whose value an ORCH_* variable gave

    def fail(self, path: KeyPath, message: str, hint: str | None = None) -> ConfigError:
        if path in self.from_env:
            return ConfigError("environment", self.from_env[path], message, hint=hint)
        line = None
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.marks:
                line = self.marks[path[:cut]]
                break
        return ConfigError(self.file, dotted(path), message, line=line, hint=hint)

    def mapping(self, value: Any, path: KeyPath, allowed: tuple[str, ...] | None) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {_kind(value)}")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    import difflib

                    close = difflib.get_close_matches(key, allowed, n=1)
                    hint = f"did you mean {close[0]!r}?" if close else None
                    raise self.fail((*path, key), "unknown key", hint)
        return value

    def integer(self, value: Any, path: KeyPath, minimum: int | None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise self.fail(path, f"must be >= {minimum}, got {value}")
        return value

    def number(self, value: Any, path: KeyPath) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"expected a number, got {_kind(value)}")
        if value < 0:
            raise self.fail(path, f"must be >= 0, got {value}")
        return float(value)

    def string(self, value: Any, path: KeyPath) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {_kind(value)}")
        return value

    def boolean(self, value: Any, path: KeyPath) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {_kind(value)}")
        return value

    def argv(self, value: Any, path: KeyPath, allow_empty: bool = False) -> tuple[str, ...]:
        if not isinstance(value, list) or (not value and not allow_empty):
            raise self.fail(path, "expected a non-empty list of strings (an argv)")
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise self.fail((*path, index), f"expected a string, got {_kind(item)}")
        return tuple(str(item) for item in value)

    def build(self, data: Any, env: Mapping[str, str]) -> Settings:
        data = dict(self.mapping(data, (), TOP_KEYS))
        values: dict[str, Any] = {}
        for key, (kind, minimum, default) in SCALARS.items():
            raw = _env_override(env, key, data.get(key, default))
            path: KeyPath = (key,)
            if f"ORCH_{key.upper()}" in env:
                self.from_env[path] = f"ORCH_{key.upper()}"
            if raw is None:
                values[key] = None
            elif kind is int:
                values[key] = self.integer(raw, path, minimum)
            else:
                values[key] = self.string(raw, path)
        if values["heartbeat_timeout_s"] <= values["heartbeat_interval_s"]:
            raise self.fail(("heartbeat_timeout_s",),
                            "must be greater than heartbeat_interval_s "
                            f"({values['heartbeat_interval_s']})")
        if values["host_timeout_s"] <= values["heartbeat_timeout_s"]:
            raise self.fail(("host_timeout_s",),
                            "must be greater than heartbeat_timeout_s "
                            f"({values['heartbeat_timeout_s']})")
        if values["pipeline"] is None:
            values["pipeline"] = "default"
        if values["state"] is not None:
            self.check_state(values["state"])
        env_file = values.pop("env_file")
        notify = data.get("notify")
        return Settings(
            home=self.home,
            config_file=Path(self.file),
            env_file=self._path(env_file) if env_file else None,
            notify=self.argv(notify, ("notify",)) if notify is not None else None,
            flags=self.flags(data.get("flags"), env),
            budget=self.budget(data.get("budget")),
            agents=self.agents(data.get("agents", DEFAULT_AGENTS)),
            repos=self.repos(data.get("repos")),
            environ=dict(env),
            **values,
        )

    def check_state(self, url: str) -> None:
        """`state:` is a PostgreSQL URL without a password (or a sqlite:/// file)."""
        if url.startswith(("sqlite:///",)):
            return
        if not url.startswith(("postgresql://", "postgres://")):
            raise self.fail(("state",), "expected postgresql://USER@HOST/DB (or null for the "
                            "home's orch.db)")
        from urllib.parse import urlsplit

        try:
            password = urlsplit(url).password
        except ValueError as exc:
            raise self.fail(("state",), f"not a URL: {exc}") from None
        if password is not None or "password=" in url:
            raise self.fail(("state",), "holds a password",
                            "keep credentials out of orch.yaml and ORCH_STATE: use ~/.pgpass, "
                            "PGPASSWORD or a service file")

    def _path(self, text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else (self.home / path)

    def flags(self, value: Any, env: Mapping[str, str]) -> Flags:
        raw = self.mapping(value, ("flags",), tuple(FLAG_DEFAULTS))
        result = {}
        for name, default in FLAG_DEFAULTS.items():
            env_key = f"ORCH_{name.upper()}"
            if env_key in env:
                result[name] = _env_bool(env[env_key], env_key)
            else:
                result[name] = self.boolean(raw.get(name, default), ("flags", name))
        return Flags(**result)

    def budget(self, value: Any) -> Budget:
        raw = self.mapping(value, ("budget",), BUDGET_KEYS)
        return Budget(**{key: self.number(raw[key], ("budget", key)) if raw.get(key) is not None
                         else None for key in BUDGET_KEYS})

    def agents(self, value: Any) -> dict[str, AgentRole]:
        raw = self.mapping(value, ("agents",), None)
        return {name: self.agent(name, spec) for name, spec in raw.items()}

    def agent(self, name: str, value: Any) -> AgentRole:
        path: KeyPath = ("agents", name)
        raw = self.mapping(value, path, AGENT_KEYS)
        if "command" not in raw:
            raise self.fail(path, "missing required key 'command'")
        output = raw.get("output")
        if output not in AGENT_OUTPUTS:
            raise self.fail((*path, "output"), f"unknown output {output!r}",
                            "use claude-json, codex-jsonl or null")
        stdin = raw.get("stdin")
        if stdin not in (None, "prompt"):
            raise self.fail((*path, "stdin"), f"unknown stdin {stdin!r}", "use prompt or null")
        return AgentRole(
            name=name,
            command=self.argv(raw["command"], (*path, "command")),
            output=output,
            timeout_s=self.integer(raw.get("timeout_s", 3600), (*path, "timeout_s"), 1),
            env=self.env_mapping(raw.get("env"), (*path, "env")),
            stdin=stdin,
        )

    def repos(self, value: Any) -> dict[str, RepoConfig]:
        raw = self.mapping(value, ("repos",), None)
        return {name: self.repo(name, spec) for name, spec in raw.items()}

    def repo(self, name: str, value: Any) -> RepoConfig:
        path: KeyPath = ("repos", name)
        raw = self.mapping(value, path, REPO_KEYS)
        if "path" not in raw:
            raise self.fail(path, "missing required key 'path'")
        merge = self.mapping(raw.get("merge"), (*path, "merge"), MERGE_KEYS)
        return RepoConfig(
            name=name,
            path=self._path(self.string(raw["path"], (*path, "path"))),
            default_branch=self.string(raw.get("default_branch", "main"),
                                       (*path, "default_branch")),
            max_active=self.integer(raw.get("max_active", 1), (*path, "max_active"), 1),
            test=self.test(raw.get("test"), (*path, "test")),
            staging=self.staging(raw["staging"], (*path, "staging")) if raw.get("staging")
            else None,
            push=self.boolean(merge.get("push", False), (*path, "merge", "push")),
            push_branches=self.boolean(merge.get("push_branches", False),
                                       (*path, "merge", "push_branches")),
        )

    def test(self, value: Any, path: KeyPath) -> TestConfig:
        raw = self.mapping(value, path, TEST_KEYS)
        default = TestConfig()
        target = raw.get("target")
        return TestConfig(
            command=self.argv(raw["command"], (*path, "command")) if "command" in raw
            else default.command,
            target=self.string(str(target), (*path, "target")) if target is not None else None,
            timeout_s=self.integer(raw.get("timeout_s", default.timeout_s),
                                   (*path, "timeout_s"), 1),
            smoke=tuple(self.argv(item, (*path, "smoke", i))
                        for i, item in enumerate(self._list(raw.get("smoke"), (*path, "smoke")))),
            env=self.env_mapping(raw.get("env"), (*path, "env")),
        )

    def env_mapping(self, value: Any, path: KeyPath) -> dict[str, str]:
        """A mapping of environment variables: names to string values."""
        raw = self.mapping(value, path, None)
        return {str(k): self.string(str(v), (*path, k)) for k, v in raw.items()}

    def _list(self, value: Any, path: KeyPath) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {_kind(value)}")
        return value

    def staging(self, value: Any, path: KeyPath) -> StagingConfig:
        raw = self.mapping(value, path, STAGING_KEYS)
        for required in ("container", "command"):
            if required not in raw:
                raise self.fail(path, f"missing required key {required!r}")
        host = raw.get("host")
        return StagingConfig(
            container=self.string(raw["container"], (*path, "container")),
            command=self.argv(raw["command"], (*path, "command")),
            host=self.string(host, (*path, "host")) if host is not None else None,
            timeout_s=self.integer(raw.get("timeout_s", 600), (*path, "timeout_s"), 1),
            transient_retries=self.integer(raw.get("transient_retries", 3),
                                           (*path, "transient_retries"), 0),
            ssh_options=self.argv(raw.get("ssh_options", []), (*path, "ssh_options"),
                                  allow_empty=True),
        )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _env_override(env: Mapping[str, str], key: str, current: Any) -> Any:
    """ORCH_<KEY> replaces a top-level scalar; integers are parsed, strings kept."""
    env_key = f"ORCH_{key.upper()}"
    if env_key not in env:
        return current
    raw = env[env_key].strip()
    kind = SCALARS[key][0]
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError("environment", env_key,
                              f"expected an integer, got {raw!r}") from None
    return raw or None


def _env_bool(raw: str, env_key: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError("environment", env_key,
                      f"expected a boolean (true/false/1/0/yes/no/on/off), got {raw!r}")
