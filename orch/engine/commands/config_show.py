"""`orch config show`: every effective setting and where it came from.

A value comes from the `ORCH_<KEY>` variable (top-level scalars and flags
only), else from a line of `orch.yaml`, else it is the default. The settings
are loaded exactly as every other command loads them, so a config error is
the same exit 4 here; the lines are read from the same parse. An `ORCH_*`
variable that orch does not know is reported as a probable typo, never an
error (`orch doctor` warns about it too).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.config import FLAG_DEFAULTS, SCALARS, AgentRole, RepoConfig, Settings
from orch.yamlio import KeyPath, load_yaml_file

# ORCH_* names that are not configuration: what orch gives its runs, the home,
# the cron wrapper's, the run mark, and the demo agent's switch.
RUN_VARIABLES = ("ORCH_TASK_ID", "ORCH_JOB_ID", "ORCH_RUN_ID", "ORCH_STAGE", "ORCH_ROUND",
                 "ORCH_REPO", "ORCH_ARTIFACTS", "ORCH_WORKTREE")
OTHER_VARIABLES = ("ORCH_HOME", "ORCH_BIN", "ORCH_PATH", "ORCH_RUN_MARK", "ORCH_DEMO_REVIEW")
NESTED = ("budget", "agents", "repos")


@dataclass(frozen=True)
class Value:
    key: str          # dotted path
    value: Any        # as JSON has it
    source: str       # default | orch.yaml:LINE | ORCH_<KEY>

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "source": self.source}


@dataclass(frozen=True)
class ConfigReport:
    values: list[Value]
    warnings: list[str]

    def as_dict(self) -> dict[str, Any]:
        """`orch config show --json`."""
        return {"values": [value.as_dict() for value in self.values],
                "warnings": list(self.warnings)}


def show_config(settings: Settings) -> ConfigReport:
    """The effective configuration, each value with its source (the environment is the
    one the settings were loaded under)."""
    environ = settings.environ
    marks: dict[KeyPath, int] = {}
    if settings.config_file.exists():
        marks = load_yaml_file(settings.config_file)[1]
    sources = _Sources(settings.config_file.name, marks, environ)
    values = list(_top_level(settings, sources))
    values += _agents(settings, sources)
    for repo in settings.repos.values():
        values += _repo(repo, sources)
    return ConfigReport(values, unknown_variables(environ))


class _Sources:
    """Where a key's value came from."""

    def __init__(self, file: str, marks: dict[KeyPath, int], environ: Mapping[str, str]):
        self.file, self.marks, self.environ = file, marks, environ

    def of(self, path: KeyPath, variable: str | None = None) -> str:
        if variable is not None and variable in self.environ:
            return variable
        if path in self.marks:
            return f"{self.file}:{self.marks[path]}"
        return "default"


def _json(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_json(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    return value


def _top_level(settings: Settings, sources: _Sources) -> Iterator[Value]:
    for key in SCALARS:
        yield Value(key, _json(getattr(settings, key)),
                    sources.of((key,), f"ORCH_{key.upper()}"))
    yield Value("notify", _json(settings.notify), sources.of(("notify",)))
    for name in FLAG_DEFAULTS:
        yield Value(f"flags.{name}", getattr(settings.flags, name),
                    sources.of(("flags", name), f"ORCH_{name.upper()}"))
    for name in ("task_usd", "day_usd"):
        yield Value(f"budget.{name}", getattr(settings.budget, name),
                    sources.of(("budget", name)))


def _agents(settings: Settings, sources: _Sources) -> list[Value]:
    values = []
    for name, role in settings.agents.items():
        values += _fields(f"agents.{name}", ("agents", name), _agent_fields(role), sources)
    return values


def _agent_fields(role: AgentRole) -> dict[str, Any]:
    return {"command": role.command, "output": role.output, "timeout_s": role.timeout_s,
            "env": role.env, "stdin": role.stdin}


def _repo(repo: RepoConfig, sources: _Sources) -> list[Value]:
    base: KeyPath = ("repos", repo.name)
    prefix = f"repos.{repo.name}"
    values = _fields(prefix, base, {"path": repo.path, "default_branch": repo.default_branch,
                                    "max_active": repo.max_active}, sources)
    test = repo.test
    values += _fields(f"{prefix}.test", (*base, "test"),
                      {"command": test.command, "target": test.target,
                       "timeout_s": test.timeout_s, "smoke": test.smoke, "env": test.env},
                      sources)
    if repo.staging is not None:
        staging = repo.staging
        values += _fields(f"{prefix}.staging", (*base, "staging"),
                          {"host": staging.host, "container": staging.container,
                           "command": staging.command, "timeout_s": staging.timeout_s,
                           "transient_retries": staging.transient_retries,
                           "ssh_options": staging.ssh_options}, sources)
    values += _fields(f"{prefix}.merge", (*base, "merge"),
                      {"push": repo.push, "push_branches": repo.push_branches}, sources)
    return values


def _fields(prefix: str, path: KeyPath, fields: dict[str, Any],
            sources: _Sources) -> list[Value]:
    return [Value(f"{prefix}.{name}", _json(value), sources.of((*path, name)))
            for name, value in fields.items()]


def config_variables() -> tuple[str, ...]:
    """Every ORCH_* name that sets configuration."""
    return tuple(f"ORCH_{key.upper()}" for key in (*SCALARS, *FLAG_DEFAULTS))


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning per ORCH_* variable that is neither configuration nor one orch knows."""
    known = (*config_variables(), *RUN_VARIABLES, *OTHER_VARIABLES)
    warnings = []
    for name in sorted(environ):
        if not name.startswith("ORCH_") or name in known:
            continue
        nested = next((key for key in NESTED if name.startswith(f"ORCH_{key.upper()}_")), None)
        if nested is not None:
            warnings.append(f"{name} is ignored: {nested} cannot be set from the environment "
                            f"(only top-level values and flags can); set it in orch.yaml")
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        guess = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"{name} is ignored: no setting has that name, a probable "
                        f"typo{guess}")
    return warnings
