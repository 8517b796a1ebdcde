"""The staging-runner against a real sshd on 127.0.0.1 (SPEC section 8).

The server (support/sshd.py) has its own config, host key and port; orch reaches it
through `staging.ssh_options` (`-F CONFIG`, the host being the config's alias), and
the remote `docker` is a recording script first on the remote PATH (no docker daemon
runs here). What happens inside a real container at the timeout is documented in
docs/troubleshooting.md, not tested.
"""

from __future__ import annotations

import time
from pathlib import Path

from support.sshd import SshServer

from orch.artifacts import STAGING_REPORT_FILE, read_document
from orch.model import Verdict
from orch.runners.staging import StagingSettings, run_staging

CHECK = ("python", "check.py", "--ref", "{commit}", "$(touch /tmp/orch-pwned) `id` 'q' ; | &",
         "a\nb", "")
VALUES = {"commit": "0123abcd", "branch": "task/7-x", "task_id": "7"}


def settings_for(server: SshServer, *, config: Path | None = None,
                 timeout_s: float = 60) -> StagingSettings:
    options = ("-F", str(config)) if config is not None else tuple(server.ssh_options)
    return StagingSettings(container="app-staging", command=CHECK, host=server.alias,
                           timeout_s=timeout_s, ssh_options=options)


def attempt(tmp_path: Path, settings: StagingSettings):
    report = tmp_path / STAGING_REPORT_FILE
    result = run_staging(settings, exec_host_side=True, values=VALUES, cwd=tmp_path,
                         attempt=1, report_path=report, grace_s=1.0)
    assert read_document(report).meta == result.meta
    return result


def test_the_exact_remote_argv_reaches_the_host(sshd: SshServer, tmp_path: Path) -> None:
    result = attempt(tmp_path, settings_for(sshd))
    assert (result.outcome, result.verdict) == ("passed", Verdict.PASS)
    assert result.command[:7] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                                  "-F", str(sshd.ssh_config)]
    [record] = sshd.records()
    assert record["argv"] == ["exec", "app-staging", "python", "check.py", "--ref",
                              "0123abcd", *CHECK[4:]]
    assert not Path("/tmp/orch-pwned").exists()


def test_connection_refused_defers(sshd: SshServer, tmp_path: Path) -> None:
    result = attempt(tmp_path, settings_for(sshd, config=sshd.refused_config()))
    assert (result.outcome, result.verdict, result.exit_code) == (
        "transient-infra", Verdict.DEFER, 255)
    assert "Connection refused" in result.meta["reason"]


def test_a_wrong_key_holds(sshd: SshServer, tmp_path: Path) -> None:
    result = attempt(tmp_path, settings_for(sshd, config=sshd.wrong_key_config()))
    assert (result.outcome, result.verdict, result.exit_code) == (
        "permanent-env", Verdict.HOLD, 255)
    assert sshd.records() == []


def test_a_check_whose_app_is_down_fails(sshd: SshServer, tmp_path: Path) -> None:
    for code in (1, 3):
        sshd.set_behaviour("docker", exit=code, stderr=(
            "Traceback (most recent call last):\n"
            "ConnectionRefusedError: [Errno 111] Connection refused\n"))
        result = attempt(tmp_path, settings_for(sshd))
        assert (result.outcome, result.verdict, result.exit_code) == (
            "failed", Verdict.FAIL, code)


def test_a_remote_hang_past_the_timeout_leaves_nothing_on_the_host(
        sshd: SshServer, tmp_path: Path) -> None:
    sshd.set_behaviour("docker", sleep=600)
    started = time.monotonic()
    for _ in range(3):  # three DEFERs used to leave three stale copies
        result = attempt(tmp_path, settings_for(sshd, timeout_s=3))
        assert (result.outcome, result.verdict) == ("transient-infra", Verdict.DEFER)
        assert "stopped on the host" in result.meta["reason"], result.meta["reason"]
        assert sshd.remote_processes() == []
    assert len(sshd.records()) == 3
    assert time.monotonic() - started < 60
