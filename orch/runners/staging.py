"""The staging-runner (SPEC section 8): run the repo's staging check in its container.

The check runs as `docker exec CONTAINER COMMAND...`, on this machine or, with a
`host` and the flag `staging_runner_exec_host_side`, on the staging host over
ssh. orch builds an argv, never a shell string of its own: the only string a
shell ever splits is the POSIX-quoted REMOTE that ssh hands to the host's shell,
and it splits back into exactly the argv we meant.

Each attempt is classified in four ways, because infrastructure trouble must
never roll code back (incident ORCH-116: a missing `docker` CLI was taken for a
failing check and every task was sent back to development):

- `passed`: exit 0;
- `failed`: the check ran and failed (FAIL: back to the stage's `on_fail`);
- `permanent-env`: the channel or the environment cannot work until a person
  fixes it (HOLD at once);
- `transient-infra`: the channel may work on a later try (DEFER).

Bounding the DEFERs is the engine's job, not this module's: after the repo's
`staging.transient_retries` DEFERs of one job the engine turns the next
transient failure into a HOLD. This module only reports each attempt.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.artifacts import write_document
from orch.model import Verdict
from orch.procs import run_in_group
from orch.timeutil import now_iso

PASSED = "passed"
FAILED = "failed"
PERMANENT_ENV = "permanent-env"
TRANSIENT_INFRA = "transient-infra"

PLACEHOLDERS = ("commit", "branch", "task_id")
_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")

SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10")

VERDICT_BY_OUTCOME: dict[str, Verdict] = {
    PASSED: Verdict.PASS,
    FAILED: Verdict.FAIL,
    PERMANENT_ENV: Verdict.HOLD,
    TRANSIENT_INFRA: Verdict.DEFER,
}

SUMMARY_BY_OUTCOME: dict[str, str] = {
    PASSED: "The staging check passed: the task moves on.",
    FAILED: (
        "The staging check ran and failed: a code failure, the task returns to"
        " its on_fail stage."
    ),
    PERMANENT_ENV: (
        "Environment problem (the channel or the container cannot work until"
        " someone fixes it): the task is held, code is not rolled back."
    ),
    TRANSIENT_INFRA: (
        "Infrastructure problem: the task is deferred and tried again later,"
        " code is not rolled back (held after staging.transient_retries deferrals)."
    ),
}


@dataclass(frozen=True)
class Signature:
    """One known message of OpenSSH, Docker or a shell, and what it means."""

    pattern: str
    outcome: str
    why: str

    def find(self, text: str) -> str | None:
        """The stripped line of text where this signature appears, or None."""
        match = re.search(self.pattern, text, re.IGNORECASE)
        if match is None:
            return None
        start = text.rfind("\n", 0, match.start()) + 1
        end = text.find("\n", match.start())
        return text[start : end if end >= 0 else len(text)].strip()


# Matched against stderr, case-insensitively; the permanent ones are tried
# first, so they win when both kinds appear. Patterns are regexes, most of
# them plain phrases taken from the real messages (shown in `why`).
PERMANENT_SIGNATURES: tuple[Signature, ...] = (
    Signature(r"permission denied \(publickey", PERMANENT_ENV,
              "ssh: user@host: Permission denied (publickey)."),
    Signature(r"host key verification failed", PERMANENT_ENV,
              "ssh: Host key verification failed."),
    # A DNS outage ("Temporary failure in name resolution") is transient; an
    # unknown name ("Name or service not known") is not.
    Signature(r"could not resolve hostname(?![^\n]*temporary failure)", PERMANENT_ENV,
              "ssh: Could not resolve hostname x: Name or service not known"),
    Signature(r"no such container", PERMANENT_ENV,
              "Error response from daemon: No such container: x"),
    Signature(r"executable file not found", PERMANENT_ENV,
              'OCI runtime exec failed: ... exec: "x": executable file not found in $PATH'),
    # Only the runtime's own message: a check's own FileNotFoundError is a FAIL.
    Signature(r"oci runtime exec failed[^\n]*no such file or directory", PERMANENT_ENV,
              "OCI runtime exec failed: ... stat /x: no such file or directory: unknown"),
    Signature(r"command not found", PERMANENT_ENV,
              "bash: line 1: docker: command not found"),
    Signature(r"container [^\s]+ is (not running|paused)", PERMANENT_ENV,
              "Error response from daemon: Container abc is not running"),
    Signature(r"permission denied while trying to connect to the docker daemon", PERMANENT_ENV,
              "permission denied while trying to connect to the Docker daemon socket at ..."),
)

TRANSIENT_SIGNATURES: tuple[Signature, ...] = (
    Signature(r"connection refused", TRANSIENT_INFRA,
              "ssh: connect to host x port 22: Connection refused"),
    Signature(r"connection reset", TRANSIENT_INFRA,
              "Connection reset by 10.0.0.5 port 22"),
    Signature(r"connection timed out", TRANSIENT_INFRA,
              "ssh: connect to host x port 22: Connection timed out"),
    Signature(r"operation timed out", TRANSIENT_INFRA,
              "ssh: connect to host x port 22: Operation timed out"),
    Signature(r"connection closed by", TRANSIENT_INFRA,
              "Connection closed by 10.0.0.5 port 22"),
    Signature(r"kex_exchange_identification", TRANSIENT_INFRA,
              "kex_exchange_identification: read: Connection reset by peer"),
    Signature(r"network is unreachable", TRANSIENT_INFRA,
              "ssh: connect to host x port 22: Network is unreachable"),
    Signature(r"no route to host", TRANSIENT_INFRA,
              "ssh: connect to host x port 22: No route to host"),
    Signature(r"temporary failure in name resolution", TRANSIENT_INFRA,
              "ssh: Could not resolve hostname x: Temporary failure in name resolution"),
    Signature(r"connection to [^\n]* closed by remote host", TRANSIENT_INFRA,
              "Connection to staging.internal closed by remote host."),
    Signature(r"client_loop: send disconnect", TRANSIENT_INFRA,
              "client_loop: send disconnect: Broken pipe"),
    Signature(r"packet_write_wait", TRANSIENT_INFRA,
              "packet_write_wait: Connection to 10.0.0.5 port 22: Broken pipe"),
    Signature(r"timeout, server [^\n]* not responding", TRANSIENT_INFRA,
              "Timeout, server staging.internal not responding."),
    Signature(r"cannot connect to the docker daemon", TRANSIENT_INFRA,
              "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
              " Is the docker daemon running?"),
    Signature(r"error response from daemon", TRANSIENT_INFRA,
              "Error response from daemon: ... (any other daemon error)"),
)

SIGNATURES: tuple[Signature, ...] = PERMANENT_SIGNATURES + TRANSIENT_SIGNATURES

# Exit statuses that mean something without any stderr text.
COMMAND_CANNOT_RUN = (126, 127)  # POSIX shells and docker exec: not executable / not found
SSH_FAILURE = 255  # ssh's own failure (the remote command's status otherwise)


@dataclass(frozen=True)
class StagingSettings:
    """A repo's validated `staging` section (SPEC section 2)."""

    container: str
    command: tuple[str, ...]
    host: str | None = None
    timeout_s: float = 600
    transient_retries: int = 3

    def __post_init__(self) -> None:
        # A backstop behind config validation: a leading '-' would be read as
        # an option by ssh or docker, so it is never passed on.
        object.__setattr__(self, "command", tuple(self.command))
        if not self.container or self.container.startswith("-"):
            raise ValueError(f"staging container {self.container!r} is not a container name")
        if self.host is not None and (not self.host or self.host.startswith("-")):
            raise ValueError(f"staging host {self.host!r} is not a host name")
        if not self.command:
            raise ValueError("staging command is empty")


@dataclass(frozen=True)
class StagingOutcome:
    """What one staging attempt did and what it means for the task."""

    outcome: str
    verdict: Verdict
    exit_code: int | None
    command: list[str]
    duration_s: float
    stderr_tail: str
    meta: dict[str, Any] = field(default_factory=dict)


def substitute(command: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Replace `{commit}`, `{branch}` and `{task_id}` in each element.

    A plain textual replacement in one pass (never str.format): other braces
    stay as written, a placeholder without a value stays as written, and a
    value that itself contains `{branch}` is not expanded again.
    """

    def replace(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return [_PLACEHOLDER_RE.sub(replace, element) for element in command]


def runs_over_ssh(settings: StagingSettings, *, exec_host_side: bool) -> bool:
    """True when the check runs on the staging host through ssh."""
    return bool(settings.host) and exec_host_side


def build_staging_argv(
    settings: StagingSettings, *, exec_host_side: bool, values: Mapping[str, str]
) -> list[str]:
    """The argv of one staging attempt.

    Over ssh: `ssh -o BatchMode=yes -o ConnectTimeout=10 HOST -- REMOTE`, where
    REMOTE is the POSIX-quoted join of `docker exec CONTAINER COMMAND...`, so
    the host's shell splits it back into exactly that argv. Otherwise
    `docker exec CONTAINER COMMAND...` on this machine.
    """
    docker = ["docker", "exec", settings.container, *substitute(settings.command, values)]
    if not runs_over_ssh(settings, exec_host_side=exec_host_side):
        return docker
    assert settings.host is not None
    return ["ssh", *SSH_OPTIONS, settings.host, "--", shlex.join(docker)]


def match_signature(stderr: str, signatures: Sequence[Signature]) -> tuple[Signature, str] | None:
    """The first of `signatures` found in stderr, with the line it was found on."""
    for signature in signatures:
        line = signature.find(stderr)
        if line is not None:
            return signature, line
    return None


def explain_staging_outcome(
    exit_code: int | None,
    stderr: str,
    *,
    timed_out: bool = False,
    start_error: str | None = None,
) -> tuple[str, str]:
    """The outcome of one attempt and a one-line reason for the report.

    The order encodes the rules: a start error, a timeout, exit 0, a local
    client killed by a signal; then permanent signatures or 126/127 (permanent
    wins), then transient signatures or 255, and only then a failed check.
    """
    if start_error is not None:
        return PERMANENT_ENV, f"cannot start the command: {start_error}"
    if timed_out:
        return TRANSIENT_INFRA, "timed out"
    if exit_code == 0:
        return PASSED, "exit 0"
    if exit_code is None or exit_code < 0:
        # Our own ssh/docker client was killed: the channel broke, not the
        # check (a remote check killed by a signal comes back as 128+n).
        return TRANSIENT_INFRA, f"the local client was killed (exit {exit_code})"
    permanent = match_signature(stderr, PERMANENT_SIGNATURES)
    if permanent is not None:
        return PERMANENT_ENV, f"exit {exit_code}: {permanent[1]}"
    if exit_code in COMMAND_CANNOT_RUN:
        return PERMANENT_ENV, f"exit {exit_code}: the command cannot be found or run"
    transient = match_signature(stderr, TRANSIENT_SIGNATURES)
    if transient is not None:
        return TRANSIENT_INFRA, f"exit {exit_code}: {transient[1]}"
    if exit_code == SSH_FAILURE:
        return TRANSIENT_INFRA, "exit 255: ssh failed without a known message"
    return FAILED, f"exit {exit_code}: the check failed"


def classify_staging_outcome(
    exit_code: int | None,
    stderr: str,
    *,
    timed_out: bool = False,
    start_error: str | None = None,
) -> str:
    """passed, failed, permanent-env or transient-infra for one attempt (pure).

    A command that cannot start (ssh or docker missing here) is permanent-env;
    a timeout is transient-infra; exit 0 passes. Any other exit is
    disambiguated by scanning stderr for the SIGNATURES (permanent ones win);
    without one, 126/127 are permanent-env, 255 (ssh's own failure) is
    transient-infra and anything else is a failed check.
    """
    outcome, _ = explain_staging_outcome(
        exit_code, stderr, timed_out=timed_out, start_error=start_error
    )
    return outcome


def fenced(text: str) -> str:
    """A Markdown code block whose fence no backtick run in text can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text.rstrip()}\n{fence}"


def render_report_body(outcome: str, reason: str, stderr_tail: str) -> str:
    """The report's body: what the outcome means for the task, and stderr's tail."""
    stderr_part = fenced(stderr_tail) if stderr_tail.strip() else "(stderr was empty)"
    return (
        f"# Staging report\n\n{SUMMARY_BY_OUTCOME[outcome]}\n\n"
        f"Reason: {reason}.\n\n## stderr (tail)\n\n{stderr_part}\n"
    )


def report_meta(
    settings: StagingSettings,
    *,
    exec_host_side: bool,
    outcome: str,
    reason: str,
    exit_code: int | None,
    attempt: int,
    argv: list[str],
    duration_s: float,
    started_at: str,
    finished_at: str,
) -> dict[str, Any]:
    """The front matter of 14-staging-report.md (the gate reads `outcome`)."""
    return {
        "outcome": outcome,
        "exit_code": exit_code,
        "attempt": attempt,
        "command": list(argv),
        "duration_s": round(duration_s, 3),
        "started_at": started_at,
        "finished_at": finished_at,
        "host": settings.host if runs_over_ssh(settings, exec_host_side=exec_host_side) else None,
        "container": settings.container,
        "reason": reason,
    }


def run_staging(
    settings: StagingSettings,
    *,
    exec_host_side: bool,
    values: Mapping[str, str],
    cwd: Path,
    attempt: int,
    report_path: Path | None,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    on_start: Callable[[int, int], None] | None = None,
    heartbeat: Callable[[], None] | None = None,
    heartbeat_interval_s: float = 10.0,
    grace_s: float = 5.0,
    mark: str | None = None,
) -> StagingOutcome:
    """Run one staging attempt, classify it and write its report.

    The command runs in its own process group (orch.procs.run_in_group), killed
    whole at `settings.timeout_s`. `attempt` is the number of this job's runs
    so far, this one included. The report is written before the caller commits
    the verdict. This function never HOLDs for too many DEFERs: the engine
    counts them against `settings.transient_retries`.
    """
    argv = build_staging_argv(settings, exec_host_side=exec_host_side, values=values)
    started_at = now_iso()
    run = run_in_group(
        argv, cwd=cwd, env=env, timeout_s=settings.timeout_s, log_path=log_path,
        on_start=on_start, heartbeat=heartbeat,
        heartbeat_interval_s=heartbeat_interval_s, grace_s=grace_s, mark=mark,
    )
    outcome, reason = explain_staging_outcome(
        run.exit_code, run.stderr_tail, timed_out=run.timed_out, start_error=run.start_error
    )
    meta = report_meta(
        settings, exec_host_side=exec_host_side, outcome=outcome, reason=reason,
        exit_code=run.exit_code, attempt=attempt, argv=argv, duration_s=run.duration_s,
        started_at=started_at, finished_at=now_iso(),
    )
    if report_path is not None:
        write_document(report_path, meta, render_report_body(outcome, reason, run.stderr_tail))
    return StagingOutcome(outcome, VERDICT_BY_OUTCOME[outcome], run.exit_code, argv,
                          run.duration_s, run.stderr_tail, meta)
