"""Small real Python projects, as users lay them out, for the tests of `orch.testenv`.

Each is a git repository whose main branch holds a bug (`add` subtracts) and a test
that catches it; `fix_in_worktree` makes a task worktree whose code is fixed. So a
test command that runs the worktree's code passes there, and one that runs the main
checkout's code (an editable install pointing at it) fails: the difference the
detection exists for. Environments are made with uv (fast, from its cache) or the
tool itself (Poetry); both come with the test extras.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support import unavailable
from support.env import keep_env
from support.git import run_git

BUGGY = "def add(a, b):\n    return a - b\n"
FIXED = "def add(a, b):\n    return a + b\n"
TEST = "from app import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
SETUPTOOLS = ('[build-system]\nrequires = ["setuptools>=61"]\n'
              'build-backend = "setuptools.build_meta"\n')
PROJECT = '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
IGNORE = ".venv/\n*.egg-info/\n__pycache__/\n.pytest_cache/\n"


def tool(name: str) -> str:
    """The path of a tool of the test extras (uv, poetry): beside this Python, else on PATH;
    skipped (failed under CI) with the install command when it is missing."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        unavailable(name, f"pip install -e '.[test]' (it brings {name})")
    assert found is not None
    return found


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for uv and Poetry in tests: no active virtualenv, no download of a
    Python, the tools' directory first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH") and keep_env(k)}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env | (extra or {})


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


def commit_all(root: Path, message: str = "the project") -> None:
    if not (root / ".git").exists():
        run_git(root, "init", "-q", "-b", "main")
    run_git(root, "add", "-A")
    run_git(root, "commit", "-q", "-m", message)


def package(root: Path, pyproject: str, *, src: bool = True) -> Path:
    """The files of project `app` (src or flat layout) with PYPROJECT, not yet committed."""
    code = "src/app/__init__.py" if src else "app/__init__.py"
    write(root, {"pyproject.toml": pyproject, code: BUGGY, "tests/test_add.py": TEST,
                 ".gitignore": IGNORE})
    return root


def venv_with_editable_install(root: Path, env: dict[str, str], name: str = ".venv") -> Path:
    """ROOT/NAME: a virtualenv with pytest and the project installed editable (pointing at
    ROOT, the main checkout); returns its python."""
    uv = tool("uv")
    run([uv, "venv", "-q", name, "--python", sys.executable], root, env)
    python = root / name / "bin" / "python"
    run([uv, "pip", "install", "-q", "--python", str(python), "pytest", "-e", "."], root, env)
    return python


def fix_in_worktree(repo: Path, worktree: Path, src: bool = True) -> Path:
    """A worktree of REPO at WORKTREE on a new branch whose `add` is fixed and committed."""
    worktree.parent.mkdir(parents=True, exist_ok=True)
    run_git(repo, "worktree", "add", "-q", "-b", f"fix-{worktree.name}", str(worktree))
    code = worktree / ("src/app/__init__.py" if src else "app/__init__.py")
    code.write_text(FIXED, encoding="utf-8")
    run_git(worktree, "commit", "-q", "-am", "fix add")
    return worktree
