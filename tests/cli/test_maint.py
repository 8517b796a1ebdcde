"""Operations: `orch metrics`, `orch gc`, `orch snapshot`, bin/orch-tick and the notify hook
(SPEC sections 1, 8 and 9), on real homes, real git repos and real ticks."""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from support.checkout import CHECKOUT
from support.cli import orch_script
from support.git import GIT_ENV, run_git
from support.prometheus import parse_metrics

from orch.timeutil import to_iso

Result = tuple[int, str, str]
NOTE_KEYS = {"event", "task", "repo", "title", "stage", "state", "reason", "at"}

# build commits unless {artifacts}/nocommit; gate FAILs on {artifacts}/fail (-> failed, with
# max_rounds 0); check has no on_fail, so a failure is a RETRY and, with max_attempts 1, a
# HOLD; signoff waits for a person; merge rebases and fast-forwards main.
PIPELINE = {"stages": [
    {"name": "build", "runner": "command", "command": [
        "sh", "-c", "test -e {artifacts}/nocommit || { echo {task_id} > task-{task_id}.txt "
        "&& git add -A && git commit -qm 'task {task_id}'; }"]},
    {"name": "gate", "runner": "command", "command": ["sh", "-c", "test ! -e {artifacts}/fail"],
     "on_fail": "build"},
    {"name": "check", "runner": "command", "command": ["sh", "-c", "test ! -e {artifacts}/hold"]},
    {"name": "signoff", "runner": "human"},
    {"name": "merge", "runner": "merge"},
]}


# ---------------------------------------------------------------- helpers


@pytest.fixture
def run(cli: Callable[..., Result]) -> Callable[..., Result]:
    """`cli`, checking that no command ever prints a Python traceback."""

    def call(home: Path | None, *args: str) -> Result:
        code, out, err = cli(home, *args)
        assert "Traceback" not in err and "Traceback" not in out, err
        return code, out, err

    return call


def query(home: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(home / "orch.db")) as conn:
        return conn.execute(sql, params).fetchall()


def write_sql(home: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    with closing(sqlite3.connect(home / "orch.db")) as conn, conn:
        conn.execute(sql, params)


def backdate(home: Path, ids: list[int], days: int = 30) -> None:
    """Make tasks (their row, events and runs) look DAYS old."""
    old = to_iso(datetime.now(UTC) - timedelta(days=days))
    marks = ", ".join("?" for _ in ids)
    with closing(sqlite3.connect(home / "orch.db")) as conn, conn:
        conn.execute(f"UPDATE tasks SET updated_at = ? WHERE id IN ({marks})", (old, *ids))
        conn.execute(f"UPDATE events SET at = ? WHERE task_id IN ({marks})", (old, *ids))
        conn.execute(f"UPDATE runs SET started_at = ? WHERE job_id IN "
                     f"(SELECT id FROM jobs WHERE task_id IN ({marks}))", (old, *ids))


def edit_config(home: Path, **changes: Any) -> None:
    path = home / "orch.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if key == "max_active":
            for repo in data["repos"].values():
                repo["max_active"] = value
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def add(run: Callable[..., Result], home: Path, title: str) -> int:
    code, out, err = run(home, "task", "add", "--repo", "app", "--title", title)
    assert code == 0, err
    return int(out.strip())


def tick(run: Callable[..., Result], home: Path) -> dict[str, Any]:
    code, out, err = run(home, "tick", "--max-claims", "50", "--json")
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    assert report["errors"] == [], report["errors"]
    return report


def states(home: Path) -> dict[int, tuple[str, str]]:
    return {row[0]: (row[1], row[2]) for row in query(home, "SELECT id, stage, state FROM tasks")}


def branches(repo: Path) -> set[str]:
    return set(run_git(repo, "for-each-ref", "--format=%(refname:short)",
                       "refs/heads/").split())


def log_files(home: Path) -> set[str]:
    return {path.name for path in (home / "logs").iterdir()}


def read_notes(path: Path) -> list[dict[str, Any]]:
    """The JSON objects a `cat >> FILE` notify hook appended (with or without newlines)."""
    text, decoder, found, index = path.read_text(encoding="utf-8"), json.JSONDecoder(), [], 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return found
        obj, index = decoder.raw_decode(text, index)
        found.append(obj)


@pytest.fixture
def git_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits made by pipeline commands and the merge get a fixed identity."""
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def flow(orch_home: Path, run: Callable[..., Result], git_env: None,
         tmp_path: Path) -> dict[str, Any]:
    """A home driven by real ticks through a `command` pipeline to every kind of end:

    done (branch merged), failed (unmerged commit), cancelled with an unmerged
    commit, cancelled with no commit, held (open), and cancelled but recent.
    """
    home = orch_home
    notes = tmp_path / "notes.jsonl"
    (home / "pipe.yaml").write_text(yaml.safe_dump(PIPELINE), encoding="utf-8")
    edit_config(home, pipeline="pipe.yaml", retry_backoff_s=0, max_rounds=0, max_attempts=1,
                max_active=10, notify=["sh", "-c", f"cat >> {notes}"])
    ids = {name: add(run, home, name) for name in
           ("done", "failed", "cancelled-unmerged", "cancelled-merged", "held", "recent")}
    (home / "tasks" / str(ids["failed"]) / "fail").touch()
    (home / "tasks" / str(ids["held"]) / "hold").touch()
    (home / "tasks" / str(ids["cancelled-merged"]) / "nocommit").touch()
    tick(run, home)
    tick(run, home)
    assert run(home, "approve", str(ids["done"]))[0] == 0
    tick(run, home)
    for name in ("cancelled-unmerged", "cancelled-merged", "recent"):
        assert run(home, "cancel", str(ids[name]))[0] == 0
    now = states(home)
    assert now[ids["done"]] == ("done", "closed")
    assert now[ids["failed"]] == ("failed", "closed")
    assert now[ids["held"]][1] == "held"
    assert now[ids["recent"]] == ("cancelled", "closed")
    backdate(home, [ids[name] for name in ids if name != "recent"])
    return {"home": home, "ids": ids, "notes": notes,
            "repo": Path(yaml.safe_load((home / "orch.yaml").read_text())["repos"]["app"]
                         ["path"])}


# ---------------------------------------------------------------- metrics


def test_metrics_text_counters_tasks_and_jobs(orch_home: Path, run: Callable[..., Result]
                                              ) -> None:
    home = orch_home
    first, second = add(run, home, "one"), add(run, home, "two")
    assert run(home, "cancel", str(second))[0] == 0
    write_sql(home, "INSERT INTO counters (name, value) VALUES ('tasks_done_total', 3) "
              "ON CONFLICT(name) DO UPDATE SET value = 3")
    write_sql(home, "INSERT INTO meta (key, value) VALUES ('last_tick_at', "
              "'2026-01-02T03:04:05.500000Z')")
    backdate(home, [first], days=1)
    code, out, err = run(home, "metrics")
    assert code == 0, err
    samples = parse_metrics(out)
    for name in ("impossible_queued_total", "reaped_total", "ticks_total", "claims_total",
                 "tasks_done_total", "tasks_failed_total", "tasks_cancelled_total"):
        assert f"orch_{name}" in samples
        assert f"# TYPE orch_{name} counter" in out
    assert samples['orch_tasks{stage="analysis",state="waiting"}'] == 1
    assert samples['orch_tasks{stage="review",state="held"}'] == 0  # a zero series per stage
    # closed tasks come from the counters, never from a GROUP BY over history
    assert samples['orch_tasks{stage="done",state="closed"}'] == 3
    cancelled = query(home, "SELECT value FROM counters WHERE name = 'tasks_cancelled_total'")
    assert samples['orch_tasks{stage="cancelled",state="closed"}'] == \
        (cancelled[0][0] if cancelled else 0)
    assert samples["orch_jobs_running"] == 0
    expected = datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC).timestamp()
    assert samples["orch_last_tick_timestamp_seconds"] == expected
    assert 86_000 < samples["orch_oldest_waiting_task_age_seconds"] < 87_000


def test_metrics_output_is_written_atomically(orch_home: Path, run: Callable[..., Result],
                                              tmp_path: Path) -> None:
    target_dir = tmp_path / "textfile"
    target_dir.mkdir()
    target = target_dir / "orch.prom"
    target.write_text("old\n", encoding="utf-8")
    inode = target.stat().st_ino
    with open(target, encoding="utf-8") as reader:  # a scrape in progress keeps the old file
        code, out, err = run(orch_home, "metrics", "--output", str(target))
        assert (code, out) == (0, ""), err
        assert reader.read() == "old\n"
    assert target.stat().st_ino != inode  # replaced, not rewritten in place
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert "orch_ticks_total" in parse_metrics(target.read_text(encoding="utf-8"))
    assert sorted(p.name for p in target_dir.iterdir()) == ["orch.prom"]  # no temp left
    code, _, err = run(orch_home, "metrics", "--output", str(tmp_path / "nowhere" / "x.prom"))
    assert code == 1 and err.startswith("error: ") and "nowhere" in err


# ---------------------------------------------------------------- gc


def test_gc_collects_old_closed_tasks_only(flow: dict[str, Any],
                                           run: Callable[..., Result]) -> None:
    home, ids, repo = flow["home"], flow["ids"], flow["repo"]
    branch = {tid: row[0] for tid, row in
              ((tid, query(home, "SELECT branch FROM tasks WHERE id = ?", (tid,))[0])
               for tid in ids.values())}
    assert all(branch.values())
    assert all((home / "worktrees" / "app" / str(tid)).is_dir() for tid in ids.values())
    before_branches, before_logs = branches(repo), log_files(home)
    before_rows = query(home, "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM runs)")

    # --dry-run reports and changes nothing
    code, out, err = run(home, "gc", "--dry-run", "--older-than", "7", "--json")
    assert code == 0, err
    dry = {item["id"]: item for item in json.loads(out)["tasks"]}
    old_closed = {ids[n] for n in ("done", "failed", "cancelled-unmerged", "cancelled-merged")}
    assert set(dry) == old_closed
    assert dry[ids["done"]]["branch_action"] == "would delete"
    assert dry[ids["done"]]["worktree"] == "would remove"
    assert dry[ids["failed"]]["branch_action"] == "kept"
    assert "--force" in dry[ids["cancelled-unmerged"]]["note"]
    assert dry[ids["cancelled-merged"]]["branch_action"] == "would delete"
    assert dry[ids["done"]]["runs"] >= 4 and dry[ids["done"]]["logs"] >= 4
    assert branches(repo) == before_branches and log_files(home) == before_logs
    assert query(home, "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM runs)") \
        == before_rows
    assert all((home / "worktrees" / "app" / str(tid)).is_dir() for tid in ids.values())

    # the real thing: merged branches go, unmerged ones stay, open and recent tasks untouched
    code, out, err = run(home, "gc", "--older-than", "7")
    assert code == 0, err
    assert f"task {ids['failed']} (app, failed)" in out and "kept" in out
    left = branches(repo)
    assert branch[ids["done"]] not in left and branch[ids["cancelled-merged"]] not in left
    for name in ("failed", "cancelled-unmerged", "held", "recent"):
        assert branch[ids[name]] in left
    for name, tid in ids.items():
        assert (home / "worktrees" / "app" / str(tid)).is_dir() == (name in ("held", "recent"))
    assert "main" in left and run_git(repo, "status", "--porcelain") == ""
    for tid in old_closed:
        kinds = {row[0] for row in query(home, "SELECT kind FROM events WHERE task_id = ?",
                                         (tid,))}
        assert kinds <= {"gc"}
        assert query(home, "SELECT count(*) FROM runs JOIN jobs ON jobs.id = runs.job_id "
                     "WHERE jobs.task_id = ?", (tid,)) == [(0,)]
    for name in ("held", "recent"):
        tid = ids[name]
        assert query(home, "SELECT count(*) FROM runs JOIN jobs ON jobs.id = runs.job_id "
                     "WHERE jobs.task_id = ?", (tid,))[0][0] > 0
        assert query(home, "SELECT count(*) FROM events WHERE task_id = ? AND kind != 'gc'",
                     (tid,))[0][0] > 0
    kept_jobs = {row[0] for row in query(home, "SELECT id FROM jobs WHERE task_id IN (?, ?)",
                                         (ids["held"], ids["recent"]))}
    expected_logs = {name for name in before_logs
                     if int(name.split("-")[1]) in kept_jobs}
    assert log_files(home) == expected_logs and expected_logs
    assert states(home)[ids["held"]][1] == "held"
    code, out, _ = run(home, "task", "show", str(ids["done"]), "--json")
    assert code == 0 and json.loads(out)["task"]["stage"] == "done"

    # a second run: finished tasks are skipped; --force drops the cancelled task's branch only
    code, out, err = run(home, "gc", "--older-than", "7", "--force", "--json")
    assert code == 0, err
    again = {item["id"]: item for item in json.loads(out)["tasks"]}
    assert set(again) == {ids["failed"], ids["cancelled-unmerged"]}
    assert again[ids["cancelled-unmerged"]]["branch_action"] == "deleted"
    assert again[ids["failed"]]["branch_action"] == "kept"
    left = branches(repo)
    assert branch[ids["cancelled-unmerged"]] not in left and branch[ids["failed"]] in left

    # the default age is retention_days (14 in the example config)
    code, out, _ = run(home, "gc", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["older_than_days"] == 14


def test_gc_keeps_worktree_of_an_unavailable_repo_and_prunes_history(
        orch_home: Path, run: Callable[..., Result], tmp_path: Path) -> None:
    home = orch_home
    tid = add(run, home, "gone")
    assert run(home, "cancel", str(tid))[0] == 0
    stray = home / "worktrees" / "app" / str(tid)
    stray.mkdir(parents=True)
    backdate(home, [tid])
    shutil.move(str(tmp_path / "repos" / "app"), str(tmp_path / "moved"))
    code, out, err = run(home, "gc", "--json")
    assert code == 0, err
    [item] = json.loads(out)["tasks"]
    assert item["worktree"] == "skipped" and "unavailable" in item["note"]
    assert stray.is_dir()
    assert item["events"] > 0
    assert query(home, "SELECT kind FROM events WHERE task_id = ?", (tid,)) == []  # no tombstone
    code, out, _ = run(home, "gc", "--json")
    assert [t["id"] for t in json.loads(out)["tasks"]] == [tid]  # looked at again later


def test_gc_reports_a_git_failure_and_collects_the_other_tasks(
        orch_home: Path, run: Callable[..., Result], tmp_path: Path) -> None:
    home, repo = orch_home, tmp_path / "repos" / "app"
    stuck, fine = add(run, home, "stuck"), add(run, home, "fine")
    for tid in (stuck, fine):
        assert run(home, "cancel", str(tid))[0] == 0
        run_git(repo, "branch", f"orch/{tid}")
        write_sql(home, "UPDATE tasks SET branch = ? WHERE id = ?", (f"orch/{tid}", tid))
    run_git(repo, "checkout", "-q", f"orch/{stuck}")  # git refuses to delete a checked-out branch
    backdate(home, [stuck, fine])
    code, out, err = run(home, "gc")
    assert code == 1
    assert err.splitlines()[0].startswith(f"error: task {stuck}: ") and "orch/" in err
    assert f"branch orch/{fine} deleted" in out
    assert branches(repo) == {"main", f"orch/{stuck}"}
    gc_done = query(home, "SELECT task_id FROM events WHERE kind = 'gc'")
    assert gc_done == [(fine,)]  # the failed one is tried again next time


# ---------------------------------------------------------------- snapshot


def test_snapshot_packs_a_valid_database_and_open_artifacts(
        orch_home: Path, run: Callable[..., Result], tmp_path: Path) -> None:
    home = orch_home
    keep, gone = add(run, home, "open one"), add(run, home, "closed one")
    (home / "tasks" / str(keep) / "notes").mkdir()
    (home / "tasks" / str(keep) / "notes" / "a.md").write_text("hello\n", encoding="utf-8")
    assert run(home, "cancel", str(gone))[0] == 0
    target = tmp_path / "snap.tar.gz"
    code, out, err = run(home, "snapshot", str(target), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["open_tasks"] == [keep] and result["files"] == 2
    with tarfile.open(target) as archive:
        names = set(archive.getnames())
        manifest = json.load(io.BytesIO(archive.extractfile("manifest.json").read()))
        packed = archive.extractfile("orch.db")
        assert packed is not None
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "orch.db").write_bytes(packed.read())
    assert {"orch.db", f"tasks/{keep}/00-task.md", f"tasks/{keep}/notes/a.md"} <= names
    assert not any(name.startswith(f"tasks/{gone}/") for name in names)
    assert manifest["schema_version"] == result["schema_version"] >= 2
    assert manifest["orch_version"] and manifest["created_at"].endswith("Z")
    with closing(sqlite3.connect(tmp_path / "out" / "orch.db")) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert copy.execute("SELECT id, state FROM tasks ORDER BY id").fetchall() == \
            [(keep, "waiting"), (gone, "closed")]
    # an existing FILE is refused (and left alone) unless --force
    before = target.read_bytes()
    code, _, err = run(home, "snapshot", str(target))
    assert code == 1 and "exists" in err and target.read_bytes() == before
    code, _, err = run(home, "snapshot", str(target), "--force")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".snap")) == []


# ---------------------------------------------------------------- notify


def test_notify_hook_gets_one_json_object_per_event(flow: dict[str, Any]) -> None:
    ids = flow["ids"]
    notes = read_notes(flow["notes"])
    assert all(set(note) == NOTE_KEYS for note in notes), notes
    seen = {(note["event"], note["task"]) for note in notes}
    assert ("failed", ids["failed"]) in seen
    assert ("hold", ids["held"]) in seen
    assert ("needs_input", ids["done"]) in seen and ("done", ids["done"]) in seen
    done = next(n for n in notes if n["event"] == "done")
    assert (done["repo"], done["title"], done["stage"], done["state"]) == \
        ("app", "done", "done", "closed")
    held = next(n for n in notes if n["event"] == "hold")
    assert held["state"] == "held" and held["reason"]


def test_failing_notify_hook_is_an_event_not_a_tick_error(
        orch_home: Path, run: Callable[..., Result], git_env: None) -> None:
    home = orch_home
    (home / "pipe.yaml").write_text(yaml.safe_dump({"stages": [
        {"name": "build", "runner": "command", "command": ["true"]}]}), encoding="utf-8")
    edit_config(home, pipeline="pipe.yaml", notify=["sh", "-c", "echo nope >&2; exit 3"])
    tid = add(run, home, "noisy")
    report = tick(run, home)  # asserts errors == []
    assert report["advanced"] and states(home)[tid] == ("done", "closed")
    rows = query(home, "SELECT detail FROM events WHERE task_id = ? AND kind = 'notify-failed'",
                 (tid,))
    assert len(rows) == 1 and "exit 3" in rows[0][0] and "nope" in rows[0][0]


# ---------------------------------------------------------------- bin/


def test_orch_tick_wrapper_runs_a_quiet_tick(orch_home: Path, tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "ORCH_HOME": str(orch_home), "ORCH_BIN": orch_script()}
    done = subprocess.run(["sh", str(CHECKOUT / "bin" / "orch-tick")], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert query(orch_home, "SELECT value FROM counters WHERE name = 'ticks_total'") == [(1,)]
    # the exit status is orch's: a broken config is 4
    (orch_home / "orch.yaml").write_text("max_concurrency: lots\n", encoding="utf-8")
    done = subprocess.run(["sh", str(CHECKOUT / "bin" / "orch-tick")], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 4 and done.stderr.startswith("error: ")
    env["ORCH_BIN"] = str(tmp_path / "no-such-orch")
    done = subprocess.run(["sh", str(CHECKOUT / "bin" / "orch-tick")], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 127 and "ORCH_BIN" in done.stderr


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []
    status: ClassVar[int] = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((self.headers["Content-Type"], body))
        self.send_response(_Hook.status)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return None


@pytest.fixture
def webhook() -> Iterator[str]:
    _Hook.received, _Hook.status = [], 200
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    server.server_close()


def test_notify_example_posts_to_a_webhook_and_sends_mail(webhook: str, tmp_path: Path) -> None:
    event = {"event": "hold", "task": 7, "repo": "app", "title": "Fix login",
             "stage": "staging", "state": "held", "reason": "ssh refused", "at": "x"}
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "sendmail").write_text(f"#!/bin/sh\ncat > {tmp_path / 'mail.txt'}\n",
                                   encoding="utf-8")
    (fake / "sendmail").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "ORCH_NOTIFY_WEBHOOK_URL": webhook,
           "ORCH_NOTIFY_MAIL_TO": "ops@example.invalid"}
    hook = [sys.executable, str(CHECKOUT / "bin" / "orch-notify-example")]
    done = subprocess.run(hook, input=json.dumps(event), env=env, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    [(kind, body)] = _Hook.received
    text = json.loads(body)["text"]
    assert kind == "application/json" and "task 7" in text and "ssh refused" in text
    mail = (tmp_path / "mail.txt").read_text(encoding="utf-8")
    assert "To: ops@example.invalid" in mail and "task 7" in mail
    _Hook.status = 500
    done = subprocess.run(hook, input=json.dumps(event), env={**env, "ORCH_NOTIFY_MAIL_TO": ""},
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1 and "webhook failed" in done.stderr


def test_maintenance_commands_have_help_with_an_example(run: Callable[..., Result]) -> None:
    for command in ("metrics", "gc", "snapshot"):
        code, out, _ = run(None, command, "--help")
        assert code == 0 and "Example:" in out, out
