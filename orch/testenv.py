"""The project's own environment for its tests: how a repo runs them, detected once.

`orch init --repo` writes the detected command into `orch.yaml`, `orch test-run`
without a home uses it as it is, and `orch doctor` checks it. The aim is one
property: the tests of a task run **the worktree's code** with **the project's
dependencies**. Running orch's own `python` fails the first half of that (orch's
virtualenv has none of the project's dependencies) and running the main
checkout's `.venv/bin/python` can fail the second: when the project is
installed editable there, `import app` finds the main checkout, not the
worktree. So a detected command runs the project's interpreter with the
worktree's import root first on `PYTHONPATH` (`{worktree}/src` for a src
layout), which wins over every kind of editable install (a `.pth` path, or the
finders setuptools and hatchling append to `sys.meta_path`).

Layouts, first match wins (docs/configuration.md has a section for each):

- `uv.lock`: `uv run --frozen pytest -q`; uv syncs the worktree's own `.venv`
  from the lock (from its cache, so quickly);
- Poetry (`poetry.lock`, `[tool.poetry]`), PDM (`pdm.lock`, `[tool.pdm]`),
  Hatch (`hatch.toml`, `[tool.hatch.envs]`): the interpreter of the main
  checkout's environment (`poetry env info --path`, `.pdm-python`,
  `hatch env find default`), `-m pytest -q`. These tools key environments by
  project path, so `poetry run` in a worktree would make a new, empty one;
- `.venv/` or `venv/`: its `python -m pytest -q`;
- `tox.ini` or `[tool.tox]`: `tox -e py --`; `noxfile.py`: `nox -s tests --`
  (the session named tests/test, if any): both build their environments in
  the worktree;
- `pyproject.toml`, `setup.py`, `setup.cfg`, `requirements*.txt` without an
  environment: `python -m pytest -q` (the `python` on PATH) and a note saying
  how to make one; nothing of these: the default `python -m pytest -q`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.agents import render_argv

DEFAULT_COMMAND = ("python", "-m", "pytest", "-q")
TOOL_TIMEOUT_S = 30.0  # `poetry env info`, `hatch env find`
NOT_PACKAGES = frozenset({"tests", "test", "testing", "docs", "doc", "examples", "example",
                          "scripts", "bin", "build", "dist", "benchmarks", "bench", "tools",
                          "site-packages", "node_modules", "venv", "env"})


@dataclass(frozen=True)
class TestEnv:
    """How a project runs its tests: the command, its environment, and why."""

    __test__ = False  # not a pytest test class

    layout: str                      # uv, poetry, pdm, hatch, venv, tox, nox, plain, none
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # values may hold {worktree}
    detected: str = ""               # what was found, one line
    note: str | None = None          # what the user should still do, if anything

    def describe(self) -> str:
        """`detected: ...` plus the note, for a comment in orch.yaml and for test-run."""
        text = f"detected: {self.detected}"
        return f"{text}; {self.note}" if self.note else text


@dataclass(frozen=True)
class Package:
    """The package under test: its import name and the folder that holds it."""

    name: str
    root: str  # "src" or "" (the repository's top level)


# --------------------------------------------------------------------------- detection


def detect(path: Path, environ: Mapping[str, str] | None = None) -> TestEnv:
    """How the project at PATH runs its tests (module docstring: the layouts, in order)."""
    env = dict(os.environ if environ is None else environ)
    project = _read_pyproject(path)
    tool = project.get("tool", {}) if isinstance(project.get("tool"), dict) else {}
    pythonpath = {"PYTHONPATH": "{worktree}/src" if _has_src_layout(path) else "{worktree}"}
    for finder in (_uv, _poetry, _pdm, _hatch, _venv, _tox, _nox):
        found = finder(path, tool, pythonpath, env)
        if found is not None:
            return found
    return _plain(path, pythonpath)


def _uv(path: Path, tool: dict[str, Any], pythonpath: dict[str, str],
        env: dict[str, str]) -> TestEnv | None:
    if not (path / "uv.lock").is_file():
        return None
    note = None if _which("uv", env) else "uv is not on PATH: install it (pipx install uv)"
    return TestEnv("uv", ("uv", "run", "--frozen", "pytest", "-q"), pythonpath,
                   "uv.lock: `uv run --frozen` syncs the worktree's own .venv from the lock",
                   note)


def _poetry(path: Path, tool: dict[str, Any], pythonpath: dict[str, str],
            env: dict[str, str]) -> TestEnv | None:
    if not ((path / "poetry.lock").is_file() or "poetry" in tool):
        return None
    found = "poetry.lock" if (path / "poetry.lock").is_file() else "[tool.poetry]"
    venv = _tool_path(["poetry", "env", "info", "--path"], path, env) or _local_venv(path)
    return _with_interpreter("poetry", f"Poetry ({found})", venv, pythonpath,
                             "run `poetry install` in the repository")


def _pdm(path: Path, tool: dict[str, Any], pythonpath: dict[str, str],
         env: dict[str, str]) -> TestEnv | None:
    if not ((path / "pdm.lock").is_file() or "pdm" in tool):
        return None
    found = "pdm.lock" if (path / "pdm.lock").is_file() else "[tool.pdm]"
    python = _pdm_python(path)
    if python is not None:
        return TestEnv("pdm", (str(python), "-m", "pytest", "-q"), pythonpath,
                       f"PDM ({found}), interpreter {python} (.pdm-python)")
    return _with_interpreter("pdm", f"PDM ({found})", _local_venv(path), pythonpath,
                             "run `pdm install` in the repository")


def _hatch(path: Path, tool: dict[str, Any], pythonpath: dict[str, str],
           env: dict[str, str]) -> TestEnv | None:
    hatch = tool.get("hatch")
    uses_envs = isinstance(hatch, dict) and "envs" in hatch
    if not ((path / "hatch.toml").is_file() or uses_envs):
        return None
    venv = _tool_path(["hatch", "env", "find", "default"], path, env) or _local_venv(path)
    return _with_interpreter("hatch", "Hatch environments", venv, pythonpath,
                             "run `hatch env create` in the repository")


def _venv(path: Path, tool: dict[str, Any], pythonpath: dict[str, str],
          env: dict[str, str]) -> TestEnv | None:
    venv = _local_venv(path)
    if venv is None:
        return None
    return _with_interpreter("venv", f"the virtualenv {venv.name}/", venv, pythonpath, "")


def _tox(path: Path, tool: dict[str, Any], pythonpath: dict[str, str],
         env: dict[str, str]) -> TestEnv | None:
    found = [name for name in ("tox.ini",) if (path / name).is_file()]
    if "tox" in tool:
        found.append("[tool.tox]")
    if not found:
        return None
    return TestEnv("tox", ("tox", "-e", "py", "--"), {},
                   f"{found[0]}: tox builds its `py` environment inside the worktree",
                   None if _which("tox", env) else "tox is not on PATH: install it")


def _nox(path: Path, tool: dict[str, Any], pythonpath: dict[str, str],
         env: dict[str, str]) -> TestEnv | None:
    noxfile = path / "noxfile.py"
    if not noxfile.is_file():
        return None
    session = _nox_test_session(noxfile)
    command = ("nox", "-s", session, "--") if session else ("nox", "--")
    what = f"session `{session}`" if session else "every session (none is named test/tests)"
    return TestEnv("nox", command, {}, f"noxfile.py: nox runs {what} inside the worktree",
                   None if _which("nox", env) else "nox is not on PATH: install it")


def _plain(path: Path, pythonpath: dict[str, str]) -> TestEnv:
    markers = [name for name in ("pyproject.toml", "setup.py", "setup.cfg")
               if (path / name).is_file()]
    markers += sorted(p.name for p in path.glob("requirements*.txt"))
    if not markers:
        return TestEnv("none", DEFAULT_COMMAND, {}, "no Python project files: the default")
    install = (f"-r {markers[-1]} " if markers[-1].startswith("requirements") else "-e . ")
    return TestEnv("plain", DEFAULT_COMMAND, pythonpath,
                   f"{', '.join(markers)} and no project environment",
                   "the tests use the `python` on orch's PATH; better give the project its "
                   f"own: `python -m venv .venv && .venv/bin/pip install {install}pytest` "
                   "in the repository, and put .venv/bin/python in this command")


def _with_interpreter(layout: str, what: str, venv: Path | None,
                      pythonpath: dict[str, str], missing: str) -> TestEnv:
    python = _venv_python(venv) if venv is not None else None
    if python is None:
        note = (f"no environment found: {missing}, then put its python in this command "
                "(orch doctor checks it)")
        return TestEnv(layout, DEFAULT_COMMAND, pythonpath, what, note)
    return TestEnv(layout, (str(python), "-m", "pytest", "-q"), pythonpath,
                   f"{what}, interpreter {python}")


# --------------------------------------------------------------------------- helpers


def _read_pyproject(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads((path / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _which(program: str, env: Mapping[str, str]) -> str | None:
    return shutil.which(program, path=env.get("PATH", os.defpath))


def _local_venv(path: Path) -> Path | None:
    for name in (".venv", "venv"):
        if _venv_python(path / name) is not None:
            return path / name
    return None


def _venv_python(venv: Path) -> Path | None:
    """VENV/bin/python (not resolved: the link's path is what selects the virtualenv)."""
    for name in ("python", "python3"):
        candidate = venv / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _pdm_python(path: Path) -> Path | None:
    try:
        text = (path / ".pdm-python").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    python = Path(text)
    return python if python.is_absolute() and python.is_file() else None


def _tool_path(argv: list[str], cwd: Path, env: dict[str, str]) -> Path | None:
    """The directory a tool prints (`poetry env info --path`), or None when it can't say."""
    from orch.procs import run_in_group

    if _which(argv[0], env) is None:
        return None
    # an active virtualenv (orch's own, say) would be reported as the project's
    quiet = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    run = run_in_group(argv, cwd=cwd, env=quiet, timeout_s=TOOL_TIMEOUT_S, grace_s=1.0)
    if run.exit_code != 0 or run.timed_out:
        return None
    stderr = set(run.stderr_tail.splitlines())
    lines = [line.strip() for line in run.output_tail.splitlines()
             if line.strip() and line not in stderr]
    candidate = Path(lines[-1]) if lines else None
    return candidate if candidate is not None and candidate.is_dir() else None


def _nox_test_session(noxfile: Path) -> str | None:
    try:
        text = noxfile.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    names = re.findall(r"^def\s+(\w+)\s*\(", text, flags=re.MULTILINE)
    for wanted in ("tests", "test", "pytest"):
        if wanted in names:
            return wanted
    return None


def _has_src_layout(path: Path) -> bool:
    src = path / "src"
    return src.is_dir() and any(_is_package(child) for child in src.iterdir())


def _is_package(child: Path) -> bool:
    if child.name.startswith((".", "_")) or child.name in NOT_PACKAGES:
        return False
    if child.is_dir():
        return (child / "__init__.py").is_file()
    return child.suffix == ".py" and child.name not in ("setup.py", "conftest.py",
                                                        "noxfile.py")


def package_under_test(path: Path) -> Package | None:
    """The package the tests import: `src/<name>` or `<name>/`, the project's name first.

    None when it can't be told (no package, or several and none named like the project).
    """
    project = _read_pyproject(path).get("project", {})
    name = project.get("name") if isinstance(project, dict) else None
    wanted = re.sub(r"[-.]+", "_", str(name)).lower() if name else None
    root = "src" if _has_src_layout(path) else ""
    folder = path / root if root else path
    try:
        children = list(folder.iterdir())
    except OSError:
        return None
    # at the top level only folders count: setup.py, manage.py and the like are no package
    found = sorted(child.name.removesuffix(".py") for child in children
                   if _is_package(child) and (root or child.is_dir()))
    if wanted in found:
        return Package(str(wanted), root)
    if len(found) == 1:
        return Package(found[0], root)
    return None


# --------------------------------------------------------------------------- using it


def render(values: Sequence[str] | Mapping[str, str], worktree: Path) -> Any:
    """`{worktree}` replaced in each element of a command or each value of an env mapping."""
    fill = {"worktree": str(worktree)}
    if isinstance(values, Mapping):
        keys = list(values)
        return dict(zip(keys, render_argv([values[k] for k in keys], fill), strict=True))
    return tuple(render_argv(list(values), fill))


def yaml_lines(found: TestEnv, indent: str) -> list[str]:
    """The `test:` section of a repo in orch.yaml, with a comment saying what was found."""
    lines = [f"{indent}test:"]
    lines += [f"{indent}  # {line}" for line in _wrap(found.describe(), 84 - len(indent))]
    lines.append(f"{indent}  command: {json.dumps(list(found.command))}")
    if found.env:
        pairs = ", ".join(f"{k}: {json.dumps(v)}" for k, v in found.env.items())
        lines.append(f"{indent}  env: {{{pairs}}}   # the worktree's code first, not the "
                     "main checkout's")
    return lines


def _wrap(text: str, width: int) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return [*lines, current] if current else lines


# --------------------------------------------------------------------------- the probe

PROBE_MARK = "ORCH-PROBE "
# Run by the test command's own interpreter (any Python 3): does pytest import, and
# where does the package under test come from? argv: PACKAGE ("" for none), MODE
# ("bare": the command runs a `pytest` script, which does not put the cwd on sys.path).
PROBE_CODE = """\
import json, sys
if sys.argv[2] == "bare":
    sys.path[:] = [p for p in sys.path if p != ""]
out = {"python": sys.executable}
try:
    import pytest
    out["pytest"] = getattr(pytest, "__version__", "?")
except Exception as exc:
    out["pytest_error"] = "%s: %s" % (type(exc).__name__, exc)
if sys.argv[1]:
    try:
        import importlib.util
        spec = importlib.util.find_spec(sys.argv[1])
        where = list(getattr(spec, "submodule_search_locations", None) or [])
        origin = getattr(spec, "origin", None)
        out["origin"] = origin if origin not in (None, "namespace") else (where or [None])[0]
    except Exception as exc:
        out["origin_error"] = "%s: %s" % (type(exc).__name__, exc)
print("ORCH-PROBE " + json.dumps(out))
"""


def probe_argv(command: Sequence[str], package: str | None,
               env: Mapping[str, str]) -> list[str] | None:
    """The test command turned into PROBE_CODE run by the same interpreter, or None when
    the command is not pytest (tox, nox, make: orch cannot look inside those)."""
    argv = list(command)
    for index, arg in enumerate(argv):
        name = Path(arg).name
        if name.startswith("python"):
            rest = argv[index + 1:]
            options = []
            for item in rest:
                if item == "-m" or not item.startswith("-"):
                    break
                options.append(item)
            if rest[len(options):len(options) + 2] == ["-m", "pytest"]:
                return [*argv[:index + 1], *options, "-c", PROBE_CODE, package or "", "m"]
        if name in ("pytest", "py.test"):
            python = _script_python(arg, env) if index == 0 else "python"
            if python is None:
                return None
            return [*argv[:index], python, "-c", PROBE_CODE, package or "", "bare"]
    return None


def _script_python(script: str, env: Mapping[str, str]) -> str | None:
    """The interpreter of a `pytest` console script: its `#!` line."""
    path = script if "/" in script else _which(script, env)
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            first = handle.readline(4096).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    if words and Path(words[0]).name == "env" and len(words) > 1:
        return words[1]
    return words[0] if words else None


def parse_probe(output: str) -> dict[str, Any] | None:
    """The probe's JSON line from its output, or None when it printed none."""
    for line in reversed(output.splitlines()):
        if line.startswith(PROBE_MARK):
            try:
                found = json.loads(line[len(PROBE_MARK):])
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None


def install_hint(layout: str, python: str) -> str:
    """How to put pytest into a project's environment, by layout."""
    return {
        "uv": "`uv add --dev pytest` in the repository (and commit uv.lock)",
        "poetry": "`poetry add --group dev pytest` in the repository",
        "pdm": "`pdm add -dG test pytest` in the repository",
        "hatch": "add pytest to the dependencies of the default Hatch environment",
    }.get(layout, f"`{python} -m pip install pytest`")
