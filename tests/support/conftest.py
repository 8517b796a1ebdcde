"""The support fixtures for the self-tests in this folder. (Once tests/conftest.py has
`pytest_plugins = ["support.fixtures"]`, this file can go.)"""

from support.fixtures import (  # noqa: F401
    pg_database,
    pg_dsn,
    pg_server,
    sshd,
    sshd_server,
    sshd_unpriv,
    sshd_unpriv_server,
    unpriv,
    unpriv_user,
)
