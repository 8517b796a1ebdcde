"""`orch state migrate --to URL` (SPEC section 11): SQLite -> PostgreSQL -> SQLite with every
table's count equal and `orch task show --json` unchanged per task; refused while a job runs;
the source marked as moved. A real PostgreSQL server (support.fixtures.pg_dsn)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from support.cli import CliResult
from support.db import RawDb

COUNTED = ("tasks", "jobs", "runs", "events", "meta", "repo_state")


def _set_state(home: Path, line: str) -> None:
    config = yaml.safe_load((home / "orch.yaml").read_text(encoding="utf-8"))
    config["state"] = yaml.safe_load(line)["state"]
    (home / "orch.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def _shows(cli: Callable[..., CliResult], home: Path, ids: list[int]) -> dict[int, Any]:
    shown = {}
    for task_id in ids:
        code, out, err = cli(home, "task", "show", str(task_id), "--json")
        assert code == 0, err
        shown[task_id] = json.loads(out)
    return shown


def _counts(location: str) -> dict[str, int]:
    raw = RawDb(location)
    try:
        return {table: int(raw.value(f"SELECT count(*) FROM {table}")) for table in COUNTED}
    finally:
        raw.close()


def test_round_trip_keeps_counts_and_task_show(orch_home: Path, cli: Callable[..., CliResult],
                                               pg_dsn: str, tmp_path: Path) -> None:
    ids = []
    for n in range(4):
        code, out, err = cli(orch_home, "task", "add", "--repo", "app", "--title", f"t{n}",
                             "--json")
        assert code == 0, err
        ids.append(int(json.loads(out)["id"]))
    for _ in range(3):
        assert cli(orch_home, "tick")[0] == 0
    before = _shows(cli, orch_home, ids)
    counts = _counts(str(orch_home / "orch.db"))

    code, out, err = cli(orch_home, "state", "migrate", "--to", pg_dsn, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert {t: result["counts"][t] for t in COUNTED} == counts
    assert result["state_line"].startswith("state: postgresql://")
    # the source is marked as moved: every later command on it exits 4 naming the new state
    code, _, err = cli(orch_home, "queue")
    assert code == 4 and "orch state migrate" in err
    _set_state(orch_home, result["state_line"])
    assert _counts(pg_dsn) == counts
    assert _shows(cli, orch_home, ids) == before

    back = tmp_path / "back.db"
    code, out, err = cli(orch_home, "state", "migrate", "--to", f"sqlite://{back}", "--json")
    assert code == 0, err
    line = json.loads(out)["state_line"]
    _set_state(orch_home, line)
    assert _counts(str(back)) == counts
    assert _shows(cli, orch_home, ids) == before
    assert cli(orch_home, "tick")[0] == 0


def test_refused_while_a_job_runs(orch_home: Path, cli: Callable[..., CliResult],
                                  pg_dsn: str) -> None:
    code, out, err = cli(orch_home, "task", "add", "--repo", "app", "--title", "t", "--json")
    assert code == 0, err
    task_id = int(json.loads(out)["id"])
    raw = RawDb(str(orch_home / "orch.db"))
    try:
        raw.write("INSERT INTO jobs (task_id, stage, runner, status, run_id, pid, started_at, "
                  "heartbeat_at, created_at) VALUES (?, 'plan', 'command', 'running', NULL, 1, "
                  "'2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                  (task_id,))
    finally:
        raw.close()
    code, _, err = cli(orch_home, "state", "migrate", "--to", pg_dsn)
    assert code == 1 and "running" in err
    assert _counts(pg_dsn)["tasks"] == 0
    assert cli(orch_home, "queue")[0] == 0  # the source was not marked as moved


def test_impossible_pairs(orch_home: Path, cli: Callable[..., CliResult],
                          tmp_path: Path) -> None:
    code, _, err = cli(orch_home, "state", "migrate", "--to", str(tmp_path / "x.db"))
    assert code == 2 and "already SQLite" in err


def test_a_sqlite_home_imports_nothing_of_psycopg(orch_home: Path,
                                                  cli: Callable[..., CliResult]) -> None:
    """SPEC section 11: a single-machine home needs no extra dependency, and its idle tick
    and queue never load the PostgreSQL driver."""
    assert cli(orch_home, "tick")[0] == 0
    probe = ("import sys; from orch.cli import run; "
             f"codes = [run(['--home', {str(orch_home)!r}, *args]) for args in "
             "(['tick', '--quiet'], ['queue', '--json'], ['metrics'], ['doctor'])]; "
             "print(codes[:3], sorted(m for m in sys.modules if m == 'orch.state.postgres' "
             "or m.split('.')[0] in ('psycopg', 'psycopg_binary', 'psycopg_c')))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, check=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "[0, 0, 0] []"
