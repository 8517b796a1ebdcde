"""The `hosts` section of bench/run.py: orch on PostgreSQL (SPEC section 11) against SQLite.

- Claims per second with 1, 2 and 4 hosts (homes, each with its own clone of the
  repo and its own tick loop) on one PostgreSQL database, against the SQLite home
  with one tick loop, in the same run; the same checks as the claim section (every
  job exactly one successful run). While the hosts claim, a thread samples
  `pg_stat_activity` for backends waiting on a lock: the claims never serialize
  across hosts when none of the claim's statements is ever seen waiting.
- An idle tick on PostgreSQL against the same on SQLite (interleaved rounds).

The PostgreSQL server is the test suite's (tests/support/pgserver.py: initdb into
a temporary folder as an unprivileged user, stopped at the end); without one the
section is skipped with a note.
"""

from __future__ import annotations

import re
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    CLAIM_PIPELINE,
    OLD,
    BenchError,
    Profile,
    Row,
    Runner,
    Sample,
    claim_home,
    git,
    interleave,
    make_home,
    make_repo,
    ratio_row,
)

ROOT = Path(__file__).resolve().parent.parent
HOSTS = (1, 2, 4)


def _pg_server() -> Any:
    """A started PgServer, or None when this machine has no PostgreSQL server."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from support.pgserver import PgServer, find_bindir

    if find_bindir() is None:
        return None
    return PgServer().start()


def _configure(home: Path, state: str, host: str, jobs: int) -> None:
    """The claim home's settings (as bench/run.py's claim_home), on STATE as HOST."""
    config = home / "orch.yaml"
    text = config.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^max_concurrency: \d+", f"max_concurrency: {jobs}", text)
    text = re.sub(r"(?m)^retry_backoff_s: \d+", "retry_backoff_s: 0", text)
    text = re.sub(r"(?m)^pipeline: default", "pipeline: pipeline.yaml", text)
    text = re.sub(r"(?m)^    max_active: 1$", f"    max_active: {jobs}", text)
    config.write_text(_located(text, state, host), encoding="utf-8")
    (home / "pipeline.yaml").write_text(CLAIM_PIPELINE, encoding="utf-8")


def _located(text: str, state: str, host: str) -> str:
    """orch.yaml's text with `state:` and `host:` set."""
    text = re.sub(r"(?m)^state: .*$", f"state: {state}", text)
    return re.sub(r"(?m)^host: .*$", f"host: {host}", text)


def pg_homes(runner: Runner, path: Path, dsn: str, hosts: int, jobs: int) -> list[Path]:
    """HOSTS homes on one PostgreSQL database, JOBS queued `true` jobs spread over them."""
    import psycopg

    origin = make_repo(path / "origin")
    homes = []
    for n in range(hosts):
        clone = path / f"clone-{n}"
        git(path, "clone", "-q", str(origin), str(clone))
        home = make_home(runner, path / f"home-{n}", clone)
        _configure(home, dsn, f"h{n}", jobs)
        homes.append(home)
    runner.run(runner.orch("--home", homes[0], "tick", "--max-claims", "0", "--quiet"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(jobs):  # each task pinned to a host, as its admission would
            conn.execute("INSERT INTO tasks (repo, title, priority, stage, state, host, "
                         "created_at, updated_at) VALUES ('app', %s, 0, 'run', 'waiting', %s, "
                         "%s, %s)", (f"bench job {i}", f"h{i % hosts}", OLD, OLD))
    for home in homes:
        runner.run(runner.orch("--home", home, "tick", "--max-claims", "0", "--quiet"))
    queued = _pg_value(dsn, "SELECT count(*) FROM jobs WHERE status = 'queued'")
    if queued != jobs:
        raise BenchError(f"hosts setup: {queued} queued jobs, expected {jobs}")
    return homes


def _pg_value(dsn: str, sql: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def check_pg_once(dsn: str, jobs: int) -> None:
    """Every task done, every job exactly one successful run."""
    checks = {
        "tasks not done": ("SELECT count(*) FROM tasks WHERE stage != 'done'", 0),
        "jobs without exactly one successful run": (
            "SELECT count(*) FROM jobs WHERE (SELECT count(*) FROM runs WHERE runs.job_id = "
            "jobs.id AND runs.outcome = 'succeeded') != 1", 0),
        "jobs": ("SELECT count(*) FROM jobs", jobs),
    }
    for what, (sql, expected) in checks.items():
        got = _pg_value(dsn, sql)
        if got != expected:
            raise BenchError(f"PostgreSQL claim check failed: {what} = {got}, "
                             f"expected {expected}")


class LockSampler(threading.Thread):
    """Samples pg_stat_activity: backends of DB waiting on a lock, and what they ran."""

    def __init__(self, dsn: str, dbname: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.dbname = dsn, dbname
        self.done = threading.Event()
        self.samples = 0
        self.waiting: list[str] = []

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.done.is_set():
                rows = conn.execute(
                    "SELECT query FROM pg_stat_activity WHERE datname = %s "
                    "AND wait_event_type = 'Lock'", (self.dbname,)).fetchall()
                self.samples += 1
                self.waiting += [str(row[0])[:120] for row in rows]
                time.sleep(0.005)

    def claim_waits(self) -> list[str]:
        """The waits of a claim's statements (the slot rows, the job's UPDATE)."""
        return [q for q in self.waiting if "run_slots" in q or "UPDATE jobs" in q]


def _claims(runner: Runner, homes: list[Path], jobs: int, again: Callable[[Path], bool]
            ) -> float:
    argvs = [runner.orch("--home", home, "tick", "--max-claims", str(jobs), "--json")
             for home in homes]
    return runner.lanes(argvs, again)


def bench_hosts(runner: Runner, profile: Profile, notes: list[str]) -> list[Row]:
    from common import check_orch_once, tick_again

    server = _pg_server()
    if server is None:
        notes.append("No PostgreSQL server here (`apt-get install -y postgresql`): the "
                     "hosts rows are skipped.")
        return []
    jobs = profile.claim_jobs
    try:
        walls: dict[str, list[float]] = {"sqlite": [], **{f"pg-{n}": [] for n in HOSTS}}
        waits: list[str] = []
        sampled = 0
        for rep in range(profile.claim_reps):
            home = claim_home(runner, runner.tmp / f"hosts-sqlite-{rep}", jobs)
            walls["sqlite"].append(_claims(runner, [home], jobs,
                                           lambda out: tick_again(out, jobs)))
            check_orch_once(home, jobs)
            for n in HOSTS:
                database = server.create_database()
                homes = pg_homes(runner, runner.tmp / f"hosts-pg-{n}-{rep}", database.dsn,
                                 n, jobs)
                sampler = LockSampler(database.dsn, database.name)
                sampler.start()
                try:
                    walls[f"pg-{n}"].append(_claims(runner, homes, jobs,
                                                    lambda out: tick_again(out, jobs)))
                finally:
                    sampler.done.set()
                    sampler.join()
                check_pg_once(database.dsn, jobs)
                if n == max(HOSTS):
                    waits += sampler.claim_waits()
                    sampled += sampler.samples
                server.drop_database(database.name)
        rows = _claim_rows(walls, jobs, waits, sampled)
        rows += _idle_rows(runner, server, profile)
    finally:
        server.stop()
    notes.append(f"Hosts: medians of {profile.claim_reps} runs of {jobs} `true` jobs; each "
                 "PostgreSQL host is a home with its own clone and one tick loop, the jobs "
                 "pinned round-robin; the server runs on this machine and shares its cores. "
                 f"pg_stat_activity sampled {sampled} times while {max(HOSTS)} hosts claimed: "
                 f"{len(waits)} samples showed a claim statement waiting on a lock"
                 + (f" ({'; '.join(sorted(set(waits))[:3])})" if waits else "") + ".")
    return rows


def _claim_rows(walls: dict[str, list[float]], jobs: int, waits: list[str],
                sampled: int) -> list[Row]:
    sqlite = statistics.median(walls["sqlite"])
    one = statistics.median(walls["pg-1"])
    rows = []
    for n in HOSTS:
        wall = statistics.median(walls[f"pg-{n}"])
        rows.append(Row("hosts", f"claims, {n} host{'s' if n > 1 else ''} on PostgreSQL "
                        f"({jobs} `true` jobs)", "SQLite home, 1 tick loop",
                        f"{jobs / wall:.1f} jobs/s vs {jobs / sqlite:.1f} jobs/s",
                        sqlite / wall, key=f"hosts-{n}"))
    four = statistics.median(walls[f"pg-{max(HOSTS)}"])
    rows.append(Row("hosts", f"claims, {max(HOSTS)} hosts vs 1 host on PostgreSQL",
                    "1 host on PostgreSQL", f"{jobs / four:.1f} jobs/s vs {jobs / one:.1f} "
                    f"jobs/s; claim statements seen waiting on a lock: {len(waits)} of "
                    f"{sampled} samples", one / four, "≥ 1× and no lock wait",
                    one / four >= 1.0 and not waits, "hosts-scale"))
    return rows


def _idle_rows(runner: Runner, server: Any, profile: Profile) -> list[Row]:
    database = server.create_database()
    try:
        repo = make_repo(runner.tmp / "hosts-idle-repo")
        sqlite = make_home(runner, runner.tmp / "hosts-idle-sqlite", repo)
        pg = make_home(runner, runner.tmp / "hosts-idle-pg", repo)
        config = pg / "orch.yaml"
        config.write_text(_located(config.read_text(encoding="utf-8"), database.dsn, "idle"),
                          encoding="utf-8")
        cases: dict[str, Callable[[], Sample]] = {
            "sqlite": lambda: runner.run(runner.orch("--home", sqlite, "tick", "--quiet")),
            "pg": lambda: runner.run(runner.orch("--home", pg, "tick", "--quiet")),
        }
        samples = interleave(cases, profile.rounds)
    finally:
        server.drop_database(database.name)
    return [ratio_row("hosts", "orch tick (idle) on PostgreSQL", "orch tick (idle) on SQLite",
                      samples, "pg", "sqlite", 1.5, "hosts-idle")]
