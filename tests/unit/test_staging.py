"""The staging-runner: argv building, quoting through a real shell, classification, reports.

`ssh` and `docker` are small fake scripts first on PATH: they record their
argv (NUL-separated) and play the real messages and exit codes of OpenSSH and
Docker. The fake ssh hands everything after `--` to `/bin/sh -c`, as the
staging host's shell would, so the quoting is checked by a real shell.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orch.artifacts import STAGING_REPORT_FILE, read_document
from orch.model import Verdict
from orch.runners.staging import (
    VERDICT_BY_OUTCOME,
    StagingSettings,
    build_staging_argv,
    classify_staging_outcome,
    remote_stop_argv,
    run_staging,
    substitute,
)

FAKE_SSH = """#!/bin/sh
printf '%s\\0' "$@" > "$FAKE_RECORD_DIR/ssh.argv"
if [ -n "$FAKE_SSH_EXIT" ]; then
    printf '%s\\n' "$FAKE_SSH_STDERR" >&2
    exit "$FAKE_SSH_EXIT"
fi
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do shift; done
shift
# Like sshd: the words after the host are joined with spaces and run by a shell.
PATH="${FAKE_REMOTE_PATH:-$PATH}" exec /bin/sh -c "$*"
"""

FAKE_DOCKER = """#!/bin/sh
printf '%s\\0' "$@" > "$FAKE_RECORD_DIR/docker.argv"
if [ -n "$FAKE_DOCKER_SLEEP" ]; then sleep "$FAKE_DOCKER_SLEEP"; fi
if [ -n "$FAKE_DOCKER_STDERR" ]; then printf '%s\\n' "$FAKE_DOCKER_STDERR" >&2; fi
exit "${FAKE_DOCKER_EXIT:-0}"
"""

HOST = "deploy@staging.internal"
CONTAINER = "myapp-staging"
VALUES = {"commit": "0123abcd", "branch": "task/7-fix", "task_id": "7"}

NASTY = [
    "$(touch {marker})",
    "`touch {marker}`",
    "; touch {marker}",
    "&& touch {marker}",
    "| touch {marker}",
    "a\ntouch {marker}",
    "it's \"quoted\"",
    "'",
    '"',
    "\\",
    "$HOME ${PATH} $0 $$ $1",
    "*",
    "~",
    "two  spaces\tand tab",
    "",
    "-n",
    "ünïcödé ✓ 漢字",
    "{not_a_placeholder} {{commit}}",
    "#comment",
    "!event",
    "> {marker}",
]


# --- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the fake `ssh` and `docker`."""
    bin_dir = tmp_path_factory.mktemp("fakebin")
    for name, text in (("ssh", FAKE_SSH), ("docker", FAKE_DOCKER)):
        script = bin_dir / name
        script.write_text(text)
        script.chmod(0o755)
    return bin_dir


def fake_env(fakes: Path, record: Path, **extra: str) -> dict[str, str]:
    """The environment for a run: the fakes first on PATH, records into `record`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FAKE_")}
    env["PATH"] = f"{fakes}{os.pathsep}{os.environ['PATH']}"
    env["FAKE_RECORD_DIR"] = str(record)
    env.update(extra)
    return env


def recorded(record: Path, name: str) -> list[str] | None:
    """The argv a fake recorded, or None when it never ran."""
    path = record / f"{name}.argv"
    if not path.exists():
        return None
    return path.read_bytes().decode("utf-8").split("\0")[:-1]


def remote_settings(command: list[str]) -> StagingSettings:
    return StagingSettings(container=CONTAINER, command=tuple(command), host=HOST)


# --- substitute and argv ------------------------------------------------------------


def test_substitute_replaces_placeholders_per_element() -> None:
    command = ["check", "--ref", "{commit}", "--branch={branch}", "task-{task_id}-{commit}"]
    assert substitute(command, VALUES) == [
        "check", "--ref", "0123abcd", "--branch=task/7-fix", "task-7-0123abcd",
    ]


def test_substitute_leaves_other_braces_alone() -> None:
    command = ["{x}", "{0}", "{", "}", "{{commit}}", "{commit!r}", "{ commit }", "%s"]
    assert substitute(command, VALUES) == [
        "{x}", "{0}", "{", "}", "{0123abcd}", "{commit!r}", "{ commit }", "%s",
    ]


def test_substitute_does_not_expand_a_value_twice() -> None:
    values = {"commit": "{branch}", "branch": "{task_id}", "task_id": "7"}
    assert substitute(["{commit}/{branch}"], values) == ["{branch}/{task_id}"]


def test_substitute_keeps_a_placeholder_without_value() -> None:
    assert substitute(["{commit}", "{branch}"], {"commit": "abc"}) == ["abc", "{branch}"]


def test_argv_over_ssh_is_exact() -> None:
    settings = remote_settings(["python", "staging_check.py", "--ref", "{commit}"])
    argv = build_staging_argv(settings, exec_host_side=True, values=VALUES)
    assert argv == [
        "ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", HOST, "--",
        "docker exec myapp-staging python staging_check.py --ref 0123abcd",
    ]


def test_argv_remote_part_is_quoted() -> None:
    settings = remote_settings(["sh", "-c", "echo $HOME; ls", "{branch}"])
    argv = build_staging_argv(settings, exec_host_side=True, values={"branch": "a b'c"})
    assert argv[-1] == "docker exec myapp-staging sh -c 'echo $HOME; ls' 'a b'\"'\"'c'"
    assert shlex.split(argv[-1]) == ["docker", "exec", CONTAINER, "sh", "-c", "echo $HOME; ls",
                                     "a b'c"]


def test_argv_without_host_runs_docker_here() -> None:
    settings = StagingSettings(container=CONTAINER, command=("check", "{task_id}"))
    assert build_staging_argv(settings, exec_host_side=True, values=VALUES) == [
        "docker", "exec", CONTAINER, "check", "7",
    ]


def test_argv_with_host_but_flag_off_runs_docker_here() -> None:
    settings = remote_settings(["check", "$(rm -rf /)"])
    assert build_staging_argv(settings, exec_host_side=False, values=VALUES) == [
        "docker", "exec", CONTAINER, "check", "$(rm -rf /)",
    ]


@pytest.mark.parametrize("kwargs", [
    {"container": "-v", "command": ("x",)},
    {"container": "", "command": ("x",)},
    {"container": "c", "command": ()},
    {"container": "c", "command": ("x",), "host": "-oProxyCommand=touch /tmp/x"},
    {"container": "c", "command": ("x",), "host": ""},
])
def test_settings_refuse_option_like_names(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        StagingSettings(**kwargs)


def test_settings_store_the_command_as_a_tuple() -> None:
    settings = StagingSettings(container="c", command=["a", "b"])  # type: ignore[arg-type]
    assert settings.command == ("a", "b")


# --- the remote string through a real shell -----------------------------------------


def run_remote(fakes: Path, record: Path, command: list[str],
               values: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    argv = build_staging_argv(remote_settings(command), exec_host_side=True, values=values)
    return subprocess.run(argv, env=fake_env(fakes, record), capture_output=True,
                          timeout=30, check=False)


@pytest.mark.parametrize("nasty", NASTY)
def test_remote_string_splits_back_exactly(fakes: Path, tmp_path: Path, nasty: str) -> None:
    marker = tmp_path / "pwned"
    value = nasty.replace("{marker}", str(marker))
    command = ["check", value, "--ref={commit}", "{branch}"]
    values = {"commit": value, "branch": value, "task_id": "7"}
    result = run_remote(fakes, tmp_path, command, values)
    assert result.returncode == 0, result.stderr
    literal = substitute([value], values)[0]  # "{{commit}}" in the command itself is expanded
    assert recorded(tmp_path, "docker") == [
        "exec", CONTAINER, "check", literal, f"--ref={value}", value,
    ]
    assert not marker.exists()


def test_the_whole_nasty_list_as_one_command(fakes: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    command = [item.replace("{marker}", str(marker)) for item in NASTY]
    result = run_remote(fakes, tmp_path, command, {})
    assert result.returncode == 0, result.stderr
    assert recorded(tmp_path, "docker") == ["exec", CONTAINER, *command]
    assert recorded(tmp_path, "ssh") == [
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", HOST, "--",
        shlex.join(["docker", "exec", CONTAINER, *command]),
    ]
    assert not marker.exists()


METACHARACTERS = [*"$`'\"\\;&|<>()*?[]{}~#!\n\t %=^-", "$(", "${", "&&", "||", "\r"]
ARG_TEXT = st.lists(
    st.one_of(st.sampled_from(METACHARACTERS),
              st.text(st.characters(codec="utf-8", exclude_characters="\0"),
                      max_size=6)),
    max_size=6,
).map("".join)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.lists(ARG_TEXT, min_size=1, max_size=5), commit=ARG_TEXT)
def test_quoting_round_trips_through_sh(fakes: Path, tmp_path: Path,
                                        command: list[str], commit: str) -> None:
    (tmp_path / "docker.argv").unlink(missing_ok=True)
    result = run_remote(fakes, tmp_path, [*command, "{commit}"], {"commit": commit})
    assert result.returncode == 0, result.stderr
    expected = substitute([*command, "{commit}"], {"commit": commit})
    assert recorded(tmp_path, "docker") == ["exec", CONTAINER, *expected]


# --- classification ------------------------------------------------------------------

OCI_NOT_FOUND = ('OCI runtime exec failed: exec failed: unable to start container process:'
                 ' exec: "python": executable file not found in $PATH: unknown')
OCI_NO_FILE = ('OCI runtime exec failed: exec failed: unable to start container process:'
               ' exec: "/app/staging_check.py": stat /app/staging_check.py:'
               ' no such file or directory: unknown')
DAEMON_DOWN = ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
               " Is the docker daemon running?")
SOCKET_DENIED = ("permission denied while trying to connect to the Docker daemon socket at"
                 ' unix:///var/run/docker.sock: Get "http://%2Fvar%2Frun%2Fdocker.sock/v1.24/'
                 'containers/myapp-staging/json": dial unix /var/run/docker.sock:'
                 " connect: permission denied")

CLASSIFY_CASES = [
    # passed: exit 0 whatever stderr says
    (0, "", "passed"),
    (0, "Warning: Permanently added 'staging.internal' (ED25519) to the list of known hosts.",
     "passed"),
    (0, "retrying after: Connection refused", "passed"),
    # a check that ran and failed
    (1, "AssertionError: health check failed", "failed"),
    (1, "", "failed"),
    (2, "usage: staging_check.py [-h] --ref REF", "failed"),
    (1, "FileNotFoundError: [Errno 2] No such file or directory: 'fixtures.json'", "failed"),
    (1, "health: worker queue is not running", "failed"),
    (137, "", "failed"),
    # ssh: permanent
    (255, f"{HOST}: Permission denied (publickey).", "permanent-env"),
    (255, f"{HOST}: Permission denied (publickey,gssapi-keyex,gssapi-with-mic).",
     "permanent-env"),
    (255, "Host key verification failed.", "permanent-env"),
    (255, "ssh: Could not resolve hostname staging.internal: Name or service not known",
     "permanent-env"),
    # ssh: transient
    (255, "ssh: Could not resolve hostname staging.internal: Temporary failure in name resolution",
     "transient-infra"),
    (255, "ssh: connect to host staging.internal port 22: Connection refused", "transient-infra"),
    (255, "kex_exchange_identification: read: Connection reset by peer\n"
          "Connection reset by 10.0.0.5 port 22", "transient-infra"),
    (255, "ssh: connect to host staging.internal port 22: Connection timed out",
     "transient-infra"),
    (255, "ssh: connect to host staging.internal port 22: Operation timed out",
     "transient-infra"),
    (255, "Connection closed by 10.0.0.5 port 22", "transient-infra"),
    (255, "ssh: connect to host staging.internal port 22: Network is unreachable",
     "transient-infra"),
    (255, "ssh: connect to host staging.internal port 22: No route to host", "transient-infra"),
    (255, "client_loop: send disconnect: Broken pipe", "transient-infra"),
    (255, "Connection to staging.internal closed by remote host.", "transient-infra"),
    (255, "packet_write_wait: Connection to 10.0.0.5 port 22: Broken pipe", "transient-infra"),
    (255, "Timeout, server staging.internal not responding.", "transient-infra"),
    (1, "BrokenPipeError: [Errno 32] Broken pipe", "failed"),
    (255, "", "transient-infra"),
    # docker: permanent
    (1, "Error response from daemon: No such container: myapp-staging", "permanent-env"),
    (1, "Error response from daemon: Container 3f9ac1d2e4b5 is not running", "permanent-env"),
    (126, OCI_NOT_FOUND, "permanent-env"),
    (127, OCI_NOT_FOUND, "permanent-env"),
    (1, OCI_NOT_FOUND, "permanent-env"),
    (126, OCI_NO_FILE, "permanent-env"),
    (1, SOCKET_DENIED, "permanent-env"),
    (127, "bash: line 1: docker: command not found", "permanent-env"),
    (127, "sh: 1: docker: not found", "permanent-env"),
    (126, "", "permanent-env"),
    (127, "", "permanent-env"),
    # docker: transient
    (1, DAEMON_DOWN, "transient-infra"),
    (1, "Error response from daemon: Container 3f9ac1d2e4b5 is restarting,"
        " wait until the container is running", "transient-infra"),
    # exit 1 disambiguated, case-insensitively, permanent winning
    (1, "ssh: connect to host staging.internal port 22: Connection refused", "transient-infra"),
    (255, "SSH: CONNECT TO HOST X PORT 22: CONNECTION REFUSED", "transient-infra"),
    (1, "ERROR RESPONSE FROM DAEMON: NO SUCH CONTAINER: X", "permanent-env"),
    (255, "Connection reset by 10.0.0.5 port 22\n"
          f"{HOST}: Permission denied (publickey).", "permanent-env"),
    (1, f"{DAEMON_DOWN}\nError response from daemon: No such container: x", "permanent-env"),
    (127, "Connection reset by 10.0.0.5 port 22", "permanent-env"),
    # words the check itself printed are no channel message: the check FAILED
    (1, "ConnectionRefusedError: [Errno 111] Connection refused", "failed"),
    (1, "requests.exceptions.ConnectionError: ... Connection refused", "failed"),
    (1, "app: upstream said: Error response from daemon: no such container", "failed"),
    (1, "CONNECTION REFUSED", "failed"),
    # only exit 1 and 255 are scanned
    (3, "ssh: connect to host staging.internal port 22: Connection refused", "failed"),
    (2, f"{HOST}: Permission denied (publickey).", "failed"),
    (125, DAEMON_DOWN, "failed"),
    # the local client killed by a signal, not by our timeout
    (-9, "", "transient-infra"),
]


@pytest.mark.parametrize(("exit_code", "stderr", "expected"), CLASSIFY_CASES)
def test_classify_real_messages(exit_code: int, stderr: str, expected: str) -> None:
    assert classify_staging_outcome(exit_code, stderr) == expected


def test_classify_timeout_is_transient() -> None:
    assert classify_staging_outcome(-15, "", timed_out=True) == "transient-infra"
    assert classify_staging_outcome(None, "AssertionError", timed_out=True) == "transient-infra"


def test_classify_start_error_is_permanent() -> None:
    error = "[Errno 2] No such file or directory: 'ssh'"
    assert classify_staging_outcome(None, "", start_error=error) == "permanent-env"


def test_classify_no_exit_code_is_not_a_pass() -> None:
    assert classify_staging_outcome(None, "") == "transient-infra"


def test_verdicts() -> None:
    assert VERDICT_BY_OUTCOME == {
        "passed": Verdict.PASS,
        "failed": Verdict.FAIL,
        "permanent-env": Verdict.HOLD,
        "transient-infra": Verdict.DEFER,
    }


# --- run_staging with the fakes ---------------------------------------------------------

CHECK = ("python", "staging_check.py", "--mode", "stub", "--ref", "{commit}")

RUN_CASES = [
    # (id, fake environment, outcome, verdict, exit code)
    ("passed", {}, "passed", Verdict.PASS, 0),
    ("check-failed", {"FAKE_DOCKER_EXIT": "1",
                      "FAKE_DOCKER_STDERR": "AssertionError: health check failed"},
     "failed", Verdict.FAIL, 1),
    ("connection-refused", {"FAKE_SSH_EXIT": "255", "FAKE_SSH_STDERR":
                            "ssh: connect to host staging.internal port 22: Connection refused"},
     "transient-infra", Verdict.DEFER, 255),
    ("publickey", {"FAKE_SSH_EXIT": "255",
                   "FAKE_SSH_STDERR": f"{HOST}: Permission denied (publickey)."},
     "permanent-env", Verdict.HOLD, 255),
    ("no-such-container", {"FAKE_DOCKER_EXIT": "1", "FAKE_DOCKER_STDERR":
                           "Error response from daemon: No such container: myapp-staging"},
     "permanent-env", Verdict.HOLD, 1),
    ("daemon-down", {"FAKE_DOCKER_EXIT": "1", "FAKE_DOCKER_STDERR": DAEMON_DOWN},
     "transient-infra", Verdict.DEFER, 1),
    ("no-docker-on-host", {"FAKE_REMOTE_PATH": "/nonexistent"},
     "permanent-env", Verdict.HOLD, 127),
]


@pytest.mark.parametrize(("case", "extra", "outcome", "verdict", "exit_code"), RUN_CASES,
                         ids=[case[0] for case in RUN_CASES])
def test_run_staging_over_ssh(fakes: Path, tmp_path: Path, case: str, extra: dict[str, str],
                              outcome: str, verdict: Verdict, exit_code: int) -> None:
    settings = StagingSettings(container=CONTAINER, command=CHECK, host=HOST, timeout_s=30)
    report = tmp_path / "task" / STAGING_REPORT_FILE
    result = run_staging(settings, exec_host_side=True, values=VALUES, cwd=tmp_path, attempt=2,
                         report_path=report, env=fake_env(fakes, tmp_path, **extra),
                         log_path=tmp_path / "run.log")
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", HOST, "--",
            "docker exec myapp-staging python staging_check.py --mode stub --ref 0123abcd"]
    assert (result.outcome, result.verdict, result.exit_code) == (outcome, verdict, exit_code)
    assert result.command == argv
    document = read_document(report)
    assert document.meta["outcome"] == outcome
    assert document.meta["exit_code"] == exit_code
    assert document.meta["attempt"] == 2
    assert document.meta["command"] == argv
    assert document.meta["host"] == HOST
    assert document.meta["duration_s"] >= 0
    assert document.meta["started_at"] <= document.meta["finished_at"]
    assert document.meta == result.meta
    assert recorded(tmp_path, "ssh") == argv[1:]
    expected_stderr = extra.get("FAKE_DOCKER_STDERR") or extra.get("FAKE_SSH_STDERR")
    if expected_stderr:
        assert expected_stderr in result.stderr_tail
        assert expected_stderr in document.body


def test_report_body_says_what_the_outcome_means(fakes: Path, tmp_path: Path) -> None:
    settings = StagingSettings(container=CONTAINER, command=CHECK, host=HOST)
    report = tmp_path / STAGING_REPORT_FILE
    env = fake_env(fakes, tmp_path, FAKE_SSH_EXIT="255", FAKE_SSH_STDERR="```\nConnection reset")
    run_staging(settings, exec_host_side=True, values=VALUES, cwd=tmp_path, attempt=1,
                report_path=report, env=env)
    body = read_document(report).body
    assert "infrastructure problem" in body.lower()
    assert "code is not rolled back" in body
    assert "````\n```\nConnection reset\n````" in body  # the fence outlasts the text's own


def test_run_staging_locally_without_host(fakes: Path, tmp_path: Path) -> None:
    settings = StagingSettings(container=CONTAINER, command=CHECK)
    report = tmp_path / STAGING_REPORT_FILE
    result = run_staging(settings, exec_host_side=True, values=VALUES, cwd=tmp_path, attempt=1,
                         report_path=report, env=fake_env(fakes, tmp_path))
    assert result.outcome == "passed"
    assert result.command[:3] == ["docker", "exec", CONTAINER]
    assert recorded(tmp_path, "ssh") is None
    assert recorded(tmp_path, "docker") == ["exec", CONTAINER, "python", "staging_check.py",
                                            "--mode", "stub", "--ref", "0123abcd"]
    assert read_document(report).meta["host"] is None


def test_run_staging_without_docker_here_holds(tmp_path: Path) -> None:
    """ORCH-116: no docker CLI on this machine is an environment defect, never a code FAIL."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    settings = StagingSettings(container=CONTAINER, command=CHECK)
    report = tmp_path / STAGING_REPORT_FILE
    result = run_staging(settings, exec_host_side=True, values=VALUES, cwd=tmp_path, attempt=1,
                         report_path=report, env={"PATH": str(empty)})
    assert (result.outcome, result.verdict, result.exit_code) == ("permanent-env", Verdict.HOLD,
                                                                  None)
    meta = read_document(report).meta
    assert meta["outcome"] == "permanent-env"
    assert meta["exit_code"] is None


def test_run_staging_timeout_defers(fakes: Path, tmp_path: Path) -> None:
    settings = StagingSettings(container=CONTAINER, command=CHECK, host=HOST, timeout_s=1)
    env = fake_env(fakes, tmp_path, FAKE_DOCKER_SLEEP="30")
    result = run_staging(settings, exec_host_side=True, values=VALUES, cwd=tmp_path, attempt=3,
                         report_path=tmp_path / STAGING_REPORT_FILE, env=env, grace_s=1)
    assert (result.outcome, result.verdict) == ("transient-infra", Verdict.DEFER)
    assert result.duration_s < 10


def test_run_staging_without_report_path_writes_nothing(fakes: Path, tmp_path: Path) -> None:
    settings = StagingSettings(container=CONTAINER, command=CHECK)
    result = run_staging(settings, exec_host_side=False, values=VALUES, cwd=tmp_path, attempt=1,
                         report_path=None, env=fake_env(fakes, tmp_path))
    assert result.outcome == "passed"
    assert not list(tmp_path.glob("*.md"))


def test_run_staging_calls_on_start_and_logs(fakes: Path, tmp_path: Path) -> None:
    started: list[tuple[int, int]] = []
    settings = StagingSettings(container=CONTAINER, command=CHECK)
    log = tmp_path / "logs" / "job-1-run-1.log"
    env = fake_env(fakes, tmp_path, FAKE_DOCKER_EXIT="1", FAKE_DOCKER_STDERR="boom")
    run_staging(settings, exec_host_side=False, values=VALUES, cwd=tmp_path, attempt=1,
                report_path=None, env=env, log_path=log,
                on_start=lambda pgid, ticks: started.append((pgid, ticks)))
    assert len(started) == 1 and started[0][0] > 0
    assert "boom" in log.read_text()


def test_argv_carries_the_ssh_options_before_the_host() -> None:
    settings = StagingSettings(container=CONTAINER, command=("true",), host=HOST,
                               ssh_options=("-p", "2222", "-F", "/etc/orch/ssh_config"))
    assert build_staging_argv(settings, exec_host_side=True, values=VALUES) == [
        "ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", "2222", "-F",
        "/etc/orch/ssh_config", HOST, "--", "docker exec myapp-staging true"]


def test_the_remote_stop_matches_exactly_the_check_and_not_itself() -> None:
    settings = StagingSettings(container=CONTAINER, command=("python", "c.py", "a.b", "$(x)"),
                               host=HOST, ssh_options=("-p", "2222"))
    docker = ["docker", "exec", CONTAINER, "python", "c.py", "a.b", "$(x)"]
    argv = remote_stop_argv(settings, docker)
    assert argv[:9] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", "2222",
                        HOST, "--"]
    words = shlex.split(argv[-1].replace(";", " ; "))
    pattern = words[words.index("--") + 1]
    assert pattern == r"[d]ocker exec myapp-staging python c\.py a\.b \$\(x\)$"
    assert re.search(pattern, "/usr/bin/python3 /srv/bin/" + " ".join(docker))
    assert not re.search(pattern, argv[-1])  # the stopping shell's own command line
    assert not re.search(pattern, " ".join(docker) + " --more")
