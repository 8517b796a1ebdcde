"""What an agent's output says about its run (SPEC section 5, "Agents").

`parse_output` reads what the CLI printed (`claude-json`: the result object
of `claude -p --output-format json`; `codex-jsonl`: the events of
`codex exec --json`) into an `AgentReport`; `classify_agent_run` turns the
exit, the timeout and that report into the run's outcome and, unless the
stage's gate should decide, a verdict. Pure functions over text.

Only what the CLI itself reports counts (Claude's result object, Codex's own
events), never text a tool printed: a project's test that says "Connection
refused" is not the network failing. The reference outputs are the corpus of
real runs in tests/data/agent_outputs/ (Claude Code 2.1.332, Codex 0.171).
When several faults apply the first wins: authentication (HOLD), then the
provider or the network (DEFER), then any other reported error (RETRY).
Permission denials are counted, never an error by themselves.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orch.model import RunOutcome, Verdict

OUTPUT_KINDS = ("claude-json", "codex-jsonl")
# How much of an agent's error text is kept on the run.
ERROR_LIMIT = 1_000
# How much of the CLI's own text a hold reason quotes.
REASON_LIMIT = 200

FAULT_AUTH = "auth"          # a key or login a person must fix: HOLD
FAULT_PROVIDER = "provider"  # the provider or the network failing: DEFER

# HTTP statuses that are the provider's trouble, not the work's.
PROVIDER_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
AUTH_STATUSES = frozenset({401, 403})

_AUTH_RE = re.compile(
    r"invalid[ _-]?(x-)?api[ _-]?key|incorrect api key|failed to authenticate"
    r"|authentication[ _-]?(error|failed)|\b401 unauthorized|\b403 forbidden"
    r"|unexpected status 40[13]\b|not logged in|please run /login|missing (environment "
    r"variable|api key)|api key (is )?(missing|not set)",
    re.IGNORECASE,
)
_PROVIDER_RE = re.compile(
    r"rate[ _-]?limit|overloaded|quota|usage limit|hit your limit|too many requests"
    r"|high demand|at capacity|server-side issue|unable to connect|connection (error|failed"
    r"|refused|reset)|can't reach the api|error sending request|stream (disconnected|error)"
    r"|request timed out|reconnecting|waiting for network|econnrefused|econnreset|enotfound"
    r"|etimedout|last status: (429|5\d\d)|unexpected status (429|5\d\d)|\b(429|529)\b",
    re.IGNORECASE,
)
# codex announces a retried request as an `error` event; it is not the end.
_CODEX_RECONNECT_RE = re.compile(r"^\s*Reconnecting\.\.\.")


@dataclass(frozen=True)
class AgentReport:
    """What an agent's output says about its run."""

    session_id: str | None = None
    cost_usd: float | None = None
    tokens: int | None = None       # input + output (+ cache) tokens when reported
    error: str | None = None        # set when the output reports an error (hollow success)
    fault: str | None = None        # FAULT_AUTH or FAULT_PROVIDER when the error is one
    denials: int = 0                # permission denials the CLI reported
    denied_tools: tuple[str, ...] = ()
    waiting: bool = False           # the CLI's own last event was a reconnect notice

    @property
    def provider_limit(self) -> bool:
        """Whether the error is the provider's or the network's (a DEFER)."""
        return self.fault == FAULT_PROVIDER


def is_provider_limit(text: str) -> bool:
    """Whether a CLI's own error text names provider or network trouble."""
    return bool(_PROVIDER_RE.search(text))


def is_auth_failure(text: str) -> bool:
    """Whether a CLI's own error text names an authentication failure."""
    return bool(_AUTH_RE.search(text))


def parse_output(kind: str | None, stdout: str) -> AgentReport:
    """Read an agent's stdout as `kind` says; never raises on any text.

    None: nothing to read. 'claude-json': the result object of
    `claude -p --output-format json` (noise before it is skipped).
    'codex-jsonl': the events of `codex exec --json`. An unknown kind is a
    programming error (config validation rejects it): ValueError.
    """
    if kind is None:
        return AgentReport()
    if kind == "claude-json":
        return _parse_claude(stdout)
    if kind == "codex-jsonl":
        return _parse_codex(stdout)
    raise ValueError(f"unknown agent output kind {kind!r} (expected one of {OUTPUT_KINDS})")


def _fault_of(texts: Sequence[str], status: int | None = None) -> str | None:
    """The fault the CLI's own error texts (and HTTP status) name, auth first."""
    joined = " ; ".join(texts)
    if status in AUTH_STATUSES or is_auth_failure(joined):
        return FAULT_AUTH
    if status in PROVIDER_STATUSES or is_provider_limit(joined):
        return FAULT_PROVIDER
    return None


def _cut(problems: Sequence[str]) -> str | None:
    """The problems as one error text cut to ERROR_LIMIT (None without any)."""
    if not problems:
        return None
    return ("; ".join(problems).strip() or "error")[:ERROR_LIMIT]


def _parse_claude(stdout: str) -> AgentReport:
    result = _find_claude_result(stdout)
    if result is None:
        # The raw output stays in the run's log, not in the error: it may echo anything.
        size = len(stdout.encode("utf-8", errors="replace"))
        return AgentReport(error=f"no result object in the output ({size} bytes)")
    session = result.get("session_id")
    problems = _claude_problems(result)
    denials, tools = _claude_denials(result.get("permission_denials"))
    return AgentReport(
        session_id=session if isinstance(session, str) and session else None,
        cost_usd=_number(result.get("total_cost_usd")),
        tokens=_sum_tokens(result.get("usage"), _CLAUDE_TOKEN_KEYS),
        error=_cut(problems),
        fault=_claude_fault(result) if problems else None,
        denials=denials,
        denied_tools=tools,
    )


# Claude reports input_tokens without the cached ones, so all four add up.
_CLAUDE_TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


def _find_claude_result(stdout: str) -> dict[str, Any] | None:
    """The last JSON object with type "result": the whole output, or its last such line.

    The whole output may also be a JSON array of messages (`--verbose`).
    """
    candidates = [stdout, *reversed(stdout.splitlines())]
    for candidate in candidates:
        value = _loads(candidate)
        items = reversed(value) if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict) and item.get("type") == "result":
                return item
    return None


def _claude_problems(result: Mapping[str, Any]) -> list[str]:
    """What a Claude result object reports as gone wrong, most telling first."""
    problems = []
    subtype = result.get("subtype")
    text = result.get("result")
    if result.get("is_error") is True:
        status = result.get("api_error_status")
        named = f" (HTTP {status})" if _int(status) is not None else ""
        problems.append(f"is_error{named}: {text}" if isinstance(text, str) and text
                        else f"is_error{named}")
    if subtype != "success":
        problems.append(f"subtype {subtype}")
    errors = result.get("errors")
    if isinstance(errors, list) and errors:
        problems.append("errors: " + "; ".join(str(item) for item in errors[:5]))
    return problems


def _claude_fault(result: Mapping[str, Any]) -> str | None:
    """Auth or provider trouble, from the CLI's own fields: `api_error_status` first,
    then (only when `is_error`) its result text. An API error with no HTTP status is a
    connection that never got an answer (refused, DNS, timeout): the network's."""
    if result.get("is_error") is not True:
        return None
    status = _int(result.get("api_error_status"))
    text = result.get("result")
    fault = _fault_of([text] if isinstance(text, str) else [], status)
    if fault is None and status is None and result.get("terminal_reason") == "api_error":
        return FAULT_PROVIDER
    return fault


def _claude_denials(value: object) -> tuple[int, tuple[str, ...]]:
    """How many permission denials, and the tools they name (sorted, once each)."""
    if not isinstance(value, list):
        return 0, ()
    tools = sorted({str(item.get("tool_name")) for item in value
                    if isinstance(item, dict) and item.get("tool_name")})
    return len(value), tuple(tools)


def _parse_codex(stdout: str) -> AgentReport:
    session: str | None = None
    tokens: int | None = None
    completed = False
    fatal: list[str] = []
    reconnects: list[str] = []
    last_kind = ""
    for event in _json_lines(stdout):
        kind = event.get("type")
        last_kind = str(kind)
        if kind == "thread.started" and isinstance(event.get("thread_id"), str):
            session = str(event["thread_id"]) or session
        elif kind == "turn.completed":
            completed = True
            # codex's cached_input_tokens are part of input_tokens: not added again.
            used = _sum_tokens(event.get("usage"), ("input_tokens", "output_tokens"))
            if used is not None:
                tokens = (tokens or 0) + used
        elif kind == "turn.failed":
            fatal.append(f"turn.failed: {_codex_message(event.get('error'))}")
        elif kind == "error":
            message = _codex_message(event)
            is_notice = bool(_CODEX_RECONNECT_RE.match(message))
            (reconnects if is_notice else fatal).append(message)
            last_kind = "reconnect" if is_notice else "error"
    if not fatal and not completed:
        fatal.append("no turn.completed event" + (f": {reconnects[-1]}" if reconnects else ""))
    fault = _fault_of([*fatal, *reconnects[-1:]]) if fatal else None
    return AgentReport(session_id=session, tokens=tokens, error=_cut(fatal), fault=fault,
                       waiting=last_kind == "reconnect")


def _codex_message(payload: object) -> str:
    """The `message` of a codex error payload, or a placeholder."""
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        return str(payload["message"])
    return "no message"


def _json_lines(text: str) -> Iterator[dict[str, Any]]:
    """Each line of `text` that is a JSON object; other lines are skipped."""
    for line in text.splitlines():
        value = _loads(line)
        if isinstance(value, dict):
            yield value


def _loads(text: str) -> object:
    """json.loads, or None for anything that is not JSON (or nests too deep)."""
    text = text.strip()
    if not text or text[0] not in "[{":
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _number(value: object) -> float | None:
    """A finite non-negative number, or None (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _sum_tokens(usage: object, keys: Sequence[str]) -> int | None:
    """The sum of the integer token counts of `usage` under `keys`; None when there are none."""
    if not isinstance(usage, dict):
        return None
    counts = [usage[key] for key in keys
              if isinstance(usage.get(key), int) and not isinstance(usage.get(key), bool)]
    return sum(counts) if counts else None


def classify_agent_run(
    exit_code: int | None, timed_out: bool, report: AgentReport
) -> tuple[RunOutcome, Verdict | None]:
    """The outcome of an agent run, and a verdict unless the stage's gate should decide.

    The first that applies wins: an authentication failure is a HOLD (outcome
    `failed`: retrying cannot fix a key); a timeout is a RETRY, or a DEFER when
    the CLI was last waiting on the network; provider or network trouble is a
    DEFER; a non-zero exit is a failed run and exit 0 with an error in the output
    a hollow success, both a RETRY. Only a clean exit 0 returns None: the gate
    then judges the deliverables (permission denials included).
    """
    if report.fault == FAULT_AUTH:
        return RunOutcome.FAILED, Verdict.HOLD
    if timed_out:
        return RunOutcome.TIMEOUT, Verdict.DEFER if report.waiting else Verdict.RETRY
    retry = Verdict.DEFER if report.fault == FAULT_PROVIDER else Verdict.RETRY
    if exit_code != 0:
        return RunOutcome.FAILED, retry
    if report.error is not None:
        return RunOutcome.HOLLOW_SUCCESS, retry
    return RunOutcome.SUCCEEDED, None


def auth_reason(report: AgentReport) -> str:
    """The hold reason of an authentication failure, quoting at most REASON_LIMIT
    characters of what the CLI said."""
    said = " ".join((report.error or "").split())
    if len(said) > REASON_LIMIT:
        said = said[:REASON_LIMIT - 3] + "..."
    return f"agent authentication failed: {said}"


def _int(value: object) -> int | None:
    """An int that is not a bool, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
