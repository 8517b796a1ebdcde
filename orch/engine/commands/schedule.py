"""`orch schedule`: the crontab line and the systemd units that tick this home.

Both run `orch-tick` (shipped in the package, `orch/data/bin/`) through
`/bin/sh`, so an install that lost the file's executable bit still works, with
this install's absolute paths: `ORCH_BIN` is the `orch` that runs now,
`ORCH_HOME` the home, and `ORCH_PATH` the PATH of the shell that asked
(cron's bare `/usr/bin:/bin` finds neither orch nor the agents). Nothing here
needs the home to exist: scheduling comes before or after `orch init`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orch.errors import RefusedError

UNIT_NAMES = ("orch-tick.service", "orch-tick.timer")
ENABLE_COMMANDS = ("systemctl --user daemon-reload",
                   "systemctl --user enable --now orch-tick.timer",
                   'loginctl enable-linger "$USER"   # keep ticking while you are logged out')


@dataclass(frozen=True)
class Install:
    """The absolute paths a schedule names."""

    home: Path
    orch_bin: Path
    tick_script: Path
    path: str  # ORCH_PATH


def data_dir() -> Path:
    """`orch/data/` of the installed package."""
    return Path(__file__).resolve().parents[2] / "data"


def find_orch(argv0: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The `orch` executable of this install: the console script that runs now, the one
    beside this interpreter, else the one on PATH."""
    env = os.environ if environ is None else environ
    candidates = []
    first = argv0 if argv0 is not None else sys.argv[0]
    if first and Path(first).name == "orch":
        candidates.append(Path(first).absolute())
    candidates.append(Path(sys.executable).absolute().parent / "orch")
    found = shutil.which("orch", path=env.get("PATH", os.defpath))
    if found:
        candidates.append(Path(found).absolute())
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RefusedError("cannot find the orch executable of this install (run orch from its "
                       "virtualenv's bin/, or put it on PATH)")


def install_for(home: Path, environ: Mapping[str, str] | None = None) -> Install:
    """This install and HOME, with the caller's PATH (absolute entries only) as ORCH_PATH."""
    env = os.environ if environ is None else environ
    entries = [entry for entry in env.get("PATH", "").split(":") if entry.startswith("/")]
    path = ":".join(dict.fromkeys(entries)) or "/usr/local/bin:/usr/bin:/bin"
    return Install(home=home.absolute(), orch_bin=find_orch(environ=env),
                   tick_script=data_dir() / "bin" / "orch-tick", path=path)


def crontab_line(install: Install) -> str:
    """`* * * * * ORCH_HOME=... ORCH_BIN=... ORCH_PATH=... /bin/sh .../orch-tick`.

    Each value is shell-quoted (cron runs the line with /bin/sh) and every `%` is
    escaped, since cron turns a bare one into a newline.
    """
    words = [f"ORCH_HOME={shlex.quote(str(install.home))}",
             f"ORCH_BIN={shlex.quote(str(install.orch_bin))}",
             f"ORCH_PATH={shlex.quote(install.path)}",
             "/bin/sh", shlex.quote(str(install.tick_script))]
    return "* * * * * " + " ".join(words).replace("%", "\\%")


def systemd_units(install: Install) -> dict[str, str]:
    """{file name: text} of the service and the timer, from the shipped units."""
    service = _strip_header(_read_unit("orch-tick.service"))
    lines = []
    for line in service.splitlines():
        if line.startswith("ExecStart="):
            lines.append(f"ExecStart=/bin/sh {_systemd_word(str(install.tick_script))}")
        elif line.startswith("Environment=ORCH_HOME="):
            lines.append(_environment("ORCH_HOME", str(install.home)))
        elif line.startswith("Environment=ORCH_BIN="):
            lines.append(_environment("ORCH_BIN", str(install.orch_bin)))
        elif line.startswith("# Environment=ORCH_PATH="):
            lines.append(_environment("ORCH_PATH", install.path))
        else:
            lines.append(line)
    head = (f"# {{name}}: written by `orch schedule --systemd` for the orch home "
            f"{install.home}\n# (orch {install.orch_bin}).\n\n")
    return {"orch-tick.service": head.format(name="orch-tick.service") + "\n".join(lines)
            + "\n",
            "orch-tick.timer": head.format(name="orch-tick.timer")
            + _strip_header(_read_unit("orch-tick.timer"))}


def _read_unit(name: str) -> str:
    return (data_dir() / "systemd" / name).read_text(encoding="utf-8")


def _strip_header(text: str) -> str:
    """The unit without its leading comment block (how to install the shipped file)."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith("[")), 0)
    return "".join(lines[start:])


def _systemd_word(text: str) -> str:
    """TEXT as one word of a systemd command line: quoted, `%` and `$` escaped."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return '"' + escaped.replace("$", "$$") + '"'


def _environment(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'Environment="{name}={escaped}"'


def user_unit_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/systemd/user`, else `~/.config/systemd/user` (where systemd looks)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "systemd" / "user"


def write_units(units: Mapping[str, str], folder: Path, *, force: bool) -> list[Path]:
    """Write the units into FOLDER; refuse (changing nothing) to replace different ones
    unless FORCE (they may schedule another home)."""
    targets = {folder / name: text for name, text in units.items()}
    for target, text in targets.items():
        if target.exists() and not force and _read(target) != text:
            raise RefusedError(f"{target} exists with other content (another home's "
                               "schedule?): compare it, then run again with --force")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for target, text in targets.items():
            target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise RefusedError(f"{folder}: cannot write the units: {exc.strerror or exc}") from exc
    return list(targets)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
