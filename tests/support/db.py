"""The state file seen from outside orch: a second plain sqlite3 connection and a digest."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path


def raw(path: Path) -> sqlite3.Connection:
    """A second, independent connection: what did really commit?"""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=0)
    conn.row_factory = sqlite3.Row
    return conn


def digest(path: Path) -> str | None:
    """The file's SHA-256 (None: no such file), to show a refused command wrote nothing."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
