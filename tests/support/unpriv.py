"""Run commands and Python functions as an unprivileged user.

CI runs as root, but orch must also work for a user running it from their own crontab,
and some programs (PostgreSQL) refuse root outright. When we are root, the commands here
run as a dedicated test user (`orchtest`, created with useradd when missing; override
with ORCH_TEST_USER) through `setpriv`; when we are not root they run as ourselves.

A `Sandbox` is a fresh directory under /tmp (not pytest's tmp_path: /tmp/pytest-of-root
is mode 0700, so another user cannot reach it) with a HOME, a TMPDIR and a work folder
owned by that user. Every process started through it carries ORCH_TEST_SANDBOX=<root>
in its environment, so leftovers can be found (`processes()`) and killed at the end.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import pwd
import shutil
import signal
import site
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import psutil

TEST_USER_ENV = "ORCH_TEST_USER"
DEFAULT_TEST_USER = "orchtest"
SANDBOX_MARK = "ORCH_TEST_SANDBOX"
# Variables of the caller that must not leak into another user's processes.
_DROP_ENV = ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME",
             "SSH_AUTH_SOCK", "MAIL", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV",
             "PYENV_VERSION", "PYENV_ROOT")


@dataclass(frozen=True)
class User:
    """A local account, as the password database has it."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str

    @classmethod
    def from_pwd(cls, entry: pwd.struct_passwd) -> User:
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


def is_root() -> bool:
    return os.geteuid() == 0


def current_user() -> User:
    return User.from_pwd(pwd.getpwuid(os.geteuid()))


def test_user() -> User:
    """The user to run unprivileged things as: a dedicated account when we are root
    (created on first use), ourselves otherwise."""
    if not is_root():
        return current_user()
    return ensure_user(os.environ.get(TEST_USER_ENV) or DEFAULT_TEST_USER)


def ensure_user(name: str) -> User:
    """Look up `name`, creating it (home in /home, shell /bin/sh, password field `*`)
    when missing. `*` rather than useradd's default `!`: sshd without PAM refuses
    accounts whose password field starts with `!` (locked), even for key logins."""
    try:
        return User.from_pwd(pwd.getpwnam(name))
    except KeyError:
        pass
    made = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--user-group",
                           "--password", "*", name], capture_output=True, text=True)
    try:  # a concurrent worker may have created it first: the lookup decides
        return User.from_pwd(pwd.getpwnam(name))
    except KeyError:
        raise RuntimeError(f"cannot create test user {name!r}: {made.stderr.strip()}") from None


def as_user_argv(user: User, argv: Sequence[str], *, pdeathsig: str | None = None) -> list[str]:
    """`argv` prefixed so that it runs as `user`: setpriv when we are root and `user` is
    another account; unchanged otherwise. `pdeathsig` (e.g. "KILL") asks the kernel to
    signal the program when its parent (this process) dies: set after the uid change,
    which would otherwise clear it."""
    if not is_root() or user.uid == os.geteuid():
        return list(argv)
    prefix = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups"]
    if pdeathsig:
        prefix.append(f"--pdeathsig={pdeathsig}")
    return [*prefix, *argv]


def set_pdeathsig(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A preexec_fn that makes the child get `sig` when its parent dies (prctl)."""

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG

    return preexec


def chown_tree(path: Path, user: User) -> None:
    """Give `path` (recursively) to `user`; a no-op when we are not root."""
    if not is_root():
        return
    os.chown(path, user.uid, user.gid, follow_symlinks=False)
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)


def public_tempdir(prefix: str, owner: User | None = None) -> Path:
    """A fresh directory under the system tmp, mode 0755, owned by `owner`: reachable by
    other users, unlike pytest's per-user base folder."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("ORCH_TEST_TMP", "/tmp")))
    path.chmod(0o755)
    if owner is not None:
        chown_tree(path, owner)
    return path


def marked_processes(key: str, value: str) -> list[psutil.Process]:
    """Processes whose environment has key=value (the ones we can read)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(key) == value:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_processes(procs: Sequence[psutil.Process], timeout: float = 5.0) -> None:
    """SIGKILL each of `procs` and wait until they are gone (reaped or not ours)."""
    for proc in procs:
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    psutil.wait_procs(list(procs), timeout=timeout)


def _runs_as(user: User, interpreter: str) -> bool:
    """True when `user` can start `interpreter`, it is our Python's major.minor, and the
    user can see its real file (not merely exec it: a pyenv Python under a 0700 /root
    may still start and then quietly load the system's libpython and stdlib)."""
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    code = ("import os, sys; os.stat(os.path.realpath(sys.executable)); "
            "print('%d.%d' % sys.version_info[:2])")
    try:
        done = subprocess.run(as_user_argv(user, [interpreter, "-c", code]), cwd="/",
                              capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.strip() == want


@cache
def python_for(user: User) -> str:
    """An interpreter `user` can run with our major.minor: ours when it can, else a
    system one of the same version. (A pyenv Python under /root, mode 0700, is not
    reachable for another user; our site-packages are added by `Sandbox.python_env`.)"""
    major_minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = getattr(sys, "_base_executable", sys.executable)
    candidates = [sys.executable, os.path.realpath(sys.executable), base,
                  f"/usr/bin/{major_minor}", f"/usr/local/bin/{major_minor}",
                  shutil.which(major_minor) or ""]
    for candidate in dict.fromkeys(c for c in candidates if c):
        if _runs_as(user, candidate):
            return candidate
    raise RuntimeError(f"no {major_minor} that user {user.name} can run "
                       f"(tried {', '.join(candidates)})")


def import_paths() -> list[str]:
    """Our sys.path minus the interpreter's own stdlib: site-packages, the tests folder
    and any source folders, for a child interpreter to import the same modules."""
    stdlib_roots = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    keep = []
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else os.getcwd()
        if any(real.startswith(root + os.sep) for root in stdlib_roots) and "site-packages" \
                not in real:
            continue
        if os.path.isdir(real):
            keep.append(real)
    return list(dict.fromkeys(keep))


# What a test run as another user imports: orch and its dependencies, pytest and its
# dependencies, and the tests' own helpers (copied when the user cannot read ours).
MIRRORED = ("orch", "support", "typer", "click", "rich", "markdown_it", "mdurl", "pygments",
            "shellingham", "typing_extensions", "annotated_doc", "yaml", "_yaml", "pytest",
            "_pytest", "pluggy", "iniconfig", "packaging", "py", "psutil", "hypothesis",
            "sortedcontainers", "attr", "attrs", "exceptiongroup")

def _dependency_modules(roots: tuple[str, ...]) -> set[str]:
    """The top-level modules of these distributions and of everything they require
    (markers evaluated here): what a new release of a dependency starts importing
    (Typer 0.29 brought pydantic) is mirrored without a change to `MIRRORED`."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    modules_of: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(canonicalize_name(dist), set()).add(module)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return {module for dist in seen for module in modules_of.get(dist, ())
            if module.isidentifier()}


_BOOT = """\
import site, sys
for _p in {site_dirs!r}:
    site.addsitedir(_p)
for _p in {paths!r}:
    if _p not in sys.path:
        sys.path.append(_p)
"""

_CALL = """\
import pickle, sys, traceback
with open(sys.argv[1], 'rb') as f:
    func, args, kwargs = pickle.load(f)
try:
    outcome = (True, func(*args, **kwargs))
except BaseException:
    outcome = (False, traceback.format_exc())
with open(sys.argv[2], 'wb') as f:
    pickle.dump(outcome, f)
"""


class CallFailed(RuntimeError):
    """A function run by `Sandbox.call` raised; the message is its traceback."""


class Sandbox:
    """A HOME, TMPDIR and work folder owned by `user`, and ways to run things there as
    that user. `close()` kills every process started through it and removes the tree."""

    def __init__(self, user: User | None = None, prefix: str = "orch-unpriv-") -> None:
        self.user = user or test_user()
        self.root = public_tempdir(prefix)
        self.home, self.tmp, self.work, self.bin = (self.root / n for n in
                                                    ("home", "tmp", "work", "bin"))
        for folder in (self.home, self.tmp, self.work, self.bin):
            folder.mkdir()
        self._calls = 0
        self._write_python_shims()
        chown_tree(self.root, self.user)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Our environment as the user would have it: HOME, USER, LOGNAME, TMPDIR in the
        sandbox, the sandbox's bin first on PATH, the sandbox mark; `extra` last."""
        env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
        env.update(HOME=str(self.home), USER=self.user.name, LOGNAME=self.user.name,
                   TMPDIR=str(self.tmp), PATH=f"{self.bin}:{env.get('PATH', '/usr/bin:/bin')}")
        env[SANDBOX_MARK] = str(self.root)
        return env | (extra or {})

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` as run by the user (setpriv prefix when we are root)."""
        return as_user_argv(self.user, argv)

    def run(self, argv: Sequence[str], *, cwd: Path | None = None,
            env: dict[str, str] | None = None, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` as the user in the sandbox (cwd: the work folder) and capture its
        output as text. `env` adds to `self.env()`."""
        return subprocess.run(self.argv(argv), cwd=cwd or self.work, env=self.env(env),
                              capture_output=True, text=True, timeout=timeout, input=input)

    def popen(self, argv: Sequence[str], *, cwd: Path | None = None,
              env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` as the user in the background; `close()` kills it if still alive."""
        return subprocess.Popen(self.argv(argv), cwd=cwd or self.work, env=self.env(env),
                                **kwargs)

    @property
    def python(self) -> str:
        """A `python` the user can run that imports what we import (orch, the tests'
        modules): the sandbox's bin/python shim."""
        return str(self.bin / "python")

    def call(self, func: Callable[..., Any], *args: Any, timeout: float = 120,
             **kwargs: Any) -> Any:
        """Run `func(*args, **kwargs)` as the user in a fresh interpreter and return its
        result. `func` must be importable by name (module level); arguments and result
        travel by pickle. Raises CallFailed with the child's traceback."""
        self._calls += 1
        inp, out = self.tmp / f"call-{self._calls}.in", self.tmp / f"call-{self._calls}.out"
        inp.write_bytes(pickle.dumps((func, args, kwargs)))
        chown_tree(inp, self.user)
        done = self.run([self.python, "-c", _CALL, str(inp), str(out)], timeout=timeout)
        if not out.exists():
            raise CallFailed(f"exit {done.returncode}: {done.stderr.strip()[-2000:]}")
        ok, value = pickle.loads(out.read_bytes())
        if not ok:
            raise CallFailed(value + self.import_hint())
        return value

    def _unreadable(self, paths: Sequence[str]) -> list[str]:
        if not paths:
            return []
        check = 'for p; do [ -r "$p" ] && [ -x "$p" ] || echo "$p"; done'
        done = subprocess.run(as_user_argv(self.user, ["sh", "-c", check, "sh", *paths]),
                              cwd="/", capture_output=True, text=True, timeout=30)
        return done.stdout.split()

    def _mirror(self) -> str:
        """A folder the user can read holding a copy of each module of `MIRRORED` that
        we can import, as found on our sys.path (packages whole, single-file modules and
        extension modules as files)."""
        import importlib.util

        target = self.root / "pymirror"
        target.mkdir(exist_ok=True)
        for name in sorted({*MIRRORED, *_dependency_modules(("typer", "rich", "pyyaml"))}):
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin in (None, "built-in", "frozen"):
                continue
            origin = Path(spec.origin)
            if spec.submodule_search_locations:
                shutil.copytree(origin.parent, target / name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, target / origin.name)
        return str(target)

    def unreachable_imports(self) -> list[str]:
        """The import paths (site-packages, source and tests folders) the user cannot
        read, e.g. a checkout or venv under /root (mode 0700)."""
        paths = [p for p in (*site.getsitepackages(), *import_paths()) if os.path.isdir(p)]
        check = 'for p; do [ -r "$p" ] && [ -x "$p" ] || echo "$p"; done'
        done = self.run(["sh", "-c", check, "sh", *dict.fromkeys(paths)], cwd=self.root)
        return done.stdout.split()

    def import_hint(self) -> str:
        """Why the user's Python may not find our modules, or "" when it should."""
        unreachable = self.unreachable_imports()
        if not unreachable:
            return ""
        return (f"\nuser {self.user.name} cannot read {', '.join(unreachable)}: put the "
                "checkout and its virtualenv where other users can read them (not under "
                "/root)")

    def give(self, path: Path) -> Path:
        """Hand `path` (recursively) to the user; returns it."""
        chown_tree(path, self.user)
        return path

    def processes(self) -> list[psutil.Process]:
        """The live processes started through this sandbox (and their descendants that
        kept the environment)."""
        return marked_processes(SANDBOX_MARK, str(self.root))

    def close(self) -> None:
        """Kill what is left of the sandbox's processes, then remove the tree."""
        kill_processes(self.processes())
        if not os.environ.get("ORCH_TEST_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)

    def _write_python_shims(self) -> None:
        """bin/python: an interpreter the user can run, with our site-packages (their
        .pth files too, so editable installs import) and the tests' import paths;
        bin/orch: `python -m orch` through it. Paths the user cannot read (a checkout or
        an interpreter under a 0700 /root, as on CI machines) are replaced by a readable
        copy of just the packages the tests need there (`MIRRORED`)."""
        boot = self.root / "pyboot"
        boot.mkdir()
        site_dirs = [p for p in site.getsitepackages() if os.path.isdir(p)]
        paths = import_paths()
        hidden = set(self._unreadable([*site_dirs, *paths]))
        if hidden:
            mirror = self._mirror()
            site_dirs = [p for p in site_dirs if p not in hidden]
            paths = [mirror, *(p for p in paths if p not in hidden)]
        (boot / "sitecustomize.py").write_text(
            _BOOT.format(site_dirs=site_dirs, paths=paths), encoding="utf-8")
        interpreter = python_for(self.user)
        shim = (f'#!/bin/sh\nPYTHONPATH="{boot}${{PYTHONPATH:+:$PYTHONPATH}}" '
                f'exec "{interpreter}" "$@"\n')
        (self.bin / "python").write_text(shim, encoding="utf-8")
        (self.bin / "orch").write_text(f'#!/bin/sh\nexec "{self.bin}/python" -m orch "$@"\n',
                                       encoding="utf-8")
        for name in ("python", "orch"):
            (self.bin / name).chmod(0o755)
