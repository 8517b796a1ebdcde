"""What an agent's output says about its run (SPEC section 5, "Agents").

`parse_output` reads what the CLI printed (`claude-json`: the result object
of `claude -p --output-format json`; `codex-jsonl`: the events of
`codex exec --json`) into an `AgentReport`; `classify_agent_run` turns the
exit, the timeout and that report into the run's outcome and, unless the
stage's gate should decide, a verdict. Pure functions over text.
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

_PROVIDER_LIMIT_RE = re.compile(
    r"rate[ _-]?limit|overloaded|quota|usage limit|hit your limit|too many requests"
    r"|\b429\b|\b529\b",
    re.IGNORECASE,
)
# codex announces a retried stream error as an `error` event; it is not the end.
_CODEX_RECONNECT_RE = re.compile(r"^\s*Reconnecting\.\.\.")

@dataclass(frozen=True)
class AgentReport:
    """What an agent's output says about its run."""

    session_id: str | None = None
    cost_usd: float | None = None
    tokens: int | None = None       # input + output (+ cache) tokens when reported
    error: str | None = None        # set when the output reports an error (hollow success)
    provider_limit: bool = False    # rate limit / overloaded / quota / usage limit in the error


def is_provider_limit(text: str) -> bool:
    """Whether an error text names a provider limit (rate limit, overload, quota, 429/529)."""
    return bool(_PROVIDER_LIMIT_RE.search(text))


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


def _report_error(problems: Sequence[str]) -> tuple[str | None, bool]:
    """The problems as one error text cut to ERROR_LIMIT (None without any), and
    whether it names a provider limit."""
    if not problems:
        return None, False
    text = "; ".join(problems).strip() or "error"
    return text[:ERROR_LIMIT], is_provider_limit(text)


def _parse_claude(stdout: str) -> AgentReport:
    result = _find_claude_result(stdout)
    if result is None:
        # The raw output stays in the run's log, not in the error: it may echo anything.
        tail = stdout.strip()[-ERROR_LIMIT:]
        size = len(stdout.encode("utf-8", errors="replace"))
        return AgentReport(error=f"no result object in the output ({size} bytes)",
                           provider_limit=is_provider_limit(tail))
    session = result.get("session_id")
    problems = _claude_problems(result)
    error, limit = _report_error(problems)
    return AgentReport(
        session_id=session if isinstance(session, str) and session else None,
        cost_usd=_number(result.get("total_cost_usd")),
        tokens=_sum_tokens(result.get("usage"), _CLAUDE_TOKEN_KEYS),
        error=error,
        provider_limit=limit,
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
        problems.append(f"is_error: {text}" if isinstance(text, str) and text else "is_error")
    if subtype != "success":
        problems.append(f"subtype {subtype}")
    errors = result.get("errors")
    if isinstance(errors, list) and errors:
        problems.append("errors: " + "; ".join(str(item) for item in errors[:5]))
    denials = result.get("permission_denials")
    if isinstance(denials, list) and denials:
        tools = sorted({str(item.get("tool_name")) for item in denials if isinstance(item, dict)})
        named = f" ({', '.join(tools)})" if tools else ""
        problems.append(f"{len(denials)} permission denial(s){named}")
    return problems


def _parse_codex(stdout: str) -> AgentReport:
    session: str | None = None
    tokens: int | None = None
    completed = False
    fatal: list[str] = []
    reconnects: list[str] = []
    for event in _json_lines(stdout):
        kind = event.get("type")
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
            (reconnects if _CODEX_RECONNECT_RE.match(message) else fatal).append(message)
    if not fatal and not completed:
        fatal.append("no turn.completed event" + (f": {reconnects[-1]}" if reconnects else ""))
    error, limit = _report_error(fatal)
    return AgentReport(session_id=session, tokens=tokens, error=error, provider_limit=limit)


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

    A timeout or a non-zero exit is a failed run; exit 0 with an error in the
    output is a hollow success. Either is a RETRY, or a DEFER when the error
    names a provider limit (waiting it out burns no attempt). Only a clean
    exit 0 returns None: the gate then judges the deliverables.
    """
    if timed_out:
        return RunOutcome.TIMEOUT, Verdict.RETRY
    retry = Verdict.DEFER if report.provider_limit else Verdict.RETRY
    if exit_code != 0:
        return RunOutcome.FAILED, retry
    if report.error is not None:
        return RunOutcome.HOLLOW_SUCCESS, retry
    return RunOutcome.SUCCEEDED, None

