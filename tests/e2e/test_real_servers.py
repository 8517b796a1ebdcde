"""Proof that the support fixtures start real servers and behave as documented."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest
from support import unavailable
from support.pgserver import PgDatabase, PgServer
from support.sshd import SshServer
from support.unpriv import Sandbox, User, is_root

TESTS = Path(__file__).resolve().parents[1]


def psycopg_module() -> ModuleType:
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg 3", "pip install 'psycopg[binary]'")
    return psycopg


def wait_for(predicate: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


# -- PostgreSQL ------------------------------------------------------------------------

CLAIM = """
UPDATE jobs SET state = 'running', claimed_by = %s
WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id
            FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING id
"""


def test_pg_server_runs_unprivileged_on_loopback(pg_server: PgServer,
                                                 pg_database: PgDatabase) -> None:
    assert re.fullmatch(rf"postgresql://postgres@127\.0\.0\.1:{pg_server.port}/\w+",
                        pg_database.dsn)
    owner = psutil.Process(pg_server.pid).username()
    assert owner != "root"
    assert pg_server.psql("SHOW fsync") == "off"
    assert pg_server.psql("SHOW listen_addresses") == "127.0.0.1"
    assert int(pg_server.psql("SHOW server_version_num")) >= 150000


def test_pg_skip_locked_claims_across_two_connections(pg_dsn: str) -> None:
    psycopg = psycopg_module()
    with psycopg.connect(pg_dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE jobs (id int PRIMARY KEY, state text NOT NULL, "
                      "claimed_by text)")
        setup.execute("INSERT INTO jobs SELECT g, 'queued' FROM generate_series(1, 3) g")
    with psycopg.connect(pg_dsn) as a, psycopg.connect(pg_dsn) as b:
        b.execute("SET lock_timeout = '1s'")  # a claim that waited would fail here
        assert a.execute(CLAIM, ("a",)).fetchone() == (1,)  # a's transaction stays open
        assert b.execute(CLAIM, ("b",)).fetchone() == (2,)  # skipped row 1, did not wait
        with pytest.raises(psycopg.errors.LockNotAvailable):
            b.execute("SELECT id FROM jobs WHERE id = 1 FOR UPDATE NOWAIT")
        b.rollback()
        assert b.execute(CLAIM, ("b",)).fetchone() == (2,)
        a.commit()
        b.commit()
        rows = a.execute("SELECT id, state, claimed_by FROM jobs ORDER BY id").fetchall()
    assert rows == [(1, "running", "a"), (2, "running", "b"), (3, "queued", None)]


TAKE_SLOT = """
UPDATE slots SET job_id = %s
WHERE n = (SELECT n FROM slots WHERE job_id IS NULL AND n <= %s ORDER BY n
           FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING n
"""


def test_pg_slot_rows_keep_a_global_limit_without_waiting(pg_dsn: str) -> None:
    """The pattern recommended for a global max_concurrency: N slot rows, a claim takes
    a free one with SKIP LOCKED in its own transaction; a third concurrent claimer finds
    none (and does not wait) while two are held or being taken."""
    psycopg = psycopg_module()
    with psycopg.connect(pg_dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE slots (n int PRIMARY KEY, job_id int UNIQUE)")
        setup.execute("INSERT INTO slots SELECT g, NULL FROM generate_series(1, 4) g")
    limit = 2
    with (psycopg.connect(pg_dsn) as a, psycopg.connect(pg_dsn) as b,
          psycopg.connect(pg_dsn) as c):
        for conn in (a, b, c):
            conn.execute("SET lock_timeout = '1s'")
        assert a.execute(TAKE_SLOT, (101, limit)).fetchone() == (1,)
        assert b.execute(TAKE_SLOT, (102, limit)).fetchone() == (2,)
        assert c.execute(TAKE_SLOT, (103, limit)).fetchone() is None  # in flight: skipped
        a.commit()
        b.commit()
        c.rollback()
        assert c.execute(TAKE_SLOT, (103, limit)).fetchone() is None  # held: not free
        c.rollback()
        a.execute("UPDATE slots SET job_id = NULL WHERE job_id = 101")  # job 101 ends
        a.commit()
        assert c.execute(TAKE_SLOT, (103, limit)).fetchone() == (1,)
        c.commit()


def test_pg_database_from_template(pg_server: PgServer) -> None:
    template = pg_server.create_database()
    pg_server.psql("CREATE TABLE marker (x int); INSERT INTO marker VALUES (7)", template.name)
    clone = pg_server.create_database(template=template.name)
    try:
        assert pg_server.psql("SELECT x FROM marker", clone.name) == "7"
    finally:
        pg_server.drop_database(clone.name)
        pg_server.drop_database(template.name)


def test_pg_server_dies_with_a_killed_test_process(tmp_path: Path) -> None:
    """Even a SIGKILLed test run leaves no postgres behind (parent-death signal)."""
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from support.pgserver import PgServer
        server = PgServer().start()
        print(server.pid, server.root, flush=True)
        time.sleep(600)
    """), encoding="utf-8")
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        pid, root = child.stdout.readline().split()
        postmaster = psutil.Process(int(pid))
        assert postmaster.name() == "postgres"
        server_processes = [postmaster, *postmaster.children(recursive=True)]
    finally:
        child.kill()
        child.wait()
    _, alive = psutil.wait_procs(server_processes, timeout=10)
    shutil.rmtree(root, ignore_errors=True)  # the one thing a SIGKILLed run leaves
    assert not alive


# -- sshd ------------------------------------------------------------------------------

REMOTE = 'docker exec ctr python check.py --ref "a b;c"'


@pytest.fixture(params=["sshd", "sshd_unpriv"])
def any_sshd(request: pytest.FixtureRequest) -> SshServer:
    """Both servers: logging in ourselves (root in CI) and the unprivileged user."""
    server: SshServer = request.getfixturevalue(request.param)
    return server


def test_ssh_reaches_the_recording_docker_with_exact_argv(any_sshd: SshServer) -> None:
    done = subprocess.run(any_sshd.ssh_argv(REMOTE), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    [record] = any_sshd.records()
    assert record["argv"] == ["exec", "ctr", "python", "check.py", "--ref", "a b;c"]
    assert record["uid"] == any_sshd.login_user.uid


def test_ssh_round_trips_shell_metacharacters_through_shlex_join(sshd_unpriv: SshServer) -> None:
    argv = ["docker", "exec", "ctr", "python", "check.py", "--ref",
            "$(touch /tmp/pwned) `id` 'q' \"dq\" \\ ; | & * ~ {a,b} $HOME\nline2", ""]
    done = subprocess.run(sshd_unpriv.ssh_argv(shlex.join(argv)), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [r["argv"] for r in sshd_unpriv.records()] == [argv[1:]]


def test_ssh_passes_the_remote_exit_code_and_output(sshd_unpriv: SshServer) -> None:
    sshd_unpriv.set_behaviour("docker", exit=3, stdout="out\n", stderr="boom\n")
    done = subprocess.run(sshd_unpriv.ssh_argv(REMOTE), capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "boom\n")


def test_ssh_wrong_key_is_permission_denied(sshd_unpriv: SshServer) -> None:
    done = subprocess.run(sshd_unpriv.ssh_argv(REMOTE, config=sshd_unpriv.wrong_key_config()),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 255
    assert "Permission denied (publickey)" in done.stderr
    assert sshd_unpriv.records() == []


def test_ssh_closed_port_is_connection_refused(sshd_unpriv: SshServer) -> None:
    done = subprocess.run(sshd_unpriv.ssh_argv(REMOTE, config=sshd_unpriv.refused_config()),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 255
    assert re.search(r"^ssh: connect to host 127\.0\.0\.1 port \d+: Connection refused",
                     done.stderr, re.M), done.stderr


def test_ssh_hung_remote_command_outlives_the_client_and_can_be_killed(
        sshd_unpriv: SshServer) -> None:
    sshd_unpriv.set_behaviour("docker", sleep=600)
    client = subprocess.Popen(sshd_unpriv.ssh_argv(REMOTE), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    wait_for(sshd_unpriv.records)
    client.kill()
    client.wait()
    time.sleep(0.5)
    left = sshd_unpriv.remote_processes()  # a killed ssh client does not end the command
    assert any("docker" in " ".join(p.cmdline()) for p in left)
    sshd_unpriv.kill_remote()
    assert sshd_unpriv.remote_processes() == []


def test_ssh_remote_timeout_ends_the_command_on_the_host(sshd_unpriv: SshServer) -> None:
    sshd_unpriv.set_behaviour("docker", sleep=600)
    done = subprocess.run(sshd_unpriv.ssh_argv(f"timeout -k 2 1 {REMOTE}"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 124
    assert sshd_unpriv.records()
    assert sshd_unpriv.remote_processes() == []


# -- unprivileged user -----------------------------------------------------------------

def uid_and_home() -> tuple[int, str]:
    """Runs in the sandbox's interpreter (Sandbox.call)."""
    home = os.environ["HOME"]
    Path(home, "written").write_text("ok", encoding="utf-8")
    return os.getuid(), home


def test_unpriv_runs_commands_as_another_user(unpriv: Sandbox, unpriv_user: User) -> None:
    done = unpriv.run(["id", "-u"])
    assert done.returncode == 0
    assert int(done.stdout) == unpriv_user.uid
    if is_root():
        assert unpriv_user.uid != 0
    made = unpriv.run(["sh", "-c", 'touch "$HOME/a" "$TMPDIR/b" ./c && echo ok'])
    assert made.stdout.strip() == "ok", made.stderr


def test_unpriv_calls_a_python_function(unpriv: Sandbox, unpriv_user: User) -> None:
    assert unpriv.call(uid_and_home) == (unpriv_user.uid, str(unpriv.home))


def test_unpriv_runs_orch(unpriv: Sandbox) -> None:
    done = unpriv.run([str(unpriv.bin / "orch"), "--help"])
    assert done.returncode == 0, done.stderr + unpriv.import_hint()
    assert "Usage" in done.stdout


def test_unpriv_close_kills_what_the_sandbox_started(unpriv_user: User) -> None:
    sandbox = Sandbox(unpriv_user)
    sandbox.run(["sh", "-c", "setsid sleep 600 >/dev/null 2>&1 &"])
    [sleeper] = wait_for(sandbox.processes)
    assert sleeper.uids().real == unpriv_user.uid
    sandbox.close()
    assert not sleeper.is_running() or sleeper.status() == psutil.STATUS_ZOMBIE
    assert not sandbox.root.exists()
