"""Benchmarks of how work flows: stage latency with kicks, a tick over open work, import.

Run through bench/run.py (sections `latency`, `open-work`, `import`); each returns
rows for docs/performance.md.

- latency: a task from `orch task add` to `done` with no scheduled tick at all (kicks
  only), through six `command` stages running `true` and through the default pipeline
  with instant demo agents; beside it the same with kicks off under a once-a-minute
  scheduler, *computed* as (ticks the task needs - 1) x 60 s + the measured work (the
  ticks are counted by ticking by hand with kicks off), and the median gap from one
  job's `finished_at` to the next job's `started_at`.
- open-work: a tick with nothing it may do over 10,000 waiting tasks in 100 repos (every
  repo's slots full) plus 1,000 active tasks with queued jobs (max_concurrency full of
  running jobs), against the same tick on an empty home.
- import: `orch task import` of 20,000 tasks, in tasks per second.
"""

from __future__ import annotations

import collections
import itertools
import json
import re
import sqlite3
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from common import (
    OLD,
    BenchError,
    Profile,
    Row,
    Runner,
    Sample,
    interleave,
    make_home,
    make_repo,
    ratio_row,
    seconds,
)

SIX_STAGES = "stages:\n" + "".join(
    f"  - {{name: s{i}, runner: command, command: [\"true\"]}}\n" for i in range(1, 7))
CRON_PERIOD_S = 60.0


def _set(config: Path, key: str, value: str) -> None:
    text = config.read_text(encoding="utf-8")
    text, count = re.subn(rf"(?m)^{re.escape(key)}: .*$", f"{key}: {value}", text)
    if not count:
        text += f"\n{key}: {value}\n"
    config.write_text(text, encoding="utf-8")


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _rows(db: Path, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# --------------------------------------------------------------------------- latency


def _six_stage_home(runner: Runner, path: Path) -> Path:
    home = make_home(runner, path, make_repo(path.with_name(path.name + "-repo")))
    (home / "pipeline.yaml").write_text(SIX_STAGES, encoding="utf-8")
    config = home / "orch.yaml"
    _set(config, "pipeline", "pipeline.yaml")
    _set(config, "retry_backoff_s", "0")
    return home


def _demo_home(runner: Runner, path: Path) -> Path:
    """A home like `orch demo`'s: the demo agents, the demo project, pytest, the merge."""
    from orch.engine.commands.demo import REPO_DIR, demo_config, demo_test_command, make_repo

    path.mkdir(parents=True)
    repo = path / REPO_DIR
    make_repo(repo)
    (path / "orch.yaml").write_text(demo_config(repo, demo_test_command()), encoding="utf-8")
    runner.run(runner.orch("--home", path, "init"))
    return path


def _add_and_wait(runner: Runner, home: Path, repo: str, timeout: float) -> float:
    """`orch task add` (with kicks), then wait, ticking never, until the task closes."""
    env = {**runner.env, "ORCH_KICK_ENABLED": "true"}
    start = time.perf_counter()
    added = _run_env(runner, runner.orch("--home", home, "task", "add", "--repo", repo,
                                         "--title", "latency"), env)
    task = int(added)
    db = home / "orch.db"
    while time.perf_counter() - start < timeout:
        rows = _rows(db, "SELECT stage, state FROM tasks WHERE id = ?", (task,))
        if rows and rows[0]["state"] in ("closed", "held"):
            if rows[0]["stage"] != "done":
                raise BenchError(f"latency: task {task} ended {rows[0]['stage']} "
                                 f"({rows[0]['state']}); see {home}")
            return time.perf_counter() - start
        time.sleep(0.01)
    raise BenchError(f"latency: task {task} not done after {timeout:.0f} s with kicks")


def _run_env(runner: Runner, argv: list[str], env: dict[str, str]) -> str:
    import subprocess

    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv[-4:])} exited {done.returncode}: {done.stderr[-500:]}")
    return done.stdout


def _gaps(home: Path) -> list[float]:
    """Seconds from each job's end to the start of the next job of the task."""
    jobs = _rows(home / "orch.db", "SELECT started_at, finished_at FROM jobs ORDER BY id")
    return [_stamp(b["started_at"]) - _stamp(a["finished_at"])
            for a, b in itertools.pairwise(jobs)]


def _stage_times(home: Path) -> dict[str, float]:
    """Seconds each stage's job took, from its start to its end (the last job per stage)."""
    jobs = _rows(home / "orch.db", "SELECT stage, started_at, finished_at FROM jobs ORDER BY id")
    return {job["stage"]: _stamp(job["finished_at"]) - _stamp(job["started_at"]) for job in jobs}


def _ticks_by_hand(runner: Runner, home: Path, repo: str) -> tuple[int, float]:
    """With kicks off: (ticks from `task add` to done, seconds of work of those ticks)."""
    env = {**runner.env, "ORCH_KICK_ENABLED": "false"}
    _run_env(runner, runner.orch("--home", home, "task", "add", "--repo", repo, "--title", "t"),
             env)
    ticks, work = 0, 0.0
    while ticks < 200:
        start = time.perf_counter()
        report = json.loads(_run_env(runner, runner.orch("--home", home, "tick", "--json"), env))
        work += time.perf_counter() - start
        ticks += 1
        state = _rows(home / "orch.db", "SELECT stage FROM tasks ORDER BY id DESC LIMIT 1")
        if state and state[0]["stage"] == "done":
            return ticks, work
        if not any(report[key] for key in report if key != "errors"):
            time.sleep(0.2)  # an agent still works: its supervisor runs apart from ticks
    raise BenchError(f"latency: the task did not finish within {ticks} ticks by hand")


def bench_latency(runner: Runner, profile: Profile, notes: list[str]) -> list[Row]:
    rows = []
    cases = (("six `command` stages (`true`)", _six_stage_home, "app"),
             ("default pipeline, instant demo agents", _demo_home, "demo"))
    for index, (label, make, repo) in enumerate(cases):
        walls, gaps, stages = [], [], collections.defaultdict(list)
        for rep in range(profile.latency_reps):
            home = make(runner, runner.tmp / f"latency-{index}-{rep}")
            walls.append(_add_and_wait(runner, home, repo, timeout=120))
            gaps += _gaps(home)
            for stage, took in _stage_times(home).items():
                stages[stage].append(took)
        notes.append(f"Where the time goes, {label} (median seconds from a job's start to its "
                     "end, per stage): " + ", ".join(
                         f"{stage} {statistics.median(took):.2f}"
                         for stage, took in stages.items())
                     + f"; the {len(gaps) // max(1, len(walls))} gaps between jobs: median "
                     f"{statistics.median(gaps):.2f} s each.")
        ticks, work = _ticks_by_hand(runner, make(runner, runner.tmp / f"latency-{index}-hand"),
                                     repo)
        cron = (ticks - 1) * CRON_PERIOD_S + work
        wall, gap = statistics.median(walls), statistics.median(gaps)
        rows.append(Row("latency", f"task add → done, {label}, kicks only",
                        "the same, kicks off, a tick every 60 s (computed)",
                        f"{wall:.1f} s vs {cron:.0f} s ({ticks} ticks)", wall / cron,
                        "done ≤ 10 s", wall <= 10, f"latency-{index}"))
        rows.append(Row("latency", f"gap job end → next job start, {label}", "—",
                        f"median {gap:.2f} s (max {max(gaps):.2f} s)", None, "≤ 2 s",
                        gap <= 2, f"gap-{index}"))
    notes.append(f"Stage latency: medians of {profile.latency_reps} tasks each, a fresh home "
                 "per task, no scheduled tick (only kicks); the kicks-off figure is computed "
                 "as (ticks the task needs − 1) × 60 s + the measured work of those ticks, "
                 "the ticks counted by running `orch tick` by hand with kicks off.")
    return rows


# --------------------------------------------------------------------------- open work


def _open_work_config(repo: Path, profile: Profile) -> str:
    per_repo = profile.open_active // profile.open_repos
    return ("max_concurrency: 1\nheartbeat_timeout_s: 86400\nhost_timeout_s: 90000\n"
            "repos:\n" + "".join(f"  r{i}: {{path: {json.dumps(str(repo))}, "
                                  f"max_active: {per_repo}}}\n"
                                  for i in range(profile.open_repos)))


def _open_work_home(runner: Runner, path: Path, repo: Path, profile: Profile,
                    holder_pid: int | None) -> Path:
    """100 repos (their slots full), 10,000 waiting tasks, 1,000 active tasks with queued
    jobs, max_concurrency 1 held by a live running job (a sleep of the bench); with no
    holder, the same configuration and no task at all."""
    from orch import procs

    home = make_home(runner, path, repo)
    (home / "orch.yaml").write_text(_open_work_config(repo, profile), encoding="utf-8")
    if holder_pid is None:
        return home
    repos = profile.open_repos
    conn = sqlite3.connect(home / "orch.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    rows = [(f"r{i % repos}", f"waiting {i}", "waiting", 0) for i in range(profile.open_waiting)]
    rows += [(f"r{i % repos}", f"active {i}", "active", 1) for i in range(profile.open_active)]
    conn.executemany("INSERT INTO tasks (repo, title, stage, state, admitted, created_at, "
                     f"updated_at, moved_at) VALUES (?, ?, 'analysis', ?, ?, '{OLD}', '{OLD}', "
                     f"'{OLD}')", rows)
    first_active = profile.open_waiting + 1
    here = procs.Identity.here()
    conn.execute("INSERT INTO jobs (id, task_id, stage, runner, status, run_id, pid, "
                 "pid_started, host, boot_id, started_at, heartbeat_at, heartbeat_mono, "
                 "created_at) VALUES (1, ?, 'analysis', 'agent', 'running', 1, ?, ?, ?, ?, ?, ?, "
                 "?, ?)", (first_active, holder_pid, procs.start_ticks(holder_pid), here.host,
                           here.boot_id, OLD, OLD, time.monotonic() + 86400, OLD))
    conn.execute("INSERT INTO runs (id, job_id, started_at, attempt) VALUES (1, 1, ?, 1)",
                 (OLD,))
    conn.executemany("INSERT INTO jobs (task_id, stage, runner, status, created_at) "
                     "VALUES (?, 'analysis', 'agent', 'queued', ?)",
                     [(task, OLD) for task in range(first_active + 1,
                                                    first_active + profile.open_active)])
    conn.execute("COMMIT")
    conn.close()
    return home


def bench_open_work(runner: Runner, profile: Profile, notes: list[str]) -> list[Row]:
    import subprocess

    holder = subprocess.Popen(["sleep", "3600"])
    try:
        repo = make_repo(runner.tmp / "open-repo")
        empty = _open_work_home(runner, runner.tmp / "open-empty", repo, profile, None)
        busy = _open_work_home(runner, runner.tmp / "open-busy", repo, profile, holder.pid)
        for home in (empty, busy):  # the first tick migrates and records the pipeline
            runner.run(runner.orch("--home", home, "tick", "--quiet"))
        cases: dict[str, Callable[[], Sample]] = {
            name: (lambda home=home: runner.run(runner.orch("--home", home, "tick", "--quiet")))
            for name, home in (("empty", empty), ("busy", busy))}
        samples = interleave(cases, profile.rounds)
        report = json.loads(_run_env(runner, runner.orch("--home", busy, "tick", "--json"),
                                     runner.env))
        if any(report[key] for key in report):
            raise BenchError(f"open work: the busy tick did something: {report}")
    finally:
        holder.kill()
        holder.wait()
    notes.append(f"Open work: {profile.open_waiting:,} waiting tasks in {profile.open_repos} "
                 f"repos whose slots are full, {profile.open_active:,} active tasks with "
                 "queued jobs, max_concurrency 1 held by a live running job; the tick has "
                 "nothing it may do (checked with `--json`); the empty home has the same "
                 "orch.yaml and no task.")
    return [ratio_row("open-work", f"orch tick over {profile.open_waiting:,} waiting + "
                      f"{profile.open_active:,} active tasks", "the same tick, empty home",
                      samples, "busy", "empty", 1.2, "open-work")]


# --------------------------------------------------------------------------- import


FILES_FLOOR = """
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
os.makedirs(root)
for i in range(count):
    os.mkdir(f"{root}/{i}")
    with open(f"{root}/{i}/00-task.md", "w", encoding="utf-8") as handle:
        handle.write("x" * 400)
"""


def bench_import(runner: Runner, profile: Profile, notes: list[str]) -> list[Row]:
    """`orch task import` against its file-system floor, interleaved: the same number of
    folders and 00-task.md files written by a bare Python loop (no rows, no parsing)."""
    import sys

    count = profile.import_tasks
    source = runner.tmp / "import.jsonl"
    with open(source, "w", encoding="utf-8") as out:
        for i in range(count):
            out.write(json.dumps({"repo": "app", "title": f"imported task {i}: do the thing",
                                  "body": "A body of a few words.", "priority": i % 3}) + "\n")
    walls, floors = [], []
    for rep in range(profile.import_reps):
        home = make_home(runner, runner.tmp / f"import-{rep}",
                         make_repo(runner.tmp / f"import-repo-{rep}"))
        walls.append(runner.run(runner.orch("--home", home, "task", "import", source)).wall)
        got = len(list((home / "tasks").iterdir()))
        if got != count:
            raise BenchError(f"import: {got} task folders, expected {count}")
        floors.append(runner.run([sys.executable, "-c", FILES_FLOOR,
                                  str(runner.tmp / f"import-floor-{rep}"), str(count)]).wall)
    wall, floor = statistics.median(walls), statistics.median(floors)
    rate = count / wall
    notes.append(f"Import: median of {profile.import_reps} runs of `orch task import` of "
                 f"{count:,} tasks (a .jsonl file) into a fresh home, every 00-task.md "
                 "written before the commit, alternated with the file-system floor: a bare "
                 f"Python process making the same {count:,} folders and 400-byte files.")
    return [Row("import", f"orch task import ({count:,} tasks)", "—",
                f"{rate:,.0f} tasks/s ({seconds(wall)})", None, "≥ 5,000 tasks/s",
                rate >= 5000, "import"),
            Row("import", f"orch task import ({count:,} tasks)",
                f"the same folders and files alone (python -c, {count / floor:,.0f} files/s)",
                f"{seconds(wall)} vs {seconds(floor)}", wall / floor, "—", None,
                "import-floor")]
