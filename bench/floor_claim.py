"""The claim-and-run floor: a bare loop that claims each job with one SQLite statement.

`python floor_claim.py DB` claims queued rows of DB's `jobs` table one at a
time (`UPDATE ... RETURNING`, atomic in SQLite's autocommit mode), spawns
`true` for each, records the result, and exits when no job is left. Several
of these may run at once on the same file; each job is claimed exactly once
(`claims` counts it, and the benchmark checks it). The connection has orch's
durability settings (WAL, synchronous NORMAL). This is the least work a
job queue on SQLite can do per job, so orch's throughput is divided by it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

CLAIM = ("UPDATE jobs SET status = 'running', claims = claims + 1, pid = ? "
         "WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1) "
         "RETURNING id")


def create(path: str, count: int) -> None:
    """A fresh queue of COUNT jobs (called by the benchmark, not timed)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, "
                 "claims INTEGER NOT NULL DEFAULT 0, pid INTEGER, exit_code INTEGER)")
    conn.execute("CREATE INDEX jobs_queued ON jobs (id) WHERE status = 'queued'")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO jobs (status) VALUES ('queued')", ([] for _ in range(count)))
    conn.execute("COMMIT")
    conn.close()


def work(path: str) -> int:
    """Claim, run `true`, record; until the queue is empty. Returns the jobs run."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA synchronous = NORMAL")  # as orch's connections
    pid = os.getpid()
    done = 0
    while True:
        row = conn.execute(CLAIM, (pid,)).fetchone()
        if row is None:
            break
        code = subprocess.run(["true"], check=False).returncode
        conn.execute("UPDATE jobs SET status = ?, exit_code = ? WHERE id = ?",
                     ("succeeded" if code == 0 else "failed", code, row[0]))
        done += 1
    conn.close()
    return done


if __name__ == "__main__":
    work(sys.argv[1])
