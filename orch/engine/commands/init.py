"""`orch init`: the home, its commented orch.yaml and its database; opening the state."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from orch.config import Settings, load_settings
from orch.errors import RefusedError, UsageError
from orch.home import HOME_DIRS, Home
from orch.state.db import Database

REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class InitResult:
    home: Path
    config_written: bool
    repos: tuple[str, ...]


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


def render_config(repos: list[tuple[str, Path]]) -> str:
    """The commented example config; `--repo` entries replace its empty `repos: {}`."""
    text = packaged_config_text()
    if not repos:
        return text
    lines = ["repos:"]
    for name, path in repos:
        # quoted: a repo named null, true, no or 0x1f must stay that string in YAML
        lines += [f"  {json.dumps(name)}:", f"    path: {json.dumps(str(path))}",
                  "    default_branch: main",
                  "    max_active: 1"]
    return text.replace("repos: {}\n", "\n".join(lines) + "\n", 1)


def init_home(home: Path, repo_options: list[str]) -> InitResult:
    """Create the home, a commented orch.yaml and the database; idempotent."""
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

        write_atomic(config, render_config(repos))
        written = True
    settings = load_settings(home)
    for sub in HOME_DIRS:
        (home / sub).mkdir(exist_ok=True)
    open_state(settings).close()
    return InitResult(home, written, tuple(names))


def open_state(settings: Settings, *, create: bool = True) -> Database:
    """Open (creating and migrating as needed) the home's state: `state:` or orch.db."""
    from orch.state import open_location

    return open_location(settings.state_location, create=create, host=settings.host_name)
