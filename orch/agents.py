"""Agents: argv templates and the environment every run gets (SPEC section 5).

Argv templates. Each element of a role's `command` may contain `{prompt}`,
`{prompt_file}`, `{task_id}`, `{stage}`, `{round}`, `{artifacts}`,
`{worktree}`, `{git_dir}` and `{git_common_dir}` (the worktree's private git
directory and the repository's common one, which a sandboxed agent must be
allowed to write to commit). They are replaced inside each element in one pass (a value is
never scanned again, so a prompt that contains `{stage}` stays as written),
never through `str.format` and never through a shell: an element is one argv
entry whatever it contains. Other braces are left alone.

The environment of an agent or runner is orch's own (as cron or systemd gave
it, read once with the settings), then `env_file`, then the `ORCH_*`
variables of the run, then the role's `env:`. Prompts live in
`orch.prompts`, output parsing in `orch.agent_output`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orch.errors import ConfigError

if TYPE_CHECKING:
    from orch.config import Settings
    from orch.home import Home

PLACEHOLDERS = ("prompt", "prompt_file", "task_id", "stage", "round", "artifacts", "worktree",
                "git_dir", "git_common_dir")
PROMPT_ARG_LIMIT = 100 * 1024

_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_ENV_LINE_RE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)")


class PromptTooLarge(Exception):
    """A `{prompt}` argv element is over PROMPT_ARG_LIMIT bytes (Linux caps one at 128 KiB)."""

    def __init__(self, size: int, limit: int = PROMPT_ARG_LIMIT) -> None:
        super().__init__(
            f"the rendered {{prompt}} argument is {size} bytes, over the {limit}-byte limit; "
            "pass the prompt with {prompt_file} or set `stdin: prompt` on the role"
        )
        self.size = size
        self.limit = limit


def render_argv(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Fill the placeholders of an argv template, element by element, never via a shell.

    A placeholder without a value is left as written, like any other brace.
    Raises PromptTooLarge when an element that holds `{prompt}` renders past
    PROMPT_ARG_LIMIT bytes (UTF-8).
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        return str(values[name]) if name in values else match.group(0)

    argv = []
    for element in template:
        rendered = _PLACEHOLDER_RE.sub(substitute, element)
        if "{prompt}" in element:
            size = len(rendered.encode("utf-8"))
            if size > PROMPT_ARG_LIMIT:
                raise PromptTooLarge(size)
        argv.append(rendered)
    return argv



def read_env_file(path: Path) -> dict[str, str]:
    """Read an env file: KEY=VALUE lines, `#` comments, blank lines, optional `export `.

    A value wrapped in matching single or double quotes loses them (nothing
    inside is unescaped); an unquoted value is taken as written after trimming,
    `#` included, since secrets may contain one. Values are secrets: no error
    message ever contains one.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(str(path), "env_file", "is not valid UTF-8") from None
    except OSError as exc:
        raise ConfigError(str(path), "env_file", f"cannot be read: {exc.strerror}") from None
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_LINE_RE.fullmatch(stripped)
        if match is None:
            raise ConfigError(str(path), f"line {number}", "expected KEY=VALUE", line=number)
        value = _unquote(match.group(2).strip())
        if value is None:
            raise ConfigError(str(path), f"line {number}", "expected KEY=VALUE",
                              line=number, hint="a quoted value lacks its closing quote")
        env[match.group(1)] = value
    return env


def _unquote(value: str) -> str | None:
    """Strip one pair of matching quotes; None when a quote opens and never closes."""
    if value[:1] in ("'", '"'):
        quote = value[0]
        if len(value) >= 2 and value.endswith(quote):
            return value[1:-1]
        return None
    return value


def agent_env(
    base: Mapping[str, str],
    env_file: Mapping[str, str],
    orch_vars: Mapping[str, str],
    role_env: Mapping[str, str],
) -> dict[str, str]:
    """An agent's environment: orch's own, then env_file, then ORCH_* vars, then the role's env."""
    env = dict(base)
    for layer in (env_file, orch_vars, role_env):
        env.update({str(key): str(value) for key, value in layer.items()})
    return env


def orch_env_vars(
    *,
    home: Path,
    task_id: int | str,
    job_id: int | str,
    run_id: int | str,
    stage: str,
    round_no: int,
    repo: str,
    artifacts: Path,
    worktree: Path,
) -> dict[str, str]:
    """The ORCH_* variables every agent and runner gets (SPEC section 5)."""
    return {
        "ORCH_HOME": str(home),
        "ORCH_TASK_ID": str(task_id),
        "ORCH_JOB_ID": str(job_id),
        "ORCH_RUN_ID": str(run_id),
        "ORCH_STAGE": stage,
        "ORCH_ROUND": str(round_no),
        "ORCH_REPO": repo,
        "ORCH_ARTIFACTS": str(artifacts),
        "ORCH_WORKTREE": str(worktree),
    }


def run_environment(settings: Settings, orch_vars: Mapping[str, str],
                    role_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of one run: orch's own + env_file + ORCH_* + the role's env."""
    env_file: dict[str, str] = {}
    if settings.env_file is not None:
        env_file = read_env_file(settings.env_file)
    return agent_env(settings.environ, env_file, orch_vars, role_env or {})


def run_vars(home: Home, *, task_id: int, repo: str, stage: str, round_no: int, job_id: int,
             run_id: int) -> dict[str, str]:
    """The ORCH_* variables of one run of a task's job."""
    return orch_env_vars(home=home.root, task_id=task_id, job_id=job_id, run_id=run_id,
                         stage=stage, round_no=round_no, repo=repo,
                         artifacts=home.artifacts(task_id), worktree=home.worktree(repo, task_id))
