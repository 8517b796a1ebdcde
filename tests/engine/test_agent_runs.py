"""What an agent run gets: argv, environment, stdin, prompt; and what is kept of it (SPEC §5).

A fake agent script records everything it was given; the run goes through a
real tick, a real detached supervisor and a real git worktree.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from orch.cli import run as cli_run
from orch.config import load_settings
from orch.engine.tick import run_tick
from orch.pipeline import load_pipeline
from orch.state.schema import open_database

PY = sys.executable

RECORDER = textwrap.dedent("""\
    import json, os, sys
    from pathlib import Path
    out = Path(os.environ["RECORD_TO"])
    data = {"argv": sys.argv[1:], "cwd": os.getcwd(), "stdin": sys.stdin.read(),
            "env": {k: v for k, v in os.environ.items()
                    if k.startswith(("ORCH_", "SECRET", "ROLE_"))}}
    out.write_text(json.dumps(data))
    art = Path(os.environ["ORCH_ARTIFACTS"])
    (art / "02-analysis.md").write_text("analysis\\n")
    print("the secret is", os.environ.get("SECRET_TOKEN", "")[:0])
""")


def setup_home(tmp_path: Path, role: str, extra: str = "") -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.name", "t"],
                 ["config", "user.email", "t@t.invalid"], ["commit", "-q", "--allow-empty",
                                                           "-m", "init"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    home = tmp_path / "home"
    home.mkdir()
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    record = tmp_path / "record.json"
    (tmp_path / "secrets.env").write_text("# comment\nexport SECRET_TOKEN='s3cr3t-value'\n")
    (home / "pipeline.yaml").write_text(
        "stages:\n  - {name: analysis, runner: agent, role: analyst, gate: analysis_ready,"
        " deliverables: [02-analysis.md]}\n")
    (home / "orch.yaml").write_text(textwrap.dedent(f"""\
        retry_backoff_s: 0
        heartbeat_interval_s: 1
        heartbeat_timeout_s: 20
        pipeline: pipeline.yaml
        env_file: {tmp_path / 'secrets.env'}
        agents:
          analyst: {role.format(py=PY, script=script)}
        repos:
          app: {{path: {repo}}}
        {extra}"""))
    return home, record


def run_until_done(home: Path, limit: float = 30.0) -> dict:
    deadline = time.time() + limit
    while time.time() < deadline:
        settings = load_settings(home)
        db = open_database(settings.db_path)
        try:
            run_tick(settings, load_pipeline(settings), db)
            task = db.one("SELECT * FROM tasks WHERE id = 1")
            assert task is not None
            if task["state"] in ("closed", "held"):
                return task
        finally:
            db.close()
        time.sleep(0.2)
    raise AssertionError("the task did not finish")


def test_argv_env_and_secrets(tmp_path, monkeypatch):
    role = ("{{command: [{py}, {script}, '{{task_id}}', 'stage={{stage}}', '{{round}}', "
            "'{{artifacts}}', '{{worktree}}', '{{prompt_file}}', 'literal {{braces}}'], "
            "env: {{ROLE_EXTRA: yes-please}}}}")
    home, record = setup_home(tmp_path, role)
    monkeypatch.setenv("RECORD_TO", str(record))
    assert cli_run(["--home", str(home), "task", "add", "--repo", "app", "--title",
                    "T; $(rm -rf /)"]) == 0
    task = run_until_done(home)
    assert task["stage"] == "done"
    seen = json.loads(record.read_text())
    worktree = home / "worktrees" / "app" / "1"
    assert seen["argv"][:5] == ["1", "stage=analysis", "0", str(home / "tasks" / "1"),
                                str(worktree)]
    assert seen["argv"][5].endswith(".prompt.md") and Path(seen["argv"][5]).exists()
    assert seen["argv"][6] == "literal {braces}"
    assert Path(seen["cwd"]) == worktree
    assert seen["stdin"] == ""  # /dev/null, never an open terminal
    env = seen["env"]
    for key in ("ORCH_HOME", "ORCH_TASK_ID", "ORCH_JOB_ID", "ORCH_RUN_ID", "ORCH_STAGE",
                "ORCH_ROUND", "ORCH_REPO", "ORCH_ARTIFACTS", "ORCH_WORKTREE"):
        assert key in env, key
    assert env["SECRET_TOKEN"] == "s3cr3t-value" and env["ROLE_EXTRA"] == "yes-please"
    # the run id in the environment is the run's id and names the log
    db = open_database(home / "orch.db")
    try:
        run = db.one("SELECT * FROM runs WHERE id = ?", (int(env["ORCH_RUN_ID"]),))
        assert run is not None and run["log_path"].endswith(
            f"job-{env['ORCH_JOB_ID']}-run-{env['ORCH_RUN_ID']}.log")
        events = " ".join(e["detail"] for e in db.all("SELECT detail FROM events"))
    finally:
        db.close()
    logs = " ".join(p.read_text() for p in (home / "logs").glob("*.log"))
    assert "s3cr3t-value" not in events and "s3cr3t-value" not in logs


def test_stdin_prompt_gets_the_prompt_on_stdin(tmp_path, monkeypatch):
    role = "{{command: [{py}, {script}], stdin: prompt}}"
    home, record = setup_home(tmp_path, role)
    monkeypatch.setenv("RECORD_TO", str(record))
    cli_run(["--home", str(home), "task", "add", "--repo", "app", "--title", "Prompted"])
    assert run_until_done(home)["stage"] == "done"
    seen = json.loads(record.read_text())
    assert "Prompted" in seen["stdin"] and "02-analysis.md" in seen["stdin"]


def test_a_prompt_over_100_kib_in_argv_is_a_retry_that_says_what_to_use(tmp_path, monkeypatch):
    role = "{{command: [{py}, {script}, '{{prompt}}']}}"
    home, record = setup_home(tmp_path, role, extra="max_attempts: 1\n")
    monkeypatch.setenv("RECORD_TO", str(record))
    prompts = home / "templates" / "prompts"  # a user's own prompt overrides the packaged one
    prompts.mkdir(parents=True)
    (prompts / "analyst.md").write_text("Task {{task_id}}\n" + "x" * (101 * 1024))
    cli_run(["--home", str(home), "task", "add", "--repo", "app", "--title", "Big"])
    task = run_until_done(home)
    assert task["state"] == "held"
    assert not record.exists()  # the agent never started
    db = open_database(home / "orch.db")
    try:
        job = db.one("SELECT * FROM jobs WHERE task_id = 1")
    finally:
        db.close()
    assert job is not None and "{prompt_file}" in job["error"] and "stdin" in job["error"]
