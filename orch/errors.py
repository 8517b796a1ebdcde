"""One exception hierarchy; each class carries the exit status of SPEC section 10.

The CLI turns any OrchError into one line `error: ...` on stderr and its exit
status, at a single boundary (orch.cli.main).
"""

from __future__ import annotations


class OrchError(Exception):
    """Base class: a message for the user and an exit status."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class RefusedError(OrchError):
    """The command's subject failed or the action was refused for the task's state."""

    exit_code = 1


class IllegalMoveError(RefusedError):
    """A move the task's state does not allow (the stage machine refuses it)."""


class UsageError(OrchError):
    """Wrong options or arguments."""

    exit_code = 2


class NotFoundError(OrchError):
    """No such task, job or repo."""

    exit_code = 3


class ConfigError(OrchError):
    """The configuration or the pipeline file is invalid."""

    exit_code = 4

    def __init__(self, file: str, key: str, message: str, line: int | None = None,
                 hint: str | None = None) -> None:
        where = f"{file}"
        if line is not None:
            where += f":{line}"
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)
        self.file = file
        self.key = key
        self.line = line


class NoHomeError(OrchError):
    """A command that needs a home was pointed at a directory that is none (SPEC section 1):
    neither orch.yaml nor orch.db. Exit 4, like a configuration error: a mistyped
    `--home` or `ORCH_HOME` is a configuration mistake, and nothing is created."""

    exit_code = 4

    def __init__(self, home: object) -> None:
        super().__init__(f"no orch home at {home} (run orch init)")


class DatabaseError(OrchError):
    """The database is unreadable, corrupt, or newer than this orch."""

    exit_code = 5


class DatabaseUnreachable(DatabaseError):
    """The database server could not be reached (PostgreSQL): exit 5, but a tick exits 75
    (the next scheduled tick tries again)."""


class TryAgainError(OrchError):
    """Try again later: the database stayed locked past its busy timeout."""

    exit_code = 75


class Interrupted(OrchError):
    """Ctrl-C (SIGINT) from the person at the terminal; the message says what was left as
    it was (printed as `interrupted: ...`, exit 130)."""

    exit_code = 130
