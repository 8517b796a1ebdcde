"""Screens that fit: `orch queue --watch` and `orch pipeline show` in a real 80x30 terminal
(tmux), every table at 80 columns without a broken word, `task list` saying what it
hides and filtering, `task show` with one time format, run durations and the task's
cost, and `orch metrics --output` with its checks and new series.

The running jobs here are real agent runs (a `sleep` under orch's supervisor), ended
by `orch cancel` when each test is done."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import unavailable
from support.cli import CliResult
from support.engine import claude_result, wait_for
from support.prometheus import parse_metrics

Cli = Callable[..., CliResult]
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


def make_home(tmp_path: Path, git_repo: Callable[..., Path], agent: list[str],
              repos: dict[str, int], output: str = "null") -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "pipeline.yaml").write_text(
        "stages:\n  - {name: work, runner: agent, role: worker, gate: exit_zero}\n"
        "  - {name: check, runner: human, on_fail: work}\n")
    lines = [f"  {name}: {{path: {git_repo(name)}, max_active: {slots}}}"
             for name, slots in repos.items()]
    (home / "orch.yaml").write_text(
        "max_concurrency: 2\nretry_backoff_s: 0\nheartbeat_interval_s: 1\n"
        "pipeline: pipeline.yaml\nagents:\n"
        f"  worker: {{command: {json.dumps(agent)}, output: {output}}}\n"
        "repos:\n" + "\n".join(lines) + "\n")
    return home


def add(cli: Cli, home: Path, repo: str, title: str) -> int:
    code, out, err = cli(home, "task", "add", "--repo", repo, "--title", title)
    assert code == 0, err
    return int(out)


@pytest.fixture
def busy_home(tmp_path: Path, git_repo: Callable[..., Path], cli: Cli) -> Iterator[Path]:
    """20 tasks in app (one slot) and 5 in web (two slots), two agent runs sleeping."""
    home = make_home(tmp_path, git_repo, ["sleep", "300"], {"app": 1, "web": 2})
    for number in range(1, 21):
        add(cli, home, "app", f"App task {number}: a title long enough to be cut at the edge")
    for number in range(1, 6):
        add(cli, home, "web", f"Web task {number}")
    code, _, err = cli(home, "tick", "--max-claims", "5", "--quiet")
    assert code == 0, err
    yield home
    for task in range(1, 26):
        cli(home, "cancel", str(task))


def tmux_run(tmp_path: Path, command: str, height: int = 30) -> tuple[str, str]:
    """Start COMMAND in a detached tmux session of 80xHEIGHT; returns (session, socket)."""
    tmux = shutil.which("tmux")
    if tmux is None:
        unavailable("tmux", "apt-get install -y tmux")
    socket = str(tmp_path / "tmux.sock")
    session = "orch"
    subprocess.run([tmux, "-S", socket, "new-session", "-d", "-s", session, "-x", "80", "-y",
                    str(height), command], check=True, timeout=30)
    subprocess.run([tmux, "-S", socket, "set-option", "-t", session, "remain-on-exit", "on"],
                   check=True, timeout=30)
    return session, socket


def tmux(socket: str, *args: str) -> str:
    done = subprocess.run(["tmux", "-S", socket, *args], capture_output=True, text=True,
                          timeout=30)
    return done.stdout


def capture(socket: str, session: str) -> list[str]:
    """The pane's lines, wrapped lines joined (-J), so a line wider than 80 shows as one."""
    return tmux(socket, "capture-pane", "-p", "-J", "-t", session).rstrip("\n").split("\n")


def orch_command(home: Path, *args: str) -> str:
    return " ".join([sys.executable, "-m", "orch", "--home", str(home), *args])


def test_queue_watch_fits_80x30_with_20_tasks(busy_home: Path, tmp_path: Path) -> None:
    session, socket = tmux_run(tmp_path, orch_command(busy_home, "queue", "--watch"))
    try:
        lines = wait_for(lambda: [line for line in capture(socket, session)
                                  if "reaper:" in line] and capture(socket, session),
                         30, "the first frame of orch queue --watch")
        time.sleep(2.5)  # a redraw, in place
        lines = capture(socket, session)
        text = "\n".join(lines)
        assert len(lines) <= 30 and max(len(line.rstrip()) for line in lines) <= 80, text
        assert text.count("orch queue at") == 1  # redrawn in place, not appended
        assert "app: 20 open tasks; 1/1 slots" in text
        assert "web: 5 open tasks; 2/2 slots" in text
        assert re.search(r"19 tasks wait for a slot of app: 2, 3, 4, .* and \d+ more", text)
        assert "3 tasks wait for a slot of web: 23, 24, 25" in text
        assert "running jobs: 2 of max_concurrency 2" in text
        assert "reaper: 0 reaped" in text
        assert "counters:" in text

        tmux(socket, "send-keys", "-t", session, "C-c")
        wait_for(lambda: tmux(socket, "display", "-p", "-t", session, "#{pane_dead}").strip()
                 == "1", 15, "orch queue --watch to exit on Ctrl-C")
        # how it ended: an exit status, or the signal that killed it (read again while the
        # server, busy under load, answers nothing)
        ending = wait_for(lambda: tmux(socket, "display", "-p", "-t", session,
                                       "#{pane_dead_status}/#{pane_dead_signal}").strip()
                          .strip("/"), 15, "tmux to report how the pane ended")
        assert ending == "130", ending
        after = "\n".join(capture(socket, session))
        assert "interrupted: stopped watching the queue; it only reads, so nothing was " \
               "changed" in after
    finally:
        tmux(socket, "kill-server")


def test_queue_watch_keeps_running_jobs_and_the_reaper_on_a_short_terminal(
        busy_home: Path, tmp_path: Path, cli: Cli) -> None:
    for task in (2, 3, 4):  # three held tasks, each with its own reason: no folding
        sqlite = sqlite3.connect(busy_home / "orch.db")
        with sqlite:
            sqlite.execute("UPDATE tasks SET state = 'held', hold_kind = 'verdict', "
                           "hold_reason = ? WHERE id = ?", (f"reason number {task}", task))
        sqlite.close()
    session, socket = tmux_run(tmp_path, orch_command(busy_home, "queue", "--watch"),
                               height=16)
    try:
        wait_for(lambda: "reaper:" in "\n".join(capture(socket, session)), 30,
                 "a frame with the reaper line")
        lines = capture(socket, session)
        text = "\n".join(lines)
        assert len([line for line in lines if line.strip()]) <= 16, text
        assert max(len(line.rstrip()) for line in lines) <= 80
        assert "running jobs: 2 of max_concurrency 2" in text and "reaper:" in text
        assert re.search(r"\+ \d+ more tasks \(orch queue shows every one\)", text), text
    finally:
        tmux(socket, "kill-server")
    code, out, _ = cli(busy_home, "queue")  # without --watch: every task, no cut
    assert code == 0 and "more tasks" not in out
    for task in (2, 3, 4):
        assert f"held: reason number {task}, then orch retry {task}" in out


def test_pipeline_show_at_80_columns_breaks_no_word(orch_home: Path, tmp_path: Path) -> None:
    session, socket = tmux_run(tmp_path, orch_command(orch_home, "pipeline", "show"))
    try:
        wait_for(lambda: tmux(socket, "display", "-p", "-t", session, "#{pane_dead}").strip()
                 == "1", 30, "orch pipeline show to finish")
        lines = capture(socket, session)
    finally:
        tmux(socket, "kill-server")
    text = "\n".join(lines)
    assert max(len(line.rstrip()) for line in lines) <= 80, text
    words = set(text.split())
    for word in ("analysis", "development", "review", "testing", "staging", "merge",
                 "analyst", "developer", "reviewer", "test-runner", "staging-runner",
                 "analysis_ready", "dev_done", "review_approved", "tests_passed",
                 "staging_passed", "merged", "02-analysis.md", "10-dev-report.md",
                 "(questions)", "stage", "runs", "gate", "fail", "writes"):
        assert word in words, f"{word!r} is not whole in:\n{text}"


# --------------------------------------------------------------------------- tables at 80


def test_task_list_says_what_it_hides_and_filters(tmp_path: Path, git_repo: Callable[..., Path],
                                                  cli: Cli, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    home = make_home(tmp_path, git_repo, ["true"], {"app": 1})
    ids = [add(cli, home, "app", f"Task {n} " + "with many words " * 6) for n in range(4)]
    for task in ids[:3]:
        assert cli(home, "cancel", str(task))[0] == 0
    code, out, _ = cli(home, "task", "list")
    lines = out.splitlines()
    assert code == 0 and max(len(line) for line in lines) <= 80
    assert lines[0].split() == ["id", "repo", "stage", "state", "round", "paused", "title"]
    assert lines[-1] == "3 closed tasks not shown (--all shows them)"
    assert all(word in out.split() for word in ("Task", "with", "many", "words"))

    assert cli(home, "task", "list", "--all")[1].count("cancelled") == 3
    rows = json.loads(cli(home, "task", "list", "--state", "closed", "--json")[1])
    assert [row["id"] for row in rows] == ids[:3]
    rows = json.loads(cli(home, "task", "list", "--stage", "work", "--json")[1])
    assert [row["id"] for row in rows] == [ids[3]]
    code, out, _ = cli(home, "task", "list", "--state", "held")
    assert code == 0 and out.splitlines() == ["no open tasks match"]  # no closed one is held
    code, _, err = cli(home, "task", "list", "--state", "sleeping")
    assert code == 2 and "waiting, active, needs_input, held, closed" in err


def test_task_show_times_durations_and_cost(tmp_path: Path, git_repo: Callable[..., Path],
                                            cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    agent = ["sh", "-c", f"sleep 1; echo '{claude_result(cost=0.25)}'"]
    home = make_home(tmp_path, git_repo, agent, {"app": 1}, output="claude-json")
    task = add(cli, home, "app", "costs a quarter")
    assert cli(home, "tick", "--quiet")[0] == 0

    def finished() -> bool:
        shown = json.loads(cli(home, "task", "show", str(task), "--json")[1])
        return bool(shown["runs"]) and shown["runs"][0]["finished_at"] is not None

    wait_for(finished, 30, "the agent run to finish")
    code, out, _ = cli(home, "task", "show", str(task))
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80
    assert "(all times UTC)" in out and not ISO.search(out)  # one format for people
    assert re.search(r"\b1 +1 +work +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +\d+ s +succeeded +0 "
                     r"+\$0\.25", out), out
    assert "cost of the task: $0.25 (1 of 1 runs report one)" in out
    shown = json.loads(cli(home, "task", "show", str(task), "--json")[1])
    assert ISO.match(shown["runs"][0]["started_at"]) and shown["runs"][0]["started_at"][-1] == "Z"

    assert cli(home, "tick", "--quiet")[0] == 0  # judged: on to the human stage
    path = tmp_path / "orch.prom"
    assert cli(home, "metrics", "--output", str(path))[0] == 0
    samples = parse_metrics(path.read_text())
    assert samples["orch_cost_usd_total"] == 0.25
    assert samples['orch_repo_tasks{repo="app",state="needs_input"}'] == 1
    assert samples['orch_repo_tasks{repo="app",state="waiting"}'] == 0


def test_metrics_output_must_be_a_prom_file(orch_home: Path, cli: Cli, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(orch_home, "metrics", "-o", "json")
    assert code == 2 and out == "" and "must end in .prom" in err
    assert not (tmp_path / "json").exists()
    code, out, err = cli(orch_home, "metrics", "-o", "orch.prom")
    assert code == 0 and out == "" and err == ""
    assert "orch_repo_tasks" in (tmp_path / "orch.prom").read_text()


def test_doctor_and_config_show_fit_80_columns(orch_home: Path, cli: Cli,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = cli(orch_home, "doctor")[1]
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "schedule --cron" in " ".join(out.split())  # the hint, whole, over two lines
    code, out, _ = cli(orch_home, "config", "show")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    # the developer's long command wraps at spaces only: joined again, it is whole
    values = json.loads(cli(orch_home, "config", "show", "--json")[1])["values"]
    command = next(v["value"] for v in values if v["key"] == "agents.developer.command")
    assert len(json.dumps(command)) > 80 and json.dumps(command) in " ".join(out.split())


def test_the_queue_text_folds_but_json_keeps_every_task(busy_home: Path, cli: Cli,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli(busy_home, "queue")
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80
    assert re.search(r"19 tasks wait for a slot of app: 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,", out)
    view = json.loads(cli(busy_home, "queue", "--json")[1])
    assert len(view["tasks"]) == 25
    assert set(view) == {"tasks", "running", "serial_gate", "reaper", "counters", "hosts"}
    waiting = [t for t in view["tasks"] if t["repo"] == "app" and t["state"] == "waiting"]
    assert len(waiting) == 19 and all(t["reason"].startswith("serial gate:") for t in waiting)

