"""A state file orch cannot use, through the CLI (SPEC section 4): a newer schema, a corrupt
file, a directory, a lock held too long. Each is one line on stderr with its exit status,
and the file is left as it was. The state layer itself is in tests/state/test_state.py."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support.db import digest, raw

from orch.state.schema import SCHEMA_VERSION

Cli = Callable[..., tuple[int, str, str]]


def test_newer_schema_is_refused_by_the_cli(orch_home: Path, cli: Cli) -> None:
    path = orch_home / "orch.db"
    with raw(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = digest(path)
    for args in (("task", "list"), ("task", "add", "--repo", "app", "--title", "T"), ("init",)):
        code, out, err = cli(orch_home, *args)
        assert code == 5, err
        assert out == ""
        assert err.count("\n") == 1 and err.startswith("error: ")
        assert str(path) in err and "newer" in err
        assert "Traceback" not in err
    assert digest(path) == before
    assert not (orch_home / "tasks" / "1").exists()


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "random bytes": lambda p: p.write_bytes(random.Random(5).randbytes(8192)),
    "a text file": lambda p: p.write_text("these are my notes, not a database\n" * 20),
    "a short text file": lambda p: p.write_text("hello\n"),
    "garbage after a valid header": lambda p: p.write_bytes(
        p.read_bytes()[:100] + random.Random(6).randbytes(len(p.read_bytes()) - 100)),
}


@pytest.mark.parametrize("kind", CORRUPTIONS, ids=list(CORRUPTIONS))
def test_corrupt_database_is_exit_5_with_one_line(
        kind: str, orch_home: Path, cli: Cli) -> None:
    path = orch_home / "orch.db"
    CORRUPTIONS[kind](path)
    before = digest(path)
    for args in (("task", "list"), ("task", "add", "--repo", "app", "--title", "T"),
                 ("task", "show", "1"), ("init",)):
        code, out, err = cli(orch_home, *args)
        assert code == 5, (args, err)
        assert out == ""
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert str(path) in err
        assert "Traceback" not in err
    assert digest(path) == before


def test_database_path_that_is_a_directory(orch_home: Path, cli: Cli) -> None:
    path = orch_home / "orch.db"
    path.unlink()
    path.mkdir()
    code, _, err = cli(orch_home, "task", "list")
    assert code == 5
    assert err.startswith("error: ") and err.count("\n") == 1 and str(path) in err


@pytest.mark.slow
def test_locked_database_through_the_cli_is_exit_75(orch_home: Path) -> None:
    """The real command waits out its busy timeout, then says so in one line."""
    holder = raw(orch_home / "orch.db")
    holder.execute("BEGIN IMMEDIATE")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "orch", "--home", str(orch_home), "task", "add",
             "--repo", "app", "--title", "T"], capture_output=True, text=True, timeout=60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode == 75, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "locked" in proc.stderr
    assert not (orch_home / "tasks" / "1").exists()
