"""Judging real agent outputs: every case of the corpus in tests/data/agent_outputs/.

The corpus holds what Claude Code 2.1.332 and Codex 0.171 really printed against
the scripted stand-in providers (see the READMEs there). Each case is parsed and
classified as the supervisor does; the table below is what SPEC section 5 says
each one must become. A new case in the corpus without a row here fails the test,
so the corpus and the judging never drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orch.agent_output import (
    FAULT_AUTH,
    FAULT_PROVIDER,
    auth_reason,
    classify_agent_run,
    parse_output,
)
from orch.model import RunOutcome, Verdict

CORPUS = Path(__file__).resolve().parents[1] / "data" / "agent_outputs"

GATE = (RunOutcome.SUCCEEDED, None)           # clean exit 0: the stage's gate decides
RETRY = (RunOutcome.FAILED, Verdict.RETRY)
DEFER = (RunOutcome.FAILED, Verdict.DEFER)
HOLD = (RunOutcome.FAILED, Verdict.HOLD)

# case -> (outcome, verdict) when the run ended by itself, and the denials it reports
CLAUDE = {
    "background-task-waits": (GATE, 0), "blocked-sleep": (GATE, 0),
    "budget-exceeded": (RETRY, 0), "denial-nonblocking": (GATE, 1),
    "dns-failure": (DEFER, 0), "does-nothing": (GATE, 0),
    "exit-leaves-detached": (GATE, 0), "http-401": (HOLD, 0), "http-403": (HOLD, 0),
    "http-429": (DEFER, 0), "http-429-retried": (DEFER, 0), "http-500": (DEFER, 0),
    "http-503": (DEFER, 0), "http-529": (DEFER, 0), "request-timeout": (DEFER, 0),
    "sigkill-setsid": (RETRY, 0), "sigkill-tool": (RETRY, 0),
    "sigterm-after-detached": (RETRY, 0), "sigterm-setsid": (RETRY, 0),
    "sigterm-tool": (RETRY, 0), "success-bash": (GATE, 0), "success-write": (GATE, 0),
    "unreachable": (DEFER, 0),
}
CODEX = {
    "commit_denied_plain_sandbox": GATE, "http_401_invalid_key": HOLD,
    "http_429_quota": DEFER, "http_429_rate_limit": DEFER, "http_500_high_demand": DEFER,
    "http_500_high_demand_default_retries": DEFER, "http_503_at_capacity": DEFER,
    "model_does_nothing": GATE, "patch_denied_outside_workspace": GATE,
    "provider_unreachable": DEFER, "provider_unreachable_unbounded_default": DEFER,
    "sigkill_group_sandboxed": RETRY, "sigkill_group_unsandboxed": RETRY,
    "sigkill_wrapper_only_sandboxed": RETRY, "sigterm_group_sandboxed": RETRY,
    "sigterm_group_unsandboxed": RETRY, "success_commit": GATE, "success_file_write": GATE,
}


def _cases(cli: str) -> list[str]:
    return sorted(path.name for path in (CORPUS / cli).iterdir() if path.is_dir())


def _codex_exit(case: Path) -> int | None:
    meta = case / "meta.json"
    return json.loads(meta.read_text())["exit_code"] if meta.exists() else None


def test_every_corpus_case_has_an_expectation() -> None:
    assert _cases("claude") == sorted(CLAUDE)
    assert _cases("codex") == sorted(CODEX)


@pytest.mark.parametrize("name", sorted(CLAUDE))
def test_claude_case(name: str) -> None:
    case = CORPUS / "claude" / name
    expected, denials = CLAUDE[name]
    report = parse_output("claude-json", (case / "stdout.txt").read_text(encoding="utf-8"))
    exit_code = int((case / "exit_code").read_text())
    assert classify_agent_run(exit_code, False, report) == expected
    assert report.denials == denials
    if expected is GATE:
        assert report.error is None and report.session_id and report.cost_usd
    if expected is HOLD:
        assert report.fault == FAULT_AUTH
        assert auth_reason(report).startswith("agent authentication failed: is_error (HTTP 40")


def test_claude_denial_names_the_tool() -> None:
    text = (CORPUS / "claude" / "denial-nonblocking" / "stdout.txt").read_text()
    assert parse_output("claude-json", text).denied_tools == ("Bash",)


@pytest.mark.parametrize("name", sorted(CODEX))
def test_codex_case(name: str) -> None:
    case = CORPUS / "codex" / name
    report = parse_output("codex-jsonl", (case / "stdout.jsonl").read_text(encoding="utf-8"))
    exit_code = _codex_exit(case)
    assert classify_agent_run(exit_code, False, report) == CODEX[name]
    if CODEX[name] is GATE:
        assert report.error is None and report.session_id and report.tokens


def test_codex_waiting_for_the_network_at_a_timeout_is_a_defer() -> None:
    """Codex with the network down never exits; at timeout_s its last events are
    reconnect notices, so the run is DEFERred instead of burning an attempt."""
    text = (CORPUS / "codex" / "provider_unreachable_unbounded_default" / "stdout.jsonl")
    report = parse_output("codex-jsonl", text.read_text(encoding="utf-8"))
    assert report.waiting and report.fault == FAULT_PROVIDER
    assert classify_agent_run(None, True, report) == (RunOutcome.TIMEOUT, Verdict.DEFER)


def test_a_timeout_mid_work_is_a_retry() -> None:
    text = (CORPUS / "codex" / "sigterm_group_sandboxed" / "stdout.jsonl").read_text()
    report = parse_output("codex-jsonl", text)
    assert classify_agent_run(None, True, report) == (RunOutcome.TIMEOUT, Verdict.RETRY)


def test_a_tools_output_saying_connection_refused_is_not_the_network() -> None:
    """Only the CLI's own fields count: a project test that prints "Connection refused"
    in a Bash tool of a successful run leaves the run to its gate."""
    text = (CORPUS / "claude" / "success-bash" / "stdout.txt").read_text()
    result = json.loads(text)
    result["result"] = "The tests said: ConnectionRefusedError: Connection refused (429)"
    report = parse_output("claude-json", json.dumps(result))
    assert report.fault is None
    assert classify_agent_run(0, False, report) == GATE
