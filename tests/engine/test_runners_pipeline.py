"""The deterministic runners inside the pipeline, through real ticks (issue 5, SPEC §3, §8).

Staging goes through a fake `ssh` first on PATH that plays the real messages
of OpenSSH and Docker; merge runs against real git repositories. The point:
infrastructure trouble never rolls code back, a real failure does, and
nothing of the user's working tree is lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.git import git

from orch.cli import run as cli_run
from orch.config import load_settings
from orch.engine.tick import run_tick
from orch.pipeline import load_pipeline
from orch.state.schema import open_database

PY = sys.executable


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "t")
    git(path, "config", "user.email", "t@t.invalid")
    (path / "app.txt").write_text("one\ntwo\nthree\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "init")
    return path


class Home:
    def __init__(self, tmp_path: Path, pipeline: str, repo_extra: str = "",
                 flags: str = "", agents: str = "") -> None:
        self.repo = make_repo(tmp_path / "repo")
        self.home = tmp_path / "home"
        self.home.mkdir()
        (self.home / "pipeline.yaml").write_text(textwrap.dedent(pipeline))
        (self.home / "orch.yaml").write_text(
            "retry_backoff_s: 0\nmax_rounds: 2\npipeline: pipeline.yaml\n"
            f"flags:\n  serial_gate_enabled: true\n{flags}"
            f"agents:\n{agents or '  noop: {command: [sh]}'}\n"
            f"repos:\n  app:\n    path: {self.repo}\n{repo_extra}")

    def tick(self, claims: int = 5) -> dict:
        settings = load_settings(self.home)
        db = open_database(settings.db_path)
        try:
            return run_tick(settings, load_pipeline(settings), db, max_claims=claims).as_dict()
        finally:
            db.close()

    def cli(self, *args: str) -> int:
        return cli_run(["--home", str(self.home), *args])

    def add(self, title: str = "task") -> int:
        assert self.cli("task", "add", "--repo", "app", "--title", title) == 0
        db = open_database(self.home / "orch.db")
        try:
            return int(db.scalar("SELECT max(id) FROM tasks"))
        finally:
            db.close()

    def task(self, task_id: int) -> dict:
        db = open_database(self.home / "orch.db")
        try:
            return db.one("SELECT * FROM tasks WHERE id = ?", (task_id,)) or {}
        finally:
            db.close()

    def jobs(self, task_id: int) -> list[dict]:
        db = open_database(self.home / "orch.db")
        try:
            return db.all("SELECT * FROM jobs WHERE task_id = ? ORDER BY id", (task_id,))
        finally:
            db.close()

    def artifact(self, task_id: int, name: str) -> Path:
        return self.home / "tasks" / str(task_id) / name


FAKE_SSH = textwrap.dedent("""\
    #!/bin/sh
    # plays ssh: records argv, then behaves as $FAKE_SSH_MODE says (read from a file,
    # so a test can change it between ticks)
    printf '%s\\n' "$@" >> "$FAKE_DIR/ssh.argv"
    mode=$(cat "$FAKE_DIR/mode")
    case "$mode" in
      pass) echo "staging check ok"; exit 0 ;;
      fail) echo "AssertionError: health check failed" >&2; exit 1 ;;
      refused) echo "ssh: connect to host staging port 22: Connection refused" >&2; exit 255 ;;
      publickey) echo "deploy@staging: Permission denied (publickey)." >&2; exit 255 ;;
      nocontainer) echo "Error response from daemon: No such container: app-staging" >&2; exit 1 ;;
    esac
    exit 3
""")

STAGING_PIPELINE = """\
    stages:
      - {name: work, runner: command, command: [sh, -c, 'echo $ORCH_ROUND >> rounds.txt']}
      - {name: staging, runner: staging-runner, on_fail: work}
"""

STAGING_REPO = """\
    staging:
      host: deploy@staging
      container: app-staging
      command: [python, check.py, --ref, "{commit}", --branch, "{branch}", --task, "{task_id}"]
      transient_retries: 1
"""


@pytest.fixture
def staging(tmp_path, monkeypatch):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "ssh").write_text(FAKE_SSH)
    (fake / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DIR", str(fake))
    home = Home(tmp_path, STAGING_PIPELINE, STAGING_REPO)

    def mode(value: str) -> None:
        (fake / "mode").write_text(value)

    return home, mode, fake


def test_staging_pass_runs_the_exact_argv(staging):
    home, mode, fake = staging
    mode("pass")
    task = home.add("a title with $(touch /tmp/pwned) and `ticks`; rm -rf ~")
    home.tick()
    assert home.task(task)["stage"] == "done"
    argv = (fake / "ssh.argv").read_text().splitlines()
    assert argv[:6] == ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "deploy@staging", "--"]
    head = git(Path(home.home / "worktrees" / "app" / str(task)), "rev-parse", "HEAD")
    branch = home.task(task)["branch"]
    assert argv[6] == (f"docker exec app-staging python check.py --ref {head} "
                       f"--branch {branch} --task {task}")
    report = home.artifact(task, "14-staging-report.md").read_text()
    assert "outcome: passed" in report and "attempt: 1" in report


def test_infrastructure_trouble_defers_then_holds_and_never_rolls_back(staging):
    home, mode, _ = staging
    mode("refused")
    task = home.add()
    home.tick()  # work passes, staging runs and is deferred: it waits for the next tick
    jobs = home.jobs(task)
    assert home.task(task)["stage"] == "staging" and home.task(task)["round"] == 0
    assert jobs[-1]["status"] == "queued" and jobs[-1]["defers"] == 1
    assert jobs[-1]["verdict"] == "DEFER"
    home.tick()  # the second transient failure is past transient_retries (1): HOLD
    task_row = home.task(task)
    assert task_row["state"] == "held" and task_row["stage"] == "staging"
    assert task_row["round"] == 0  # no code rolled back
    assert "defers used up" in task_row["hold_reason"]
    mode("pass")
    assert home.cli("retry", str(task)) == 0
    home.tick()
    assert home.task(task)["stage"] == "done"


@pytest.mark.parametrize("kind", ["publickey", "nocontainer"])
def test_permanent_environment_faults_hold_at_once(staging, kind):
    home, mode, _ = staging
    mode(kind)
    task = home.add()
    home.tick()
    row = home.task(task)
    assert row["state"] == "held" and row["stage"] == "staging" and row["round"] == 0
    assert "outcome: permanent-env" in home.artifact(task, "14-staging-report.md").read_text()


def test_a_failed_check_rolls_back_to_on_fail(staging):
    home, mode, _ = staging
    mode("fail")
    task = home.add()
    home.tick(claims=2)  # work, then the failing staging check
    row = home.task(task)
    assert row["stage"] == "work" and row["round"] == 1 and row["state"] == "active"


def test_repos_without_staging_skip_the_stage_with_an_event(tmp_path):
    home = Home(tmp_path, STAGING_PIPELINE)
    task = home.add()
    report = home.tick()
    assert home.task(task)["stage"] == "done"
    assert {"task": task, "from": "staging", "to": "done", "verdict": "SKIP"} \
        in report["advanced"]
    assert home.cli("task", "show", str(task)) == 0


MERGE_PIPELINE = """\
    stages:
      - {name: work, runner: command, command: [sh, -c, 'echo "task $ORCH_TASK_ID round
         $ORCH_ROUND" > app.txt && git add app.txt && git -c user.name=w -c user.email=w@w
         commit -qm work']}
      - {name: merge, runner: merge, on_fail: work}
"""


def test_clean_merge_fast_forwards_main(tmp_path):
    home = Home(tmp_path, MERGE_PIPELINE)
    task = home.add()
    home.tick()
    assert home.task(task)["stage"] == "done"
    assert (home.repo / "app.txt").read_text().startswith(f"task {task} round 0")
    report = home.artifact(task, "15-merge-report.md").read_text()
    assert "result: merged" in report
    assert git(home.repo, "rev-parse", "main") in report


def test_conflict_bounces_to_development_with_the_files_named(tmp_path):
    home = Home(tmp_path, MERGE_PIPELINE)
    task = home.add()
    home.tick(claims=1)  # the work stage commits on the task branch
    # main moves on with a conflicting change before the merge runs
    (home.repo / "app.txt").write_text("someone else\n")
    git(home.repo, "commit", "-qam", "conflicting")
    home.tick(claims=1)
    row = home.task(task)
    assert row["stage"] == "work" and row["round"] == 1
    report = home.artifact(task, "15-merge-report.md").read_text()
    assert "result: conflict" in report and "app.txt" in report
    from orch.prompts import prompt_context

    context = prompt_context(task_id=task, repo="app", stage="work", round_no=1,
                             artifacts=home.artifact(task, ""), worktree=home.repo,
                             branch=row["branch"], default_branch="main")
    # the files are named for the prompt's own conflict section, not through the report
    assert context["merge_conflict"] == "- `app.txt`" and context["failure_report"] == ""
    assert (home.repo / "app.txt").read_text() == "someone else\n"


def test_dirty_checkout_holds_and_keeps_the_users_changes(tmp_path):
    home = Home(tmp_path, MERGE_PIPELINE)
    task = home.add()
    (home.repo / "app.txt").write_text("my unsaved work\n")
    home.tick()
    row = home.task(task)
    assert row["state"] == "held" and row["stage"] == "merge"
    assert (home.repo / "app.txt").read_text() == "my unsaved work\n"
    assert "result: blocked" in home.artifact(task, "15-merge-report.md").read_text()


def test_testing_runs_the_tester_agent_when_the_runner_is_off(tmp_path):
    pipeline = """\
        stages:
          - {name: work, runner: command, command: [sh, -c, 'true']}
          - {name: testing, runner: test-runner, on_fail: work}
    """
    agents = f"  tester: {{command: [{PY}, -m, orch.demo.agent, tester], output: claude-json}}"
    home = Home(tmp_path, pipeline, flags="  test_runner_enabled: false\n", agents=agents)
    (home.repo / "test_ok.py").write_text("def test_ok():\n    assert True\n")
    git(home.repo, "add", ".")
    git(home.repo, "commit", "-qm", "a test")
    task = home.add()
    import time

    for _ in range(40):
        home.tick()
        if home.task(task)["stage"] == "done":
            break
        time.sleep(0.25)
    assert home.task(task)["stage"] == "done"
    assert [j["runner"] for j in home.jobs(task)] == ["command", "agent"]


def test_tester_role_is_required_when_the_runner_is_off(tmp_path):
    pipeline = "stages:\n  - {name: testing, runner: test-runner}\n"
    home = Home(tmp_path, pipeline, flags="  test_runner_enabled: false\n")
    assert home.cli("pipeline", "show") == 4


def test_notify_gets_done_and_hold_events(tmp_path):
    sink = tmp_path / "events.jsonl"
    pipeline = """\
        stages:
          - {name: work, runner: command, command: [sh, -c, 'test ! -e "$ORCH_ARTIFACTS/stop"']}
    """
    home = Home(tmp_path, pipeline)
    with (home.home / "orch.yaml").open("a") as config:
        config.write(f"notify: [sh, -c, 'cat >> {sink}; echo >> {sink}']\nmax_attempts: 1\n")
    done = home.add("fine")
    home.tick()
    held = home.add("stops")
    home.artifact(held, "stop").write_text("x")
    home.tick()
    payloads = [json.loads(line) for line in sink.read_text().splitlines() if line.strip()]
    assert [(p["event"], p["task"]) for p in payloads] == [("done", done), ("hold", held)]
    assert set(payloads[0]) == {"event", "task", "repo", "title", "stage", "state", "reason",
                                "at"}


def test_a_command_killed_by_a_signal_is_a_retry_a_non_zero_exit_a_fail(tmp_path):
    pipeline = """\
        stages:
          - {name: first, runner: command, command: [sh, -c, 'true']}
          - {name: check, runner: command, on_fail: first,
             command: [sh, -c, 'if [ -e "$ORCH_ARTIFACTS/crash" ]; then kill -9 $$; fi; exit 1']}
    """
    home = Home(tmp_path, pipeline)
    task = home.add()
    home.artifact(task, "crash").write_text("x")
    home.tick(claims=2)
    jobs = home.jobs(task)
    assert jobs[-1]["stage"] == "check" and jobs[-1]["verdict"] == "RETRY"
    assert home.task(task)["round"] == 0
    home.artifact(task, "crash").unlink()
    home.tick(claims=1)
    assert home.task(task)["stage"] == "first" and home.task(task)["round"] == 1


def test_a_task_waiting_at_a_removed_human_stage_is_held(tmp_path):
    home = Home(tmp_path, """\
        stages:
          - {name: dev, runner: command, command: [sh, -c, 'true']}
          - {name: signoff, runner: human}
    """)
    task = home.add()
    home.tick()
    assert home.task(task)["state"] == "needs_input"
    (home.home / "pipeline.yaml").write_text(
        "stages:\n  - {name: dev, runner: command, command: [sh, -c, 'true']}\n")
    report = home.tick()
    row = home.task(task)
    assert row["state"] == "held" and row["stage"] == "signoff"
    assert "no longer in the pipeline" in row["hold_reason"]
    assert {"task": task, "from": "signoff", "to": "signoff", "verdict": "HOLD"} \
        in report["advanced"]


def test_a_branch_left_in_the_repo_by_someone_else_is_not_built_on(tmp_path):
    home = Home(tmp_path, MERGE_PIPELINE)
    git(home.repo, "checkout", "-q", "-b", "orch/1-task")
    (home.repo / "foreign.txt").write_text("not this task's\n")
    git(home.repo, "add", ".")
    git(home.repo, "commit", "-qm", "someone else's work")
    git(home.repo, "checkout", "-q", "main")
    task = home.add("task")
    home.tick(claims=1)
    row = home.task(task)
    assert row["branch"] == "orch/1-task-2"
    worktree = home.home / "worktrees" / "app" / str(task)
    assert not (worktree / "foreign.txt").exists()
    assert git(home.repo, "rev-parse", "orch/1-task") != git(worktree, "rev-parse", "HEAD")
    home.tick(claims=1)
    assert home.task(task)["stage"] == "done"
    assert not (home.repo / "foreign.txt").exists()  # main never got the foreign commit


def test_an_inline_command_stops_when_its_run_loses_the_job(tmp_path):
    """A cancel that died after its commit (nothing killed the group): the tick's own
    heartbeat finds the job gone and stops the command."""
    import time

    home = Home(tmp_path, "stages:\n  - {name: slow, runner: command, command: [sleep, '60']}\n")
    with (home.home / "orch.yaml").open("a") as config:
        config.write("heartbeat_interval_s: 1\nheartbeat_timeout_s: 30\ncancel_grace_s: 1\n")
    task = home.add()
    tick = subprocess.Popen([PY, "-m", "orch", "--home", str(home.home), "tick"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = open_database(home.home / "orch.db")
    try:
        deadline = time.time() + 15
        while time.time() < deadline and not db.scalar(
                "SELECT pgid FROM runs JOIN jobs ON jobs.id = runs.job_id "
                "WHERE jobs.task_id = ? AND jobs.status = 'running'", (task,)):
            time.sleep(0.05)
        with db.transaction():
            db.execute("UPDATE jobs SET status = 'cancelled' WHERE task_id = ?", (task,))
    finally:
        db.close()
    started = time.time()
    assert tick.wait(timeout=20) == 0
    assert time.time() - started < 15  # not the 60 s of the command
