"""Agents: argv templates, prompts, environment, and judging what an agent reported.

Pure functions over data and files; the supervisor starts the process and hands
its exit code and stdout back here (SPEC section 5, "Agents").

Argv templates. Each element of a role's `command` may contain `{prompt}`,
`{prompt_file}`, `{task_id}`, `{stage}`, `{round}`, `{artifacts}` and
`{worktree}`. They are replaced inside each element in one pass (a value is
never scanned again, so a prompt that contains `{stage}` stays as written),
never through `str.format` and never through a shell: an element is one argv
entry whatever it contains. Other braces are left alone.

Prompt templates (`docs/templates/prompts/<role>.md`) use a tiny syntax, so
that single braces in Markdown and code are safe:

- `{{name}}` is replaced by the context value `name`; an unknown name becomes
  the empty string. Values are inserted verbatim and never re-scanned.
- `{{#name}} ... {{/name}}` keeps its content only when `name` is non-empty
  (say, the previous review, which exists only from round 1). A tag alone on
  its line takes its line break with it. Sections may nest when their names
  differ; a section without its closing tag is left as written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from orch.artifacts import (
    MERGE_REPORT_FILE,
    QUESTIONS_FILE,
    REVIEW_FILE,
    STAGING_REPORT_FILE,
    TASK_FILE,
    TEST_REPORT_FILE,
    ArtifactError,
    parse_document,
)
from orch.errors import ConfigError
from orch.model import RunOutcome, Verdict

PLACEHOLDERS = ("prompt", "prompt_file", "task_id", "stage", "round", "artifacts", "worktree")
PROMPT_ARG_LIMIT = 100 * 1024
OUTPUT_KINDS = ("claude-json", "codex-jsonl")

# How much of an earlier artifact goes into a prompt; the agent can read the rest.
EXCERPT_LIMIT = 20_000
# How much of an agent's error text is kept on the run.
ERROR_LIMIT = 1_000

_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_VARIABLE_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SECTION_RE = re.compile(
    r"\{\{#\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\n?(.*?)\{\{/\s*\1\s*\}\}\n?", re.DOTALL
)
_ROLE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_ENV_LINE_RE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)")
_PROVIDER_LIMIT_RE = re.compile(
    r"rate[ _-]?limit|overloaded|quota|usage limit|hit your limit|too many requests"
    r"|\b429\b|\b529\b",
    re.IGNORECASE,
)
# codex announces a retried stream error as an `error` event; it is not the end.
_CODEX_RECONNECT_RE = re.compile(r"^\s*Reconnecting\.\.\.")

GENERIC_TEMPLATE = """\
You are the `{{role}}` agent of task {{task_id}} ("{{title}}") in repository
`{{repo}}`, stage `{{stage}}`, round {{round}}.

Read the task in `{{artifacts}}/00-task.md` and the earlier artifacts in
`{{artifacts}}/`. Work only in the worktree `{{worktree}}` (branch `{{branch}}`).
Write this stage's deliverables into `{{artifacts}}/` as Markdown with YAML
front matter.

{{#reject_reason}}
A reviewer rejected the previous result: {{reject_reason}}

{{/reject_reason}}
{{#previous_review}}
The previous review:

{{previous_review}}

{{/previous_review}}
{{#failure_report}}
The previous round failed (`{{failure_report_file}}`):

{{failure_report}}

{{/failure_report}}
Do not push, merge, or touch the default branch `{{default_branch}}`, other
tasks' artifacts, or other stages' deliverables. Nobody answers interactive
questions: decide, and say what you assumed.
"""


class PromptTooLarge(Exception):
    """A `{prompt}` argv element is over PROMPT_ARG_LIMIT bytes (Linux caps one at 128 KiB)."""

    def __init__(self, size: int, limit: int = PROMPT_ARG_LIMIT) -> None:
        super().__init__(
            f"the rendered {{prompt}} argument is {size} bytes, over the {limit}-byte limit; "
            "pass the prompt with {prompt_file} or set `stdin: prompt` on the role"
        )
        self.size = size
        self.limit = limit


# --- argv -----------------------------------------------------------------


def render_argv(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Fill the placeholders of an argv template, element by element, never via a shell.

    A placeholder without a value is left as written, like any other brace.
    Raises PromptTooLarge when an element that holds `{prompt}` renders past
    PROMPT_ARG_LIMIT bytes (UTF-8).
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        return str(values[name]) if name in values else match.group(0)

    argv = []
    for element in template:
        rendered = _PLACEHOLDER_RE.sub(substitute, element)
        if "{prompt}" in element:
            size = len(rendered.encode("utf-8"))
            if size > PROMPT_ARG_LIMIT:
                raise PromptTooLarge(size)
        argv.append(rendered)
    return argv


# --- prompts --------------------------------------------------------------


def prompt_context(
    *,
    task_id: int | str,
    repo: str,
    stage: str,
    round_no: int,
    artifacts: Path,
    worktree: Path,
    branch: str,
    default_branch: str,
    role: str = "",
    reject_reason: str | None = None,
) -> dict[str, str]:
    """Everything a prompt template may name, as strings ("" when absent).

    Reads `00-task.md` (title and body), `01-questions.md` (as
    `answered_questions`, whenever it exists: the analyst is re-run after a
    person answered it), and from round 1 on the report that sent the task
    back (see `previous_round_report`) as `previous_review` or as
    `failure_report` with its `failure_report_file`. Those files come whole
    (front matter too, cut at EXCERPT_LIMIT) inside a fenced Markdown block.
    `reject_reason` is the reason of an `orch reject`, which the caller takes
    from the event. The keys that are also argv placeholders (task_id, stage,
    round, artifacts, worktree) hold the same values the argv needs.
    """
    title, body = _read_task(artifacts / TASK_FILE)
    context = {
        "task_id": str(task_id),
        "title": title,
        "task_body": body,
        "repo": repo,
        "stage": stage,
        "role": role,
        "round": str(round_no),
        "artifacts": str(artifacts),
        "worktree": str(worktree),
        "branch": branch,
        "default_branch": default_branch,
        "reject_reason": (reject_reason or "").strip(),
        "answered_questions": _fenced(_excerpt(artifacts / QUESTIONS_FILE)),
        "previous_review": "",
        "failure_report": "",
        "failure_report_file": "",
    }
    report = previous_round_report(artifacts) if round_no > 0 else None
    if report is not None:
        name, text = report
        text = _fenced(text)
        if name == REVIEW_FILE:
            context["previous_review"] = text
        else:
            context["failure_report"] = text
            context["failure_report_file"] = name
    return context


# Reports that can send a task back to an earlier stage, and how each says "passed".
_ROUND_REPORTS = (REVIEW_FILE, TEST_REPORT_FILE, STAGING_REPORT_FILE, MERGE_REPORT_FILE)


def previous_round_report(artifacts: Path) -> tuple[str, str] | None:
    """The newest of the review/test/staging/merge reports, unless it plainly passed.

    A FAIL is written by the stage that failed, after every report of the
    stages before it, so the newest report is the one that sent the task back.
    One that states a clean pass (a `human` stage rejected after it, say) is
    left out. Returns (file name, text) or None.
    """
    newest: tuple[int, int, str] | None = None
    for order, name in enumerate(_ROUND_REPORTS):
        try:
            mtime = (artifacts / name).stat().st_mtime_ns
        except OSError:
            continue
        if newest is None or (mtime, order) > newest[:2]:
            newest = (mtime, order, name)
    if newest is None:
        return None
    name = newest[2]
    text = _excerpt(artifacts / name)
    if not text or _report_passed(name, text):
        return None
    return name, text


def _report_passed(name: str, text: str) -> bool:
    """Whether a report's front matter states a clean pass (fail closed: unreadable is not)."""
    try:
        meta = parse_document(text).meta
    except ArtifactError:
        return False
    if name == REVIEW_FILE:
        return str(meta.get("verdict", "")).upper() == "APPROVE"
    if name == TEST_REPORT_FILE:
        return (str(meta.get("result", "")).upper() == "PASS"
                and str(meta.get("status", "")).lower() == "passed"
                and meta.get("exit_code") == 0)
    if name == STAGING_REPORT_FILE:
        return str(meta.get("outcome", "")).lower() == "passed"
    return str(meta.get("result", "")).lower() == "merged"


def _read_task(path: Path) -> tuple[str, str]:
    """Title and body of 00-task.md; a malformed file gives its raw text as the body."""
    text = _excerpt(path)
    try:
        document = parse_document(text)
    except ArtifactError:
        return "", text
    return str(document.meta.get("title") or ""), document.body.strip()


def _excerpt(path: Path) -> str:
    """A file's text for a prompt ("" when missing), cut at EXCERPT_LIMIT characters."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    text = text.strip()
    if len(text) > EXCERPT_LIMIT:
        text = text[:EXCERPT_LIMIT] + f"\n\n[... cut here; the whole file is {path}]"
    return text


def _fenced(text: str) -> str:
    """A file's text as a fenced Markdown block (longer than any backtick run in it), or ""."""
    if not text:
        return ""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}markdown\n{text}\n{fence}"


def load_prompt_template(role: str, override_dir: Path | None = None) -> str:
    """The prompt template of a role: the user's override, else the packaged one, else generic.

    `override_dir` is `<home>/templates/prompts/`. A role name that is not a
    plain file name (a path, say) never reads a file: it gets the generic template.
    """
    if not _ROLE_RE.fullmatch(role):
        return GENERIC_TEMPLATE
    if override_dir is not None:
        override = override_dir / f"{role}.md"
        if override.is_file():
            return override.read_text(encoding="utf-8")
    packaged = resources.files("orch").joinpath("data", "templates", "prompts", f"{role}.md")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return GENERIC_TEMPLATE


def render_prompt(template: str, context: Mapping[str, str]) -> str:
    """Render a prompt template (syntax in the module docstring)."""

    def section(match: re.Match[str]) -> str:
        return match.group(2) if context.get(match.group(1)) else ""

    # Sections first, on the template alone (values are never scanned for tags);
    # each pass removes the outermost sections, so nested ones need a few.
    previous = None
    while previous != template:
        previous = template
        template = _SECTION_RE.sub(section, template)
    return _VARIABLE_RE.sub(lambda match: str(context.get(match.group(1), "")), template)


# --- environment ----------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """Read an env file: KEY=VALUE lines, `#` comments, blank lines, optional `export `.

    A value wrapped in matching single or double quotes loses them (nothing
    inside is unescaped); an unquoted value is taken as written after trimming,
    `#` included, since secrets may contain one. Values are secrets: no error
    message ever contains one.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(str(path), "env_file", "is not valid UTF-8") from None
    except OSError as exc:
        raise ConfigError(str(path), "env_file", f"cannot be read: {exc.strerror}") from None
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_LINE_RE.fullmatch(stripped)
        if match is None:
            raise ConfigError(str(path), f"line {number}", "expected KEY=VALUE", line=number)
        value = _unquote(match.group(2).strip())
        if value is None:
            raise ConfigError(str(path), f"line {number}", "expected KEY=VALUE",
                              line=number, hint="a quoted value lacks its closing quote")
        env[match.group(1)] = value
    return env


def _unquote(value: str) -> str | None:
    """Strip one pair of matching quotes; None when a quote opens and never closes."""
    if value[:1] in ("'", '"'):
        quote = value[0]
        if len(value) >= 2 and value.endswith(quote):
            return value[1:-1]
        return None
    return value


def agent_env(
    base: Mapping[str, str],
    env_file: Mapping[str, str],
    orch_vars: Mapping[str, str],
    role_env: Mapping[str, str],
) -> dict[str, str]:
    """An agent's environment: orch's own, then env_file, then ORCH_* vars, then the role's env."""
    env = dict(base)
    for layer in (env_file, orch_vars, role_env):
        env.update({str(key): str(value) for key, value in layer.items()})
    return env


def orch_env_vars(
    *,
    home: Path,
    task_id: int | str,
    job_id: int | str,
    run_id: int | str,
    stage: str,
    round_no: int,
    repo: str,
    artifacts: Path,
    worktree: Path,
) -> dict[str, str]:
    """The ORCH_* variables every agent and runner gets (SPEC section 5)."""
    return {
        "ORCH_HOME": str(home),
        "ORCH_TASK_ID": str(task_id),
        "ORCH_JOB_ID": str(job_id),
        "ORCH_RUN_ID": str(run_id),
        "ORCH_STAGE": stage,
        "ORCH_ROUND": str(round_no),
        "ORCH_REPO": repo,
        "ORCH_ARTIFACTS": str(artifacts),
        "ORCH_WORKTREE": str(worktree),
    }


# --- output ---------------------------------------------------------------


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


# --- judging --------------------------------------------------------------


def judge_agent_run(
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

