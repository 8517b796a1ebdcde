"""Which test commands run pytest, and whether their JUnit plugin is on (SPEC section 8).

A pytest command is `pytest ...` (or `py.test`), `python -m pytest ...` with any
interpreter path and interpreter options (`python3 -X dev -W error -m pytest`),
or either of those after `uv run [OPTIONS]` (`uv run --frozen pytest`,
`uv run --with pytest-xdist python -m pytest`, `uv run -m pytest`). orch adds
`--junitxml` to such a command to count its tests, unless the command turns the
junitxml plugin off (`-p no:junitxml`, in its argv or in `PYTEST_ADDOPTS`): pytest
then refuses the option as a usage error, so orch leaves it out and the report has
no `tests` counts.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

# Interpreter options that take the next argument as their value.
_PYTHON_VALUE_OPTIONS = frozenset({"-X", "-W", "--check-hash-based-pycs"})
_PYTHON_FLAGS = frozenset("bBdEhiIOPqRsSuvx")

# `uv run` options that take the next argument as their value (uv 0.4 to 0.9).
_UV_VALUE_OPTIONS = frozenset({
    "--with", "--with-editable", "--with-requirements", "--python", "-p", "--directory",
    "--project", "--extra", "--no-extra", "--group", "--no-group", "--only-group",
    "--env-file", "--index", "--default-index", "--index-url", "-i", "--extra-index-url",
    "--find-links", "-f", "--package", "--config-file", "--cache-dir", "--color",
    "--resolution", "--prerelease", "--index-strategy", "--keyring-provider",
    "--exclude-newer", "--link-mode", "--refresh-package", "--reinstall-package",
    "--upgrade-package", "-P", "--no-build-package", "--no-binary-package",
    "--python-platform", "--allow-insecure-host", "--config-setting", "-C",
    "--no-sources-package", "--exclude-newer-package", "--torch-backend",
})
_UV_MODULE_FLAGS = frozenset({"-m", "--module"})
_NO_JUNITXML = "no:junitxml"


def pytest_args_at(argv: Sequence[str]) -> int | None:
    """The index in ARGV where pytest's own arguments begin, or None when ARGV does not
    run pytest (see the module docstring for the forms recognised)."""
    argv = list(argv)  # a tuple slice never equals a list
    if not argv:
        return None
    program = Path(argv[0]).name
    if program in ("pytest", "py.test"):
        return 1
    if program.startswith(("python", "pypy")):
        return _after_interpreter(argv, 1)
    if program == "uv" and len(argv) > 1 and argv[1] == "run":
        return _after_uv_run(argv, 2)
    return None


def is_pytest_command(argv: Sequence[str]) -> bool:
    """True when ARGV runs pytest (`pytest_args_at` finds its arguments)."""
    return pytest_args_at(argv) is not None


def _after_interpreter(argv: Sequence[str], index: int) -> int | None:
    """After `python`: skip interpreter options up to `-m pytest`; None for anything else
    (a script, `-c CODE`, another module)."""
    while index < len(argv):
        arg = argv[index]
        if arg == "-m":
            return index + 2 if argv[index + 1:index + 2] == ["pytest"] else None
        if arg.startswith("-m"):
            return index + 1 if arg[2:] == "pytest" else None
        if arg in _PYTHON_VALUE_OPTIONS:
            index += 2
            continue
        if arg.startswith(("-X", "-W", "--check-hash-based-pycs=")):
            index += 1
            continue
        if len(arg) > 1 and arg[0] == "-" and arg[1] != "-" and set(arg[1:]) <= _PYTHON_FLAGS:
            index += 1
            continue
        return None  # a script, -c, -, --help, or an option this parser does not know
    return None


def _after_uv_run(argv: Sequence[str], index: int) -> int | None:
    """After `uv run`: skip uv's options; then a pytest command, or `-m pytest`."""
    module = False
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            index += 1
            break
        if arg in _UV_MODULE_FLAGS:
            module = True
            index += 1
            continue
        if arg in _UV_VALUE_OPTIONS:
            index += 2
            continue
        if arg.startswith("-"):
            index += 1  # a flag, or --option=value
            continue
        break
    if module:
        return index + 1 if argv[index:index + 1] == ["pytest"] else None
    rest = argv[index:]
    found = pytest_args_at(rest) if rest and Path(rest[0]).name != "uv" else None
    return None if found is None else index + found


def junitxml_disabled(argv: Sequence[str], env: Mapping[str, str] | None = None) -> bool:
    """True when the pytest command turns the junitxml plugin off: `-p no:junitxml` (or
    `-pno:junitxml`) among pytest's arguments or in the PYTEST_ADDOPTS it will get."""
    start = pytest_args_at(argv)
    args = list(argv[start:]) if start is not None else []
    addopts = (env or {}).get("PYTEST_ADDOPTS", "")
    if addopts:
        try:
            args += shlex.split(addopts)
        except ValueError:
            pass  # pytest fails on it too: a usage error, judged as such
    for index, arg in enumerate(args):
        if arg == "-p" and args[index + 1:index + 2] == [_NO_JUNITXML]:
            return True
        if arg in ("-p" + _NO_JUNITXML, "-p=" + _NO_JUNITXML):
            return True
    return False
