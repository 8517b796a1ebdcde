"""A real PostgreSQL server for the tests, started and stopped by the test suite itself.

`PgServer.start()` runs `initdb` into a fresh folder under /tmp and starts `postgres` on
a free loopback port, as an unprivileged user when we are root (PostgreSQL refuses to
run as root; see unpriv.test_user). Trust authentication, loopback only, a unix socket
in the folder, durability off (fsync, synchronous_commit, full_page_writes) for speed.

The postmaster is our child (not detached by `pg_ctl start`, which calls setsid) in its
own process group, with a parent-death signal: if the test process dies, even by
SIGKILL, the kernel sends the postmaster SIGQUIT (immediate shutdown, which ends every
backend). `stop()` (also registered with atexit) runs `pg_ctl stop -m immediate`, then
kills the group if anything is left, then removes the folder.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from support import free_port
from support.unpriv import User, as_user_argv, is_root, public_tempdir, set_pdeathsig, test_user

INSTALL_HINT = "apt-get install -y postgresql"
BINDIR_ENV = "ORCH_TEST_PG_BINDIR"
MIN_MAJOR = 15
SUPERUSER = "postgres"
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
}
_names = itertools.count(1)


def _has_server(bindir: Path) -> bool:
    return all((bindir / tool).is_file() for tool in ("initdb", "postgres", "pg_ctl", "psql"))


def _major(bindir: Path) -> int:
    """The server's major version from `postgres --version` (0 when unreadable)."""
    try:
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                             text=True, timeout=30).stdout
    except OSError:
        return 0
    found = re.search(r"\(PostgreSQL\) (\d+)", out)
    return int(found.group(1)) if found else 0


def find_bindir() -> Path | None:
    """The newest PostgreSQL (15+) server bin folder: $ORCH_TEST_PG_BINDIR, the folder
    of `pg_ctl` on PATH (symlinks resolved), `pg_config --bindir`, or
    /usr/lib/postgresql/*/bin (Debian keeps the server off PATH)."""
    candidates: list[Path] = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(Path(os.environ[BINDIR_ENV]))
    if shutil.which("pg_ctl"):
        candidates.append(Path(os.path.realpath(shutil.which("pg_ctl") or "")).parent)
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                    key=lambda p: int(re.sub(r"\D", "", Path(p).parent.name) or 0), reverse=True)
    candidates.extend(Path(p) for p in debian)
    for bindir in dict.fromkeys(candidates):
        if _has_server(bindir) and _major(bindir) >= MIN_MAJOR:
            return bindir
    return None


@dataclass(frozen=True)
class PgDatabase:
    """One database on the test server, with its DSN."""

    name: str
    dsn: str


class PgServerError(RuntimeError):
    """The server could not be initialised or started; the message has its log's tail."""


class PgServer:
    """One PostgreSQL cluster in a temporary folder. `start()` then `dsn(db)`,
    `create_database()`, `psql()`; `stop()` at the end (idempotent)."""

    def __init__(self, bindir: Path | None = None, *, user: User | None = None,
                 settings: dict[str, str] | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PgServerError(f"no PostgreSQL {MIN_MAJOR}+ server found ({INSTALL_HINT})")
        self.bindir = found
        self.user = user or test_user()
        self.settings = FAST_SETTINGS | (settings or {})
        self.root = public_tempdir("orch-pg-", owner=self.user)
        self.datadir, self.sockdir = self.root / "data", self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.port = 0
        self.host = "127.0.0.1"
        self.superuser = SUPERUSER
        self._proc: subprocess.Popen[bytes] | None = None

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        """`postgresql://USER@127.0.0.1:PORT/DB` (trust auth: no password)."""
        return f"postgresql://{user or self.superuser}@{self.host}:{self.port}/{dbname}"

    def start(self, attempts: int = 5) -> PgServer:
        """initdb, then start on a free port (another port when one was taken
        meanwhile). Raises PgServerError with the log's tail."""
        self._initdb()
        atexit.register(self.stop)
        for _ in range(attempts):
            self.port = free_port()
            if self._launch():
                return self
        raise PgServerError(f"postgres did not start after {attempts} ports:\n{self.log_tail()}")

    def _as_user(self, argv: list[str]) -> list[str]:
        return as_user_argv(self.user, argv)

    def _initdb(self) -> None:
        self.sockdir.mkdir(mode=0o755)
        if is_root():
            os.chown(self.sockdir, self.user.uid, self.user.gid)
        argv = [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", self.superuser,
                "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        done = subprocess.run(self._as_user(argv), cwd=self.root, capture_output=True,
                              text=True, timeout=180)
        if done.returncode != 0:
            raise PgServerError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        conf = {"listen_addresses": "'127.0.0.1'", "unix_socket_directories": f"'{self.sockdir}'",
                **self.settings}
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write("\n# orch tests\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))

    def _launch(self, timeout: float = 60) -> bool:
        """Start the postmaster on self.port; True once it accepts connections, False
        when the port was taken (the caller picks another)."""
        argv = [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port)]
        root = is_root() and self.user.uid != 0
        log = open(self.logfile, "ab")  # noqa: SIM115 - the child keeps it open
        try:
            self._proc = subprocess.Popen(
                as_user_argv(self.user, argv, pdeathsig="QUIT"), cwd=self.root,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if root else set_pdeathsig(signal.SIGQUIT))
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                if "could not bind" in self.log_tail() or "in use" in self.log_tail():
                    return False
                raise PgServerError(f"postgres exited {self._proc.returncode}:\n"
                                    f"{self.log_tail()}")
            if self._ready():
                return True
            time.sleep(0.05)
        raise PgServerError(f"postgres not ready after {timeout}s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        argv = [str(self.bindir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port),
                "-U", self.superuser, "-d", "postgres"]
        if not (self.bindir / "pg_isready").exists():
            argv = [*self._psql_argv("postgres"), "-c", "SELECT 1"]
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0

    def _psql_argv(self, dbname: str) -> list[str]:
        return [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", self.host, "-p", str(self.port), "-U", self.superuser, "-d", dbname]

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run `sql` with psql (no psycopg needed) and return its unaligned output.
        Raises subprocess.CalledProcessError (stderr included) on an SQL error."""
        done = subprocess.run([*self._psql_argv(dbname), "-c", sql], capture_output=True,
                              text=True, timeout=120, env=os.environ | {"PGCONNECT_TIMEOUT": "10"})
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout,
                                                done.stderr)
        return done.stdout.strip()

    def create_database(self, name: str | None = None, template: str | None = None,
                        owner: str | None = None) -> PgDatabase:
        """CREATE DATABASE (a fresh name unless given), from `template` when given (a
        database with the schema already applied; nobody may be connected to it)."""
        name = name or f"orch_test_{os.getpid()}_{next(_names)}"
        sql = f'CREATE DATABASE "{name}"'
        if template:
            sql += f' TEMPLATE "{template}"'
        if owner:
            sql += f' OWNER "{owner}"'
        self.psql(sql)
        return PgDatabase(name, self.dsn(name))

    def drop_database(self, name: str) -> None:
        """DROP DATABASE ... WITH (FORCE): ends the sessions still connected to it."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def stop(self) -> None:
        """`pg_ctl stop -m immediate`, then SIGKILL to the group for anything left, then
        remove the folder (kept when ORCH_TEST_KEEP is set). Safe to call twice."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            subprocess.run(self._as_user([str(self.bindir / "pg_ctl"), "stop", "-D",
                                          str(self.datadir), "-m", "immediate", "-w", "-t", "20"]),
                           cwd=self.root, capture_output=True, timeout=60)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # backends left by a failed stop
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if not os.environ.get("ORCH_TEST_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)
