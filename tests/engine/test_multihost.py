"""Several hosts on one PostgreSQL database (SPEC section 11), as real as one machine allows.

Each host is an orch home of its own (`host:` a, b, c) with its own clones of the repos,
all pointing at one real PostgreSQL database (support.fixtures.pg_dsn). Ticks are real
`orch tick` processes; a sampler reads the database while they run and checks every
limit at every sample.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.db import RawDb
from support.engine import FAST, PY, EngineHome, settle_kicks, wait_for
from support.git import make_repo, run_git

TERMINAL = ("done", "failed", "cancelled")
COMMIT = ("sh", "-c", "date +%s%N >> work.txt && git add work.txt && "
          "git -c user.name=t -c user.email=t@t.invalid commit -qm work && "
          "echo done > \"$ORCH_ARTIFACTS/10-dev-report.md\"")


def host_config(eh: EngineHome, name: str, repos: dict[str, dict[str, Any]],
                stages: list[dict[str, Any]], **top: Any) -> None:
    """orch.yaml (host NAME, the shared state, REPOS) and pipeline.yaml of one host."""
    config = {"max_concurrency": 3, "max_attempts": 3, **FAST, "host": name,
              "host_timeout_s": 60, "state": eh.state, "agents": {},
              "repos": {repo: {"default_branch": "main", "max_active": 1, **values}
                        for repo, values in repos.items()},
              "pipeline": "pipeline.yaml", **top}
    (eh.home / "orch.yaml").write_text(yaml.safe_dump(config, sort_keys=False),
                                       encoding="utf-8")
    eh.write_pipeline(stages)


def add(eh: EngineHome, repo: str, title: str) -> int:
    from orch.engine.commands.tasks import NewTask, add_task

    settings = eh.settings()
    with eh.database() as db:
        return int(add_task(settings, db, NewTask(repo, title, "", 0),
                            eh.pipeline(settings).first.name).id)


class TickLoop:
    """`orch tick` of one home again and again in a process of its own (like cron)."""

    def __init__(self, eh: EngineHome, pause: float = 0.1) -> None:
        script = (f"while :; do {PY} -m orch --home {eh.home} tick --quiet --max-claims 2; "
                  f"sleep {pause}; done")
        self.proc = subprocess.Popen(["sh", "-c", script], env=eh.env(),
                                     start_new_session=True)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


class Sampler(threading.Thread):
    """Reads the running jobs every few milliseconds and keeps what broke a rule."""

    def __init__(self, dsn: str, limits: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.dsn, self.limits = dsn, limits
        self.stop_flag = threading.Event()
        self.broken: list[str] = []
        self.pins: dict[int, str] = {}
        self.peak = 0

    def run(self) -> None:
        raw = RawDb(self.dsn)
        try:
            while not self.stop_flag.is_set():
                self.check(raw.rows(
                    "SELECT jobs.id, jobs.host, tasks.repo FROM jobs JOIN tasks "
                    "ON tasks.id = jobs.task_id WHERE jobs.status = 'running'"),
                    raw.rows("SELECT id, host, repo FROM tasks WHERE host IS NOT NULL"))
                time.sleep(0.02)
        finally:
            raw.close()

    def check(self, running: list[dict[str, Any]], pinned: list[dict[str, Any]]) -> None:
        self.peak = max(self.peak, len(running))
        if len(running) > self.limits["global"]:
            self.broken.append(f"{len(running)} running: {running}")
        for key, limit in (("host", self.limits["host"]), ("repo", None)):
            counts: dict[str, int] = {}
            for row in running:
                counts[row[key]] = counts.get(row[key], 0) + 1
            for name, n in counts.items():
                most = limit if limit is not None else self.limits["repos"][name]
                if n > most:
                    self.broken.append(f"{n} running on {key} {name}: {running}")
        for row in pinned:
            first = self.pins.setdefault(int(row["id"]), str(row["host"]))
            if first != row["host"]:
                self.broken.append(f"task {row['id']} moved from {first} to {row['host']}")
            if row["repo"] not in self.limits["hosts_of"].get(row["host"], ()):
                self.broken.append(f"task {row['id']} of {row['repo']} on {row['host']}")


@pytest.fixture
def hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None,
          pg_dsn: str) -> Any:
    made: list[EngineHome] = []

    def make(name: str) -> EngineHome:
        (tmp_path / name).mkdir()
        eh = EngineHome(tmp_path / name, monkeypatch, state=pg_dsn)
        made.append(eh)
        return eh

    yield make
    for eh in made:
        eh.close()


def test_thirty_tasks_on_three_hosts_keep_every_limit(hosts: Any, pg_dsn: str,
                                                      tmp_path: Path) -> None:
    stages = [{"name": "build", "runner": "command", "command": ["sleep", "0.3"]},
              {"name": "check", "runner": "command", "command": ["sleep", "0.2"]}]
    homes = {name: hosts(name) for name in ("a", "b", "c")}
    lib = make_repo(tmp_path / "lib-on-a")
    for name, eh in homes.items():
        repos: dict[str, dict[str, Any]] = {"app": {"path": str(eh.repo), "max_active": 2}}
        if name == "a":
            repos["lib"] = {"path": str(lib), "max_active": 1}
        host_config(eh, name, repos, stages, host_max_concurrency=2,
                    flags={"kick_enabled": True})  # kicks on: a run's end starts a tick
    for eh in homes.values():
        eh.tick(max_claims=0)  # every host's row, so that `lib` is known before it is added
    ids = [add(homes["b"], "app", f"app {n}") for n in range(20)]
    ids += [add(homes["c"], "lib", f"lib {n}") for n in range(10)]  # only a has lib
    sampler = Sampler(pg_dsn, {"global": 3, "host": 2, "repos": {"app": 2, "lib": 1},
                               "hosts_of": {"a": ("app", "lib"), "b": ("app",),
                                            "c": ("app",)}})
    sampler.start()
    loops = [TickLoop(eh) for eh in homes.values() for _ in range(2)]
    try:
        wait_for(lambda: all(row["stage"] in TERMINAL for row in homes["a"].rows(
            "SELECT stage FROM tasks")), 300, "every task to end", pause=0.5)
    finally:
        for loop in loops:
            loop.stop()
        for home in homes.values():
            settle_kicks(home.home)
        sampler.stop_flag.set()
        sampler.join()
    eh = homes["a"]
    assert sampler.broken == []
    assert [row["stage"] for row in eh.rows("SELECT stage FROM tasks ORDER BY id")] \
        == ["done"] * 30
    assert eh.rows("SELECT job_id, count(*) AS n FROM runs GROUP BY job_id "
                   "HAVING count(*) > 1") == []  # no job claimed twice
    assert {row["host"] for row in eh.rows("SELECT host FROM tasks WHERE repo = 'lib'")} \
        == {"a"}
    on = {row["host"] for row in eh.rows("SELECT DISTINCT host FROM runs")}
    assert len(on) >= 2, f"only {on} ran jobs"
    assert sampler.peak >= 2
    assert eh.rows("SELECT * FROM events WHERE kind = 'kick-failed'") == []
    eh.check_invariants()


def _origin_and_clones(tmp_path: Path, a: EngineHome, b: EngineHome) -> tuple[Path, Path]:
    """A bare origin made from a's repo; b's `app` is a clone of it."""
    origin = tmp_path / "origin.git"
    run_git(tmp_path, "clone", "-q", "--bare", str(a.repo), str(origin))
    run_git(a.repo, "remote", "add", "origin", str(origin))
    clone = tmp_path / "b-app"
    run_git(tmp_path, "clone", "-q", str(origin), str(clone))
    return origin, clone


def _strand_a_job(tmp_path: Path, hosts: Any, push_branches: bool
                  ) -> tuple[EngineHome, EngineHome, int, Path]:
    """Hosts a and b; a runs a task's developer stage (a commit), then its `slow` stage
    (sleeps on a only) and dies with it running; a's row is moved back past
    host_timeout_s. Returns (a, b, task id, b's clone)."""
    a, b = hosts("a"), hosts("b")
    origin, clone = _origin_and_clones(tmp_path, a, b)
    del origin
    stages = [{"name": "dev", "runner": "command", "gate": "dev_done", "command": list(COMMIT)},
              {"name": "slow", "runner": "command",
               "command": ["sh", "-c", 'if [ -e "$ORCH_HOME/slow" ]; then sleep 120; fi']}]
    merge = {"merge": {"push": True, "push_branches": push_branches}}
    host_config(a, "a", {"app": {"path": str(a.repo), **merge}}, stages)
    host_config(b, "b", {"app": {"path": str(clone), **merge}}, stages)
    (a.home / "slow").write_text("", encoding="utf-8")
    b.tick(max_claims=0)
    task_id = add(a, "app", "stranded")
    a.tick_until(lambda: a.task(task_id)["stage"] == "slow", what="the dev stage on a")
    ticking = subprocess.Popen(a.orch_argv("tick"), env=a.env(), start_new_session=True)
    wait_for(lambda: a.running_job(task_id), 30, "a's slow job to run")
    a.close()  # host a dies: its tick and its command are killed, nothing is signalled by b
    ticking.wait(timeout=30)
    a.write("UPDATE hosts SET last_seen = '2020-01-01T00:00:00.000000Z' WHERE name = 'a'")
    return a, b, task_id, clone


def test_a_dead_hosts_task_is_repinned_and_finishes_from_the_pushed_branch(
        hosts: Any, tmp_path: Path) -> None:
    a, b, task_id, clone = _strand_a_job(tmp_path, hosts, push_branches=True)
    branch = a.task(task_id)["branch"]
    pushed = run_git(tmp_path / "origin.git", "rev-parse", f"refs/heads/{branch}")
    assert pushed == run_git(a.repo, "rev-parse", f"refs/heads/{branch}")
    b.tick_until(lambda: b.task(task_id)["stage"] == "done", timeout=90,
                 what="b to take the task over and finish it")
    task = b.task(task_id)
    assert task["host"] == "b"
    outcomes = [run["outcome"] for job in b.jobs(task_id) for run in b.runs(job["id"])]
    assert "reaped" in outcomes
    assert b.events(task_id, "repinned")
    # b's worktree was rebuilt from the pushed branch: a's developer commit is in b's clone
    assert run_git(clone, "merge-base", "--is-ancestor", pushed, f"refs/heads/{branch}") == ""
    b.check_invariants()


def test_a_dead_hosts_task_without_pushed_branches_is_held_with_the_reason(
        hosts: Any, tmp_path: Path) -> None:
    a, b, task_id, _ = _strand_a_job(tmp_path, hosts, push_branches=False)
    b.tick_until(lambda: b.task(task_id)["state"] == "held", timeout=60,
                 what="b to hold a's task")
    task = b.task(task_id)
    assert task["host"] == "a" and task["hold_kind"] == "host-gone"
    assert "host a is gone" in task["hold_reason"]
    outcomes = [run["outcome"] for job in b.jobs(task_id) for run in b.runs(job["id"])]
    assert "reaped" in outcomes
    # from b, a's task reads the same: its files stored as runs were judged, its logs
    # (a's log files are not here: the stored tail, or where the log lives)
    detail = json.loads(b.cli("task", "show", str(task_id), "--json").stdout)
    assert {"00-task.md", "10-dev-report.md"} <= set(detail["artifacts"])
    shutil.rmtree(a.home / "logs")
    dev_job, slow_job = (job["id"] for job in b.jobs(task_id))
    dev_log = b.cli("logs", str(dev_job))
    assert dev_log.returncode == 0 and dev_log.stdout == b.value(
        "SELECT log_tail FROM runs WHERE job_id = ?", (dev_job,))
    slow_log = b.cli("logs", str(slow_job), "--run", str(b.runs(slow_job)[0]["id"]))
    assert slow_log.returncode == 0 and "on host a" in slow_log.stdout
    b.tick(max_claims=0)  # b's row fresh, whatever the time the checks above took
    shown = b.cli("queue", "--json")
    assert shown.returncode == 0, shown.stderr
    entry = json.loads(shown.stdout)
    assert [t["host"] for t in entry["tasks"]] == ["a"]
    assert "orch task move" in entry["tasks"][0]["reason"]
    assert {h["name"]: h["alive"] for h in entry["hosts"]} == {"a": False, "b": True}
    # by hand: `orch task move ID --host H` (exit 3 for an unknown host), then `orch retry`
    assert b.cli("task", "move", str(task_id), "--host", "nowhere").returncode == 3
    moved = b.cli("task", "move", str(task_id), "--host", "b")
    assert moved.returncode == 0, moved.stderr
    assert a.task(task_id)["host"] == "b" and b.events(task_id, "moved")
    assert b.cli("retry", str(task_id)).returncode == 0
    b.tick_until(lambda: b.task(task_id)["stage"] == "done", timeout=60,
                 what="the moved task to finish on b")
    b.check_invariants()


def test_task_move_is_refused_while_a_job_runs_and_a_cancel_reaches_its_host(
        hosts: Any) -> None:
    a, b = hosts("a"), hosts("b")
    stages = [{"name": "slow", "runner": "command", "command": ["sleep", "60"]}]
    host_config(a, "a", {"app": {"path": str(a.repo)}}, stages)
    host_config(b, "b", {"app": {"path": str(b.repo)}}, stages)
    b.tick(max_claims=0)
    task_id = add(a, "app", "busy")
    ticking = subprocess.Popen(a.orch_argv("tick"), env=a.env(), start_new_session=True)
    try:
        job = wait_for(lambda: a.running_job(task_id), 30, "the job to run")
        refused = b.cli("task", "move", str(task_id), "--host", "b")
        assert refused.returncode == 1 and f"job {job['id']}" in refused.stderr
        shown = json.loads(b.cli("queue", "--json").stdout)
        assert [(r["job"], r["host"]) for r in shown["running"]] == [(job["id"], "a")]
        metrics = b.cli("metrics").stdout
        assert 'orch_host_jobs_running{host="a"} 1' in metrics
        assert 'orch_host_up{host="b"} 1' in metrics
        # a cancel on b ends the run in the state; a's tick notices at its next heartbeat
        # and stops its own command (nothing is signalled across hosts)
        assert b.cli("cancel", str(task_id)).returncode == 0
        wait_for(lambda: not a.processes(), 30, "a to stop the cancelled run itself")
        assert a.task(task_id)["stage"] == "cancelled"
        assert ticking.wait(timeout=30) == 0
    finally:
        a.close()
        ticking.wait(timeout=30)


def test_doctor_fails_while_live_hosts_disagree(hosts: Any) -> None:
    a, b = hosts("a"), hosts("b")
    stages = [{"name": "run", "runner": "command", "command": ["true"]}]
    host_config(a, "a", {"app": {"path": str(a.repo), "merge": {"push": True}}}, stages)
    host_config(b, "b", {"app": {"path": str(b.repo), "merge": {"push": True}}}, stages)
    a.tick(max_claims=0)
    b.tick(max_claims=0)
    agreed = b.cli("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(agreed.stdout)["checks"]}
    assert checks["hosts"]["status"] == "ok" and checks["database"]["status"] == "ok"
    host_config(b, "b", {"app": {"path": str(b.repo)}}, stages, max_concurrency=2)
    b.tick(max_claims=0)
    found = b.cli("doctor", "--json")
    assert found.returncode == 1
    hosts_check = {c["name"]: c for c in json.loads(found.stdout)["checks"]}["hosts"]
    assert hosts_check["status"] == "fail"
    assert "max_concurrency differs" in hosts_check["detail"]
    assert "merge.push is off on b" in hosts_check["detail"]
