"""What every benchmark shares: the profiles, the rows of the report, the runner that
starts and measures children, and the homes and repositories they run on (bench/run.py
is the driver; flow.py and hosts.py add sections)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (ROOT, BENCH):  # this checkout's orch; floor_claim beside this file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

ORCH_MAIN = "import sys; sys.argv[0] = 'orch'; from orch.cli import main; main()"


HELD_TASKS = 3  # open (held) tasks in every home of the history benchmark


OLD = "2025-01-01T00:00:00.000000Z"


GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@orch.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@orch.invalid",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


@dataclass(frozen=True)
class Profile:
    name: str
    rounds: int           # interleaved rounds of each start-up benchmark
    history_tasks: int
    history_jobs: int
    history_events: int
    claim_jobs: int       # N of `orch tick --max-claims N`
    claim_reps: int
    peer_jobs: int        # claims of the in-process claim peers
    latency_reps: int = 3     # tasks timed from `task add` to `done` (bench/flow.py)
    open_waiting: int = 10_000
    open_repos: int = 100
    open_active: int = 1_000
    import_tasks: int = 20_000
    import_reps: int = 3


FULL = Profile("full", rounds=15, history_tasks=100_000, history_jobs=1_000_000,
               history_events=300_000, claim_jobs=50, claim_reps=3, peer_jobs=500)


SMOKE = Profile("smoke", rounds=1, history_tasks=300, history_jobs=3000,
                history_events=900, claim_jobs=3, claim_reps=1, peer_jobs=20, latency_reps=1,
                open_waiting=200, open_repos=4, open_active=20, import_tasks=200,
                import_reps=1)


class BenchError(Exception):
    """A benchmarked command failed or a check (each job exactly once) did not hold."""


@dataclass(frozen=True)
class Sample:
    wall: float   # seconds
    cpu: float    # user + system seconds of the child
    rss_kb: int   # the child's peak resident memory


@dataclass
class Row:
    section: str
    name: str
    floor: str
    measured: str
    ratio: float | None
    target: str = "—"
    met: bool | None = None
    key: str = ""


def child_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORCH_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    env["ORCH_KICK_ENABLED"] = "false"  # the latency benchmark switches kicks on itself
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(GIT_ENV)
    return env


class Runner:
    """Starts children with one environment and measures each with os.wait4."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = child_env(tmp)
        self.err = tmp / "stderr.txt"

    def orch(self, *args: str | Path) -> list[str]:
        return [sys.executable, "-c", ORCH_MAIN, *map(str, args)]

    def available(self, *command: str) -> bool:
        """Does this orch have the command (`orch COMMAND --help` exits 0)?"""
        proc = subprocess.run(self.orch(*command, "--help"), env=self.env, check=False,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc.returncode == 0

    def run(self, argv: list[str], *, cwd: Path | None = None, out: Path | None = None,
            ok: tuple[int, ...] = (0,)) -> Sample:
        with open(out or os.devnull, "wb") as stdout, open(self.err, "wb") as stderr:
            start = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=cwd, env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=stdout, stderr=stderr)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in ok:
            raise BenchError(f"{' '.join(argv[-6:])} exited {proc.returncode}: "
                             f"{self.err.read_text(errors='replace')[-2000:]}")
        return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)

    def lanes(self, argvs: list[list[str]], again: Callable[[Path], bool]) -> float:
        """Run the argvs at once; a lane whose output says `again` is started again.

        Returns the wall time from the first start to the last exit.
        """
        outs = [self.tmp / f"lane-{i}.out" for i in range(len(argvs))]
        running: dict[int, int] = {}
        start = time.perf_counter()

        def spawn(lane: int) -> None:
            with open(outs[lane], "wb") as out, open(f"{self.err}.{lane}", "wb") as err:
                proc = subprocess.Popen(argvs[lane], env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=err)
            running[proc.pid] = lane

        for lane in range(len(argvs)):
            spawn(lane)
        while running:
            pid, status, _ = os.wait4(-1, 0)
            lane = running.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                text = Path(f"{self.err}.{lane}").read_text(errors="replace")[-2000:]
                raise BenchError(f"lane {lane} ({' '.join(argvs[lane][-4:])}) exited {code}: "
                                 f"{text}")
            if again(outs[lane]):
                spawn(lane)
        return time.perf_counter() - start


def interleave(cases: dict[str, Callable[[], Sample]], rounds: int) -> dict[str, list[Sample]]:
    """One warm-up each, then `rounds` rounds of every case, the order rotated each round."""
    names = list(cases)
    for name in names:
        cases[name]()
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(cases[name]())
    return samples


def median(samples: list[Sample], attr: str = "wall") -> float:
    return statistics.median(getattr(sample, attr) for sample in samples)


def seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def ratio_row(section: str, name: str, floor: str, samples: dict[str, list[Sample]],
              a: str, b: str, limit: float | None = None, key: str = "") -> Row:
    """Row for median(a) / median(b), with the CPU-time ratio beside it."""
    wall_a, wall_b = median(samples[a]), median(samples[b])
    cpu = median(samples[a], "cpu") / max(median(samples[b], "cpu"), 1e-9)
    ratio = wall_a / wall_b
    return Row(section, name, floor,
               f"{seconds(wall_a)} vs {seconds(wall_b)} (CPU time {cpu:.2f}×)", ratio,
               f"≤ {limit:g}×" if limit is not None else "—",
               None if limit is None else ratio <= limit, key)


def git(cwd: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("# bench\n", encoding="utf-8")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "initial commit")
    return path


def make_home(runner: Runner, path: Path, repo: Path) -> Path:
    """`orch init --repo app=REPO`."""
    runner.run(runner.orch("--home", path, "init", "--repo", f"app={repo}"))
    return path


CLAIM_PIPELINE = """stages:
  - {name: run, runner: command, command: ["true"]}
"""


def claim_home(runner: Runner, path: Path, jobs: int) -> Path:
    """A home with JOBS queued `command` jobs running `true` (admitted and enqueued by a tick)."""
    home = make_home(runner, path, make_repo(path.with_name(path.name + "-repo")))
    config = home / "orch.yaml"
    text = config.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^max_concurrency: \d+", "max_concurrency: 4", text)
    text = re.sub(r"(?m)^retry_backoff_s: \d+", "retry_backoff_s: 0", text)
    text = re.sub(r"(?m)^pipeline: default", "pipeline: pipeline.yaml", text)
    text = re.sub(r"(?m)^    max_active: 1$", f"    max_active: {jobs}", text)
    config.write_text(text, encoding="utf-8")
    (home / "pipeline.yaml").write_text(CLAIM_PIPELINE, encoding="utf-8")
    conn = sqlite3.connect(home / "orch.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO tasks (repo, title, priority, stage, state, created_at, updated_at) "
        "VALUES ('app', ?, 0, 'run', 'waiting', ?, ?)",
        [(f"bench job {i}", OLD, OLD) for i in range(jobs)])
    conn.execute("COMMIT")
    conn.close()
    runner.run(runner.orch("--home", home, "tick", "--max-claims", "0", "--quiet"))
    queued = scalar(home / "orch.db", "SELECT count(*) FROM jobs WHERE status = 'queued'")
    if queued != jobs:
        raise BenchError(f"claim setup: {queued} queued jobs, expected {jobs}")
    return home


def scalar(db_path: Path, sql: str) -> int:
    conn = sqlite3.connect(db_path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def check_orch_once(home: Path, jobs: int) -> int:
    """Every job ran `true` exactly once, and passed; returns the runs that failed to start.

    A run that could not start (the job is then retried as a new attempt) is
    allowed, and counted: at-least-once is the contract, but no job may have two
    successful runs, or two runs of the same attempt, and every claim made a run.
    """
    db = home / "orch.db"
    checks = {
        "tasks not done": ("SELECT count(*) FROM tasks WHERE stage != 'done'", 0),
        "jobs without exactly one successful run": (
            "SELECT count(*) FROM jobs WHERE (SELECT count(*) FROM runs WHERE runs.job_id = "
            "jobs.id AND runs.outcome = 'succeeded') != 1", 0),
        "jobs with two runs of one attempt": (
            "SELECT count(*) FROM (SELECT 1 FROM runs GROUP BY job_id, attempt "
            "HAVING count(*) > 1)", 0),
        "claims without a run": (
            "SELECT (SELECT value FROM counters WHERE name = 'claims_total') - "
            "(SELECT count(*) FROM runs)", 0),
        "jobs": ("SELECT count(*) FROM jobs", jobs),
    }
    for what, (sql, expected) in checks.items():
        got = scalar(db, sql)
        if got != expected:
            raise BenchError(f"orch claim check failed: {what} = {got}, expected {expected}; "
                             f"{failed_runs(db)}")
    return scalar(db, "SELECT count(*) FROM runs WHERE outcome != 'succeeded'")


def failed_runs(db_path: Path) -> str:
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(
            "SELECT runs.id, runs.job_id, runs.outcome, runs.detail, jobs.status, jobs.error, "
            "runs.log_path FROM runs JOIN jobs ON jobs.id = runs.job_id "
            "WHERE runs.outcome IS NOT 'succeeded' LIMIT 3").fetchall()
    finally:
        conn.close()
    parts = []
    for run_id, job, outcome, detail, status, error, log in rows:
        tail = Path(log).read_text(errors="replace")[-300:] if log and Path(log).exists() else ""
        parts.append(f"run {run_id} of job {job}: {outcome} ({detail}); job {status}: {error}; "
                     f"log: {tail!r}")
    return "; ".join(parts) or "no failed runs"


def check_floor_once(db_path: Path, jobs: int) -> None:
    got = scalar(db_path, "SELECT count(*) FROM jobs WHERE claims = 1 AND status = 'succeeded'")
    if got != jobs:
        raise BenchError(f"floor claim check failed: {got} of {jobs} jobs ran exactly once")


def tick_again(out: Path, max_claims: int) -> bool:
    """Should a tick loop tick again (its last tick was saturated, or something failed)?"""
    report = json.loads(out.read_text() or "{}")
    claimed = len(report.get("claimed", []))
    return claimed >= max_claims or bool(claimed and report.get("errors"))

