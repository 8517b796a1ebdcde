"""pytest fixtures for real servers and an unprivileged user.

Use them by adding `pytest_plugins = ["support.fixtures"]` to tests/conftest.py (the
tests folder is on sys.path there). Each server fixture skips outside CI with one line
naming the install command, and fails when CI is set.

- `pg_server` (session): a running PgServer; `pg_database` (function): a fresh
  database on it, dropped afterwards (PgDatabase: .name, .dsn); `pg_dsn`: its DSN.
- `sshd_server` (session): an SshServer logging in the current user (root in CI);
  `sshd` (function): the same server, reset (records, behaviours, leftovers) after
  each test. `sshd_unpriv_server` / `sshd_unpriv`: the same, logging in the
  unprivileged test user (a /bin/sh account: no ~/.bashrc on the way, exact PATH).
- `unpriv_user` (session): the User to run unprivileged things as; `unpriv`
  (function): a Sandbox for it (HOME, TMPDIR, work folder, run/popen/call), whose
  processes are killed and files removed afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import unavailable
from support.pgserver import INSTALL_HINT as PG_INSTALL
from support.pgserver import PgDatabase, PgServer, find_bindir
from support.sshd import INSTALL_HINT as SSHD_INSTALL
from support.sshd import SshServer, find_sshd
from support.unpriv import Sandbox, User, test_user


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the whole session, stopped at its end."""
    if find_bindir() is None:
        unavailable("PostgreSQL server (initdb, postgres, pg_ctl)", PG_INSTALL)
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[PgDatabase]:
    """A fresh, empty database for one test; dropped (connections ended) afterwards."""
    database = pg_server.create_database()
    try:
        yield database
    finally:
        pg_server.drop_database(database.name)


@pytest.fixture
def pg_dsn(pg_database: PgDatabase) -> str:
    """`postgresql://postgres@127.0.0.1:PORT/DB` of a fresh database."""
    return pg_database.dsn


def _sshd_or_skip() -> None:
    if find_sshd() is None:
        unavailable("OpenSSH server (sshd)", SSHD_INSTALL)


@pytest.fixture(scope="session")
def sshd_server() -> Iterator[SshServer]:
    """An sshd on 127.0.0.1 logging in the current user, for the whole session."""
    _sshd_or_skip()
    server = SshServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sshd(sshd_server: SshServer) -> Iterator[SshServer]:
    """The session's sshd with a recording `docker` first on the remote PATH; its
    records, behaviours and leftover remote processes are cleared after the test."""
    sshd_server.install_recorder("docker")
    try:
        yield sshd_server
    finally:
        sshd_server.reset()


@pytest.fixture(scope="session")
def sshd_unpriv_server(unpriv_user: User) -> Iterator[SshServer]:
    """An sshd on 127.0.0.1 logging in the unprivileged test user (when we are root;
    ourselves otherwise)."""
    _sshd_or_skip()
    server = SshServer(login_user=unpriv_user).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sshd_unpriv(sshd_unpriv_server: SshServer) -> Iterator[SshServer]:
    """As `sshd`, logging in the unprivileged test user."""
    sshd_unpriv_server.install_recorder("docker")
    try:
        yield sshd_unpriv_server
    finally:
        sshd_unpriv_server.reset()


@pytest.fixture(scope="session")
def unpriv_user() -> User:
    """The unprivileged user (`orchtest`, or $ORCH_TEST_USER; ourselves when not root)."""
    return test_user()


@pytest.fixture
def unpriv(unpriv_user: User) -> Iterator[Sandbox]:
    """A sandbox to run commands and functions as the unprivileged user."""
    sandbox = Sandbox(unpriv_user)
    try:
        yield sandbox
    finally:
        sandbox.close()
