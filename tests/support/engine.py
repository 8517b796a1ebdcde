"""Shared pieces of the job-engine tests (tests/engine/).

Everything is real: a git repository and an orch home in tmp_path, the state
(the SQLite file, or a real PostgreSQL database when the `eh` fixture runs a
test on that backend), `orch tick` either in-process (`run_tick`) or as a separate process,
supervisors and agents as processes. Only external programs are faked, as
small scripts (a `claude` on PATH, a sleeping agent).

The tests get an `EngineHome` from the `eh` fixture of tests/engine/conftest.py,
which kills whatever the home's runs left behind when the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from orch import procs
from orch.config import Settings, load_settings
from orch.engine.commands.init import open_state
from orch.engine.tick import TickReport, run_tick
from orch.machine import Pipeline
from orch.pipeline import load_pipeline
from orch.state.db import Database
from support.db import RawDb
from support.env import keep_env
from support.git import make_repo

PY = sys.executable

# The SPEC section 4 timings, shortened for tests.
FAST = {"heartbeat_interval_s": 1, "heartbeat_timeout_s": 3, "retry_backoff_s": 0,
        "cancel_grace_s": 1}

TERMINAL = ("done", "failed", "cancelled")


def write_script(path: Path, text: str) -> Path:
    """An executable script (text starts with its #! line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)
    return path


def claude_result(*, is_error: bool = False, result: str = "done", subtype: str = "success",
                  cost: float = 0.0) -> str:
    """One line in the shape of `claude -p --output-format json`."""
    return json.dumps({"type": "result", "subtype": subtype, "is_error": is_error,
                       "result": result, "session_id": "fake-session", "total_cost_usd": cost,
                       "usage": {"input_tokens": 3, "output_tokens": 4}})


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, pause: float = 0.05
             ) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(pause)


def alive(pid: int) -> bool:
    """A live (non-zombie) process has this pid."""
    return procs.start_ticks(pid) is not None and not procs.is_zombie(pid)


def group_alive(pgid: int) -> list[int]:
    """Live members of a process group."""
    return procs.group_members(pgid)


def finished(eh: EngineHome, job_id: int) -> bool:
    """The job is no longer running (its run ended, whether or not a tick judged it yet)."""
    return eh.job(job_id)["status"] != "running"


def start_unrelated_sleeper(seconds: int = 60) -> subprocess.Popen[bytes]:
    """A process that has nothing to do with orch (its own session, no ORCH_* env)."""
    env = {k: v for k, v in os.environ.items() if keep_env(k)}
    return subprocess.Popen(["sleep", str(seconds)], env=env, start_new_session=True)


class EngineHome:
    """An orch home with one repo `app`, a pipeline file and helpers to drive and inspect it."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch,
                 state: str | None = None) -> None:
        self.root = root
        self.state = state  # None: the home's orch.db; else a PostgreSQL URL
        self.home = root / "home"
        self.home.mkdir()
        self.repo = make_repo(root / "repos" / "app")
        self.bin = root / "bin"
        self.bin.mkdir()
        # agents started by in-process ticks (and their supervisors) inherit os.environ
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}")
        self.configure()

    # --- configuration ---------------------------------------------------------

    def configure(self, *, stages: list[dict[str, Any]] | None = None,
                  agents: dict[str, dict[str, Any]] | None = None,
                  repo: dict[str, Any] | None = None, **top: Any) -> None:
        """Write orch.yaml and pipeline.yaml (default: one `command` stage running `true`)."""
        config: dict[str, Any] = {"max_concurrency": 1, "max_attempts": 3, **FAST,
                                  "agents": agents or {},
                                  "repos": {"app": {"path": str(self.repo),
                                                    "default_branch": "main",
                                                    "max_active": 1, **(repo or {})}},
                                  "pipeline": "pipeline.yaml", **top}
        if self.state is not None:
            config.setdefault("state", self.state)
        (self.home / "orch.yaml").write_text(yaml.safe_dump(config, sort_keys=False),
                                             encoding="utf-8")
        self.write_pipeline(stages or [{"name": "run", "runner": "command",
                                        "command": ["true"]}])

    def write_pipeline(self, stages: list[dict[str, Any]]) -> None:
        (self.home / "pipeline.yaml").write_text(yaml.safe_dump({"stages": stages},
                                                                sort_keys=False),
                                                 encoding="utf-8")

    def settings(self, env: dict[str, str] | None = None) -> Settings:
        return load_settings(self.home, {**os.environ, **(env or {})})

    def pipeline(self, settings: Settings | None = None) -> Pipeline:
        return load_pipeline(settings or self.settings())

    @property
    def backend(self) -> str:
        return "sqlite" if self.state is None else "postgres"

    @property
    def location(self) -> str:
        return self.state or str(self.home / "orch.db")

    @contextmanager
    def database(self) -> Iterator[Database]:
        db = open_state(self.settings())
        try:
            yield db
        finally:
            db.close()

    # --- driving ---------------------------------------------------------------

    def add_task(self, title: str = "task", priority: int = 0) -> int:
        from orch.engine.commands.tasks import NewTask, add_task

        settings = self.settings()
        with self.database() as db:
            return int(add_task(settings, db, NewTask("app", title, "", priority),
                                self.pipeline(settings).first.name).id)

    def tick(self, max_claims: int = 1, dry_run: bool = False,
             env: dict[str, str] | None = None) -> TickReport:
        """One tick in this process (`env` overrides configuration like ORCH_* variables)."""
        settings = self.settings(env)
        pipeline = self.pipeline(settings)
        db = open_state(settings)
        try:
            return run_tick(settings, pipeline, db, max_claims=max_claims, dry_run=dry_run)
        finally:
            db.close()

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a separate orch process: ours minus ORCH_*, our bin on PATH."""
        env = {k: v for k, v in os.environ.items() if keep_env(k)}
        return env | (extra or {})

    def orch_argv(self, *args: str) -> list[str]:
        return [PY, "-m", "orch", "--home", str(self.home), *args]

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        """`orch --home H ARGS` as a separate process."""
        return subprocess.run(self.orch_argv(*args), env=self.env(env), capture_output=True,
                              text=True, timeout=timeout, check=False)

    def tick_cli(self, *args: str, env: dict[str, str] | None = None
                 ) -> dict[str, Any]:
        """`orch tick --json ARGS` as a separate process; returns its report."""
        done = self.cli("tick", "--json", *args, env=env)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def tick_until(self, predicate: Callable[[], Any], *, timeout: float = 60,
                   max_claims: int = 1, pause: float = 0.1, what: str = "the condition",
                   env: dict[str, str] | None = None) -> list[TickReport]:
        """Tick (in-process) until `predicate()` holds; returns the reports."""
        reports: list[TickReport] = []
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}; "
                            f"tasks: {self.rows('SELECT * FROM tasks')}; "
                            f"jobs: {self.rows('SELECT * FROM jobs')}; "
                            f"errors: {[r.errors for r in reports if r.errors]}")
            reports.append(self.tick(max_claims=max_claims, env=env))
            time.sleep(pause)
        return reports

    # --- inspection (a separate plain connection each time: sqlite3 or psycopg) ------

    @contextmanager
    def connect(self) -> Iterator[RawDb]:
        conn = RawDb(self.location)
        try:
            yield conn
        finally:
            conn.close()

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.connect() as conn:
            return conn.rows(sql, params)

    def value(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with self.connect() as conn:
            return conn.value(sql, params)

    def write(self, sql: str, params: tuple[Any, ...] = (), *,
              ignore_checks: bool = False) -> int:
        """A direct write (to corrupt rows on purpose); returns the row count. With
        IGNORE_CHECKS, invariant 1's CHECK is off for it (support.db.RawDb.write)."""
        with self.connect() as conn:
            return conn.write(sql, params, ignore_checks=ignore_checks)

    def task(self, task_id: int) -> dict[str, Any]:
        rows = self.rows("SELECT * FROM tasks WHERE id = ?", (task_id,))
        assert rows, f"no task {task_id}"
        return rows[0]

    def jobs(self, task_id: int) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM jobs WHERE task_id = ? ORDER BY id", (task_id,))

    def job(self, job_id: int) -> dict[str, Any]:
        return self.rows("SELECT * FROM jobs WHERE id = ?", (job_id,))[0]

    def runs(self, job_id: int) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM runs WHERE job_id = ? ORDER BY id", (job_id,))

    def run(self, run_id: int) -> dict[str, Any]:
        return self.rows("SELECT * FROM runs WHERE id = ?", (run_id,))[0]

    def events(self, task_id: int | None = None, kind: str | None = None
               ) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM events WHERE 1 = 1", list[Any]()
        if task_id is not None:
            sql += " AND task_id = ?"
            params.append(task_id)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        return self.rows(sql + " ORDER BY id", tuple(params))

    def counter(self, name: str) -> int:
        """A counter's value (on PostgreSQL the per-host rows `name@HOST` added up)."""
        return int(self.value("SELECT coalesce(sum(value), 0) FROM counters "
                              "WHERE name = ? OR name LIKE ?", (name, f"{name}@%")))

    def running_job(self, task_id: int) -> dict[str, Any] | None:
        rows = self.rows("SELECT * FROM jobs WHERE task_id = ? AND status = 'running'",
                         (task_id,))
        return rows[0] if rows else None

    def wait_registered(self, task_id: int, timeout: float = 15) -> tuple[dict[str, Any],
                                                                         dict[str, Any]]:
        """The running job of a task once its supervisor took it over, and its run."""

        def registered() -> tuple[dict[str, Any], dict[str, Any]] | None:
            job = self.running_job(task_id)
            if job is None or not job["run_id"]:
                return None
            run = self.run(job["run_id"])
            if not run["pgid"] or run["pgid"] != job["pid"]:
                return None
            return job, run

        return wait_for(registered, timeout, f"a supervisor to take over task {task_id}'s job")

    def check_invariants(self) -> None:
        """SPEC section 4 invariants 1 and 2, and every run of a job that is not running ended."""
        dirty = self.rows("SELECT id FROM jobs WHERE status = 'queued' AND (run_id IS NOT NULL "
                          "OR pid IS NOT NULL OR pid_started IS NOT NULL OR boot_id IS NOT NULL "
                          "OR started_at IS NOT NULL OR heartbeat_at IS NOT NULL "
                          "OR heartbeat_mono IS NOT NULL)")
        assert dirty == [], f"queued jobs that carry run ownership: {dirty}"
        doubles = self.rows("SELECT task_id, count(*) AS n FROM jobs WHERE status IN "
                            "('queued', 'running') GROUP BY task_id HAVING count(*) > 1")
        assert doubles == [], f"tasks with more than one open job: {doubles}"
        open_runs = self.rows(
            "SELECT runs.id, runs.job_id FROM runs JOIN jobs ON jobs.id = runs.job_id "
            "WHERE runs.outcome IS NULL AND runs.finished_at IS NULL "
            "AND NOT (jobs.status = 'running' AND jobs.run_id = runs.id)")
        assert open_runs == [], f"runs left open for jobs that do not run them: {open_runs}"

    # --- processes ---------------------------------------------------------------

    def processes(self) -> list[int]:
        """Live processes that belong to this home: orch's own (`--home H` in their argv)
        and everything started with `ORCH_HOME=H` (agents, commands, their children)."""
        me = os.getpid()
        marker_env = f"ORCH_HOME={self.home}".encode()
        marker_arg = str(self.home).encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            pid = int(entry)
            try:
                with open(f"/proc/{pid}/environ", "rb") as handle:
                    environ = handle.read().split(b"\0")
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    argv = handle.read().split(b"\0")
            except OSError:
                continue
            if (marker_env in environ or marker_arg in argv) and alive(pid):
                found.append(pid)
        return found

    def close(self) -> None:
        """Kill whatever this home's runs left behind (each by its own pid)."""
        for _ in range(3):
            left = self.processes()
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)


def kicked_ticks(home: Path) -> list[int]:
    """Pids of the kicked ticks (`orch ... tick --kicked TOKEN`) of a home alive now."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rpartition(b")")[2].split()[0]
        except OSError:
            continue
        if b"--kicked" in argv and str(home).encode() in argv and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def settle_kicks(home: Path, timeout: float = 60) -> None:
    """Wait until no kicked tick of the home runs any more (a test leaves none behind)."""
    wait_for(lambda: not kicked_ticks(home), timeout, "the kicked ticks to finish", pause=0.1)
