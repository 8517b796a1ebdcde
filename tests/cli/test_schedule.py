"""`orch schedule --cron | --systemd [--write]`: what ticks a home every minute, with this
install's absolute paths. The crontab line is run as cron runs it (`/bin/sh -c` with
cron's bare environment) and must tick the home; the units are checked by
systemd-analyze where it exists; doctor's hint names the command."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support import unavailable
from support.cli import CliResult, orch_script

import orch

Cli = Callable[..., CliResult]
PACKAGED_TICK = Path(orch.__file__).parent / "data" / "bin" / "orch-tick"


def test_the_crontab_line_ticks_the_home_from_crons_bare_environment(
        orch_home: Path, cli: Cli, tmp_path: Path) -> None:
    code, out, err = cli(orch_home, "schedule", "--cron")
    assert code == 0, err
    line = out.strip()
    assert line.startswith("* * * * * ") and "\n" not in line
    assert f"ORCH_HOME={orch_home}" in line
    assert f"ORCH_BIN={orch_script()}" in line
    assert line.endswith(f"/bin/sh {PACKAGED_TICK}")
    assert "crontab -" in err  # how to add it, on stderr so that stdout is the line alone

    # as cron runs it: /bin/sh -c, HOME, LOGNAME and a bare PATH, nothing else
    command = line.split(" ", 5)[5]
    env = {"HOME": str(tmp_path), "LOGNAME": "orch", "SHELL": "/bin/sh",
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # quiet: cron mails only errors
    conn = sqlite3.connect(orch_home / "orch.db")
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'last_tick_at'").fetchone()
    finally:
        conn.close()


def test_cron_escapes_percent_and_quotes_paths(tmp_path: Path, cli: Cli) -> None:
    home = tmp_path / "a home with 100% odd chars"
    code, out, err = cli(home, "schedule", "--cron")
    assert code == 0
    assert "ORCH_HOME='" in out and "100\\%" in out and "100%" not in out.replace("\\%", "")
    assert f"no orch home at {home}" in err  # said, not refused: schedule needs no home
    assert not home.exists()


def test_systemd_units_are_printed_with_absolute_paths(orch_home: Path, cli: Cli,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    code, out, err = cli(orch_home, "schedule", "--systemd")
    assert code == 0, err
    assert f"# ---- {tmp_path}/config/systemd/user/orch-tick.service" in out
    assert f'ExecStart=/bin/sh "{PACKAGED_TICK}"' in out
    assert f'Environment="ORCH_HOME={orch_home}"' in out
    assert f'Environment="ORCH_BIN={orch_script()}"' in out
    assert 'Environment="ORCH_PATH=' in out
    assert "OnCalendar=minutely" in out and "KillMode=process" in out
    assert not (tmp_path / "config").exists()  # printing writes nothing


def test_systemd_write_then_refuse_to_replace_another_homes_units(
        orch_home: Path, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    units = tmp_path / "config" / "systemd" / "user"
    code, out, err = cli(orch_home, "schedule", "--systemd", "--write")
    assert code == 0, err
    assert f"wrote {units}/orch-tick.service" in out and f"wrote {units}/orch-tick.timer" in out
    assert "systemctl --user enable --now orch-tick.timer" in out
    assert "loginctl enable-linger" in out
    assert cli(orch_home, "schedule", "--systemd", "--write")[0] == 0  # the same: fine

    other = tmp_path / "other-home"
    assert cli(other, "init")[0] == 0
    before = (units / "orch-tick.service").read_text()
    code, _, err = cli(other, "schedule", "--systemd", "--write")
    assert code == 1 and "exists with other content" in err and "--force" in err
    assert (units / "orch-tick.service").read_text() == before
    assert cli(other, "schedule", "--systemd", "--write", "--force")[0] == 0
    assert f"ORCH_HOME={other}" in (units / "orch-tick.service").read_text()


def test_the_written_units_pass_systemd_analyze(orch_home: Path, cli: Cli, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable("systemd-analyze", "apt-get install -y systemd")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert cli(orch_home, "schedule", "--systemd", "--write")[0] == 0
    units = tmp_path / "config" / "systemd" / "user"
    done = subprocess.run([str(analyze), "verify", "orch-tick.service", "orch-tick.timer"],
                          cwd=units, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("args", [[], ["--cron", "--systemd"], ["--cron", "--write"],
                                  ["--systemd", "--force"]])
def test_schedule_usage_errors(args: list[str], orch_home: Path, cli: Cli) -> None:
    code, out, err = cli(orch_home, "schedule", *args)
    assert code == 2 and out == "" and err.startswith("error: ")


def test_doctors_cron_hint_uses_orch_schedule(orch_home: Path, cli: Cli) -> None:
    _, out, _ = cli(orch_home, "doctor", "--json")
    tick = next(c for c in json.loads(out)["checks"] if c["name"] == "tick")
    assert tick["status"] == "warn"
    assert f"orch --home {orch_home} schedule --cron" in tick["detail"]
