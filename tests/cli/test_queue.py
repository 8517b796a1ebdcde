"""`orch queue` and `orch logs` (issue 4, SPEC section 9 and invariant 6).

Real homes, real git repos, real ticks with `command` stages; a few rare
states (a budget hold, an unjudged finished job) are written by direct SQL.
The reason lines are checked for every waiting cause, the JSON keys against
the SPEC, the rich view against an 80-column terminal, and the queries
against the indexes (no scan of closed history).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.env import keep_env

from orch.config import load_settings
from orch.engine.commands.queue import build_queue
from orch.pipeline import load_pipeline
from orch.state import events
from orch.state.schema import open_database
from orch.timeutil import to_iso

Cli = Callable[..., tuple[int, str, str]]

WORK_PIPELINE = textwrap.dedent("""\
    stages:
      - name: work
        runner: command
        command:
          - sh
          - -c
          - 'echo "log line from task $ORCH_TASK_ID"; test ! -e "$ORCH_ARTIFACTS/fail"'
      - {name: check, runner: human, on_fail: work}
""")

SLOW_PIPELINE = textwrap.dedent("""\
    stages:
      - {name: work, runner: command, command: [sh, -c, 'echo first; sleep 1.5; echo second']}
      - {name: check, runner: human, on_fail: work}
""")

QUESTIONS_PIPELINE = textwrap.dedent("""\
    stages:
      - name: ask
        runner: command
        gate: analysis_ready
        questions: true
        deliverables: [02-analysis.md]
        command:
          - sh
          - -c
          - >-
            printf -- "---\\nblocking: true\\n---\\nWhich database?\\n"
            > "$ORCH_ARTIFACTS/01-questions.md"
      - {name: check, runner: human, on_fail: ask}
""")

# The SPEC's keys, and `moved_age_s`: how long ago the task's stage or state last changed.
TASK_KEYS = {"id", "repo", "title", "stage", "state", "round", "paused", "pause_reason",
             "hold_reason", "age_s", "moved_age_s", "reason", "host"}  # host: SPEC section 11
RUNNING_KEYS = {"job", "task", "stage", "runner", "pid", "age_s", "heartbeat_age_s", "host"}


def make_home(tmp_path: Path, git_repo: Callable[..., Path], *, pipeline: str = WORK_PIPELINE,
              repos: dict[str, int] | None = None, extra: str = "",
              concurrency: int = 2) -> Path:
    """A home whose repos are real git repos (name -> max_active)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "pipeline.yaml").write_text(pipeline)
    lines = [f"  {name}: {{path: {git_repo(name)}, max_active: {slots}}}"
             for name, slots in (repos or {"app": 1}).items()]
    (home / "orch.yaml").write_text(
        f"max_concurrency: {concurrency}\nretry_backoff_s: 0\nheartbeat_interval_s: 1\n"
        f"pipeline: pipeline.yaml\n{extra}"
        "agents:\n  noop: {command: ['true']}\nrepos:\n" + "\n".join(lines) + "\n")
    return home


def add(cli: Cli, home: Path, repo: str = "app", title: str = "a task") -> int:
    code, out, err = cli(home, "task", "add", "--repo", repo, "--title", title)
    assert code == 0, err
    return int(out)


def tick(cli: Cli, home: Path, claims: int = 5) -> dict[str, Any]:
    code, out, err = cli(home, "tick", "--json", "--max-claims", str(claims))
    assert code == 0, err
    report = json.loads(out)
    assert report["errors"] == []
    return report


def queue(cli: Cli, home: Path, *args: str) -> dict[str, Any]:
    code, out, err = cli(home, "queue", "--json", *args)
    assert code == 0, err
    return json.loads(out)


def reasons(view: dict[str, Any]) -> dict[int, str]:
    return {task["id"]: task["reason"] for task in view["tasks"]}


def sql(home: Path, statement: str, params: tuple[Any, ...] = ()) -> None:
    conn = sqlite3.connect(home / "orch.db")
    with conn:
        conn.execute(statement, params)
    conn.close()


def ago(seconds: float) -> str:
    return to_iso(datetime.now(UTC) - timedelta(seconds=seconds))


def orch_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if keep_env(k)}


def wait_for_running(home: Path, job_id: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        conn = sqlite3.connect(home / "orch.db")
        try:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        except sqlite3.OperationalError:
            row = None
        finally:
            conn.close()
        if row is not None and row[0] == "running":
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never ran")


# --------------------------------------------------------------------------- JSON shape

def test_empty_home_json_and_rich(tmp_path: Path, cli: Cli) -> None:
    home = tmp_path / "empty"
    assert cli(home, "init")[0] == 0
    view = queue(cli, home)
    assert view == {"tasks": [], "running": [],
                    "serial_gate": {"enabled": True, "repos": {}},
                    "reaper": {"impossible_queued_total": 0, "reaped_total": 0,
                               "last_tick_at": None},
                    "counters": view["counters"], "hosts": []}  # no tick yet: no host row
    assert {"impossible_queued_total", "reaped_total", "ticks_total",
            "claims_total"} <= set(view["counters"])
    code, out, err = cli(home, "queue")
    assert code == 0, err
    assert "last tick never" in out


def test_json_keys_running_job_and_max_concurrency(tmp_path: Path, git_repo: Callable[..., Path],
                                                   cli: Cli) -> None:
    """A real inline run holds the only concurrency slot while a second job waits."""
    home = make_home(tmp_path, git_repo, pipeline=SLOW_PIPELINE, repos={"app": 2},
                     concurrency=1)
    first, second = add(cli, home, title="slow one"), add(cli, home, title="second")
    ticker = subprocess.Popen([sys.executable, "-m", "orch", "--home", str(home), "tick"],
                              env=orch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_running(home, 1)
        view = queue(cli, home)
    finally:
        ticker.communicate(timeout=30)
    assert set(view) == {"tasks", "running", "serial_gate", "reaper", "counters", "hosts"}
    assert all(set(task) == TASK_KEYS for task in view["tasks"])
    host = socket.gethostname()  # one host: this machine (no `host:` in orch.yaml)
    assert [t["host"] for t in view["tasks"]] == [host, host]  # pinned when admitted
    assert view["running"][0]["host"] == host
    assert [set(job) for job in view["running"]] == [RUNNING_KEYS]
    running = view["running"][0]
    assert running["job"] == 1 and running["task"] == first and running["pid"] == ticker.pid
    assert running["stage"] == "work" and running["runner"] == "command"
    assert running["age_s"] >= 0 and running["heartbeat_age_s"] >= 0
    why = reasons(view)
    assert re.fullmatch(rf"job 1 running \(pid {ticker.pid}, heartbeat \d+ s ago\)", why[first])
    assert why[second] == "job 2 queued: max_concurrency 1 reached (job 1 running)"
    gate = view["serial_gate"]
    assert gate["enabled"] is True
    assert gate["repos"] == {"app": {"max_active": 2, "active": [first, second], "waiting": [],
                                     "paused": [], "frozen": False}}
    assert set(view["reaper"]) == {"impossible_queued_total", "reaped_total", "last_tick_at"}
    task = next(t for t in view["tasks"] if t["id"] == first)
    assert task["paused"] is False and task["repo"] == "app" and task["title"] == "slow one"
    assert isinstance(task["age_s"], int) and task["round"] == 0
    after = queue(cli, home)
    assert after["running"] == []
    assert after["reaper"]["last_tick_at"] is not None
    [row] = after["hosts"]
    assert row["name"] == host and row["alive"] is True and row["running"] == 0
    assert set(row) == {"name", "alive", "last_seen_age_s", "version", "running"}


# --------------------------------------------------------------------------- reasons

def test_gate_human_stage_paused_and_logs(tmp_path: Path, git_repo: Callable[..., Path],
                                          cli: Cli) -> None:
    home = make_home(tmp_path, git_repo)
    ids = [add(cli, home, title=f"task {n}") for n in (1, 2, 3)]
    tick(cli, home)
    assert cli(home, "pause", str(ids[2]), "--reason", "waiting for the API freeze")[0] == 0
    view = queue(cli, home)
    why = reasons(view)
    assert why[ids[0]] == f"waiting for orch approve {ids[0]} / orch reject {ids[0]} --reason ..."
    assert why[ids[1]] == f"serial gate: task {ids[0]} holds the only slot of app"
    assert why[ids[2]] == f"paused (waiting for the API freeze): orch resume {ids[2]}"
    assert view["serial_gate"]["repos"]["app"] == {
        "max_active": 1, "active": [ids[0]], "waiting": [ids[1]],
        "paused": [{"task": ids[2], "reason": "waiting for the API freeze"}], "frozen": False}
    paused = next(t for t in view["tasks"] if t["id"] == ids[2])
    assert paused["paused"] is True and paused["pause_reason"] == "waiting for the API freeze"

    # orch logs: the finished run of the command stage
    code, out, err = cli(home, "logs", "1")
    assert code == 0, err
    assert out == f"log line from task {ids[0]}\n"
    run_id = json.loads(cli(home, "task", "show", str(ids[0]), "--json")[1])["runs"][0]["id"]
    assert cli(home, "logs", "1", "--run", str(run_id))[1] == out
    code, _, err = cli(home, "logs", "1", "--run", "999")
    assert code == 3 and err.startswith("error: job 1 has no run 999")
    code, _, err = cli(home, "logs", "42")
    assert code == 3 and err == "error: no such job: 42\n"


def test_two_slots_and_max_concurrency_zero(tmp_path: Path, git_repo: Callable[..., Path],
                                            cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    home = make_home(tmp_path, git_repo, repos={"app": 2})
    ids = [add(cli, home) for _ in range(3)]
    monkeypatch.setenv("ORCH_MAX_CONCURRENCY", "0")
    report = tick(cli, home)
    assert report["admitted"] == ids[:2] and report["claimed"] == []
    why = reasons(queue(cli, home))
    assert why[ids[2]] == f"serial gate: tasks {ids[0]}, {ids[1]} hold the 2 slots of app"
    assert why[ids[0]] == "job 1 queued, but max_concurrency is 0: nothing starts"


def test_free_slot_frozen_and_gate_off(tmp_path: Path, git_repo: Callable[..., Path], cli: Cli,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    home = make_home(tmp_path, git_repo)
    task = add(cli, home)
    assert reasons(queue(cli, home))[task] == "next tick admits it (a slot of app is free)"
    assert cli(home, "freeze", "app")[0] == 0
    view = queue(cli, home)
    assert reasons(view)[task] == "repo app is frozen: no admissions until orch unfreeze app"
    assert view["serial_gate"]["repos"]["app"]["frozen"] is True
    assert cli(home, "unfreeze", "app")[0] == 0
    monkeypatch.setenv("ORCH_SERIAL_GATE_ENABLED", "false")
    view = queue(cli, home)
    assert view["serial_gate"]["enabled"] is False
    assert reasons(view)[task] == "next tick admits it (serial gate off)"


def test_held_retry_and_next_tick_enqueues(tmp_path: Path, git_repo: Callable[..., Path],
                                           cli: Cli) -> None:
    home = make_home(tmp_path, git_repo, extra="max_attempts: 1\n")
    task = add(cli, home)
    (home / "tasks" / str(task)).mkdir(parents=True, exist_ok=True)
    (home / "tasks" / str(task) / "fail").touch()
    tick(cli, home)
    entry = queue(cli, home)["tasks"][0]
    assert entry["state"] == "held" and entry["hold_reason"].startswith("attempts used up")
    assert entry["reason"].startswith("held: attempts used up (1 of 1)")
    assert entry["reason"].endswith(f", then orch retry {task}")
    assert "\n" not in entry["reason"]
    assert cli(home, "retry", str(task))[0] == 0
    assert reasons(queue(cli, home))[task] == "next tick enqueues its job"


def test_retry_backoff(tmp_path: Path, git_repo: Callable[..., Path], cli: Cli) -> None:
    home = make_home(tmp_path, git_repo)
    config = home / "orch.yaml"
    config.write_text(config.read_text().replace("retry_backoff_s: 0", "retry_backoff_s: 600"))
    task = add(cli, home)
    (home / "tasks" / str(task)).mkdir(parents=True, exist_ok=True)
    (home / "tasks" / str(task) / "fail").touch()
    tick(cli, home)
    # the cause in a few words: the command stage's exit, as the judge recorded it
    assert re.fullmatch(r"job 1 runs again in \d+ min \(retry after: exit status 1 \(no "
                        r"on_fail: retried\)\)",
                        reasons(queue(cli, home))[task])


def test_questions_park_the_task(tmp_path: Path, git_repo: Callable[..., Path], cli: Cli) -> None:
    home = make_home(tmp_path, git_repo, pipeline=QUESTIONS_PIPELINE)
    first, second = add(cli, home), add(cli, home)
    tick(cli, home, claims=1)
    view = queue(cli, home)
    entry = next(t for t in view["tasks"] if t["id"] == first)
    assert entry["state"] == "needs_input" and entry["paused"] is True
    assert entry["reason"] == (f"needs input: answer tasks/{first}/01-questions.md, "
                               f"then orch resume {first}")
    assert view["serial_gate"]["repos"]["app"]["paused"] == [{"task": first,
                                                              "reason": "needs-input"}]
    assert reasons(view)[second] == "next tick admits it (a slot of app is free)"


def test_finished_job_and_budget_holds_by_sql(tmp_path: Path, git_repo: Callable[..., Path],
                                              cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    home = make_home(tmp_path, git_repo, repos={"app": 3})
    ids = [add(cli, home) for _ in range(3)]
    monkeypatch.setenv("ORCH_MAX_CONCURRENCY", "0")
    tick(cli, home)
    sql(home, "UPDATE jobs SET status = 'succeeded', judged = 0, finished_at = ? WHERE id = 1",
        (ago(1),))
    sql(home, "UPDATE tasks SET state = 'held', hold_reason = 'budget', "
        "hold_kind = 'budget-task' WHERE id = ?", (ids[1],))
    sql(home, "UPDATE tasks SET state = 'held', hold_reason = 'budget', "
        "hold_kind = 'budget-day' WHERE id = ?", (ids[2],))
    sql(home, "UPDATE jobs SET status = 'failed', verdict = 'HOLD' WHERE task_id IN (?, ?)",
        (ids[1], ids[2]))
    db = open_database(home / "orch.db")
    with db.transaction():
        events.record(db, "budget", "task ceiling $20 reached", task_id=ids[1])
        events.record(db, "budget", "day ceiling $200 reached (2026-11-25)", task_id=ids[2])
    db.close()
    why = reasons(queue(cli, home))
    assert why[ids[0]] == "job 1 finished (succeeded): the next tick judges it"
    assert why[ids[1]] == ("budget hold: task ceiling $20 reached; raise budget.task_usd in "
                           f"orch.yaml, then orch retry {ids[1]}")
    assert why[ids[2]].startswith("budget hold: day ceiling $200 reached (2026-11-25); "
                                  "after 00:00 UTC")


def test_unavailable_repo_and_repo_filter(tmp_path: Path, git_repo: Callable[..., Path],
                                          cli: Cli) -> None:
    home = make_home(tmp_path, git_repo, repos={"app": 1, "gone": 1})
    app_task, gone_task = add(cli, home, "app"), add(cli, home, "gone")
    shutil.rmtree(tmp_path / "repos" / "gone")
    later = add(cli, home, "app")
    tick(cli, home)
    view = queue(cli, home)
    why = reasons(view)
    assert why[gone_task] == f"repo unavailable: {tmp_path / 'repos' / 'gone'} does not exist"
    assert why[app_task].startswith(f"waiting for orch approve {app_task}")
    assert why[later] == f"serial gate: task {app_task} holds the only slot of app"
    code, out, err = cli(home, "queue")
    assert code == 0, err
    assert "repo unavailable:" in out
    only = queue(cli, home, "--repo", "gone")
    assert [t["id"] for t in only["tasks"]] == [gone_task]
    assert list(only["serial_gate"]["repos"]) == ["gone"]
    code, _, err = cli(home, "queue", "--repo", "nope")
    assert code == 3 and "nope" in err


# --------------------------------------------------------------------------- rendering

def test_rich_view_fits_80_columns(tmp_path: Path, git_repo: Callable[..., Path], cli: Cli,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from orch.cli.render import queue_renderable

    home = make_home(tmp_path, git_repo, repos={"app": 1, "a-repo-with-a-long-name": 1})
    ids = [add(cli, home, "app", "A very long title " * 8) for _ in range(3)]
    other = add(cli, home, "a-repo-with-a-long-name", "x")
    shutil.rmtree(tmp_path / "repos" / "a-repo-with-a-long-name")
    tick(cli, home)
    assert cli(home, "pause", str(ids[2]), "--reason", "because " * 20)[0] == 0
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = cli(home, "queue")
    assert code == 0, err
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    for needle in ("app", "serial gate", "repo unavailable", "running jobs", "reaper:",
                   "orch resume"):
        assert needle in out, needle
    assert str(other) in out

    settings = load_settings(home)
    db = open_database(settings.db_path)
    try:
        view = build_queue(settings, db, None, load_pipeline(settings)).for_display()
    finally:
        db.close()
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(queue_renderable(view))
    assert max(len(line) for line in console.export_text().splitlines()) <= 80


def test_watch_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """SIGINT once the watch has opened the state (not at a fixed delay: a loaded machine
    may still be importing): exit 130 and one line saying nothing was changed."""
    home = tmp_path / "home"
    subprocess.run([sys.executable, "-m", "orch", "--home", str(home), "init"], check=True,
                   env=orch_env(), capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "orch", "--home", str(home), "queue",
                             "--watch"], env=orch_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    state = str(home / "orch.db")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        fds = Path(f"/proc/{proc.pid}/fd")
        if any(os.path.realpath(fd) == state for fd in fds.iterdir()):
            break
        time.sleep(0.05)
    time.sleep(0.5)  # past the first screen
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "orch queue at" in out
    assert err == "interrupted: stopped watching the queue; it only reads, so nothing was " \
        "changed\n"


# --------------------------------------------------------------------------- logs --follow

def test_logs_follow_until_the_run_ends(tmp_path: Path, git_repo: Callable[..., Path],
                                        cli: Cli) -> None:
    home = make_home(tmp_path, git_repo, pipeline=SLOW_PIPELINE)
    add(cli, home)
    ticker = subprocess.Popen([sys.executable, "-m", "orch", "--home", str(home), "tick"],
                              env=orch_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_running(home, 1)
        follower = subprocess.run([sys.executable, "-m", "orch", "--home", str(home), "logs",
                                   "1", "--follow"], env=orch_env(), capture_output=True,
                                  text=True, timeout=30)
    finally:
        ticker.communicate(timeout=30)
    assert follower.returncode == 0, follower.stderr
    assert follower.stdout == "first\nsecond\n"


# --------------------------------------------------------------------------- indexes

def test_queries_use_indexes_not_history(tmp_path: Path, git_repo: Callable[..., Path],
                                         cli: Cli) -> None:
    home = make_home(tmp_path, git_repo)
    add(cli, home)
    tick(cli, home)
    settings = load_settings(home)
    db = open_database(settings.db_path)
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        build_queue(settings, db, None, load_pipeline(settings))
        build_queue(settings, db, "app", load_pipeline(settings))
        db.conn.set_trace_callback(None)
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert selects
        for statement in selects:
            plan = [row["detail"] for row in db.all("EXPLAIN QUERY PLAN " + statement)]
            scans = [step for step in plan
                     if re.match(r"SCAN (tasks|jobs|runs|events)\b", step)
                     and "USING" not in step]
            assert not scans, (statement, plan)
    finally:
        db.close()
