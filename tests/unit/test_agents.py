"""orch.agents: argv templates, prompts, env files, output parsing, judging."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orch.agent_output import AgentReport, classify_agent_run, is_provider_limit, parse_output
from orch.agents import (
    PLACEHOLDERS,
    PROMPT_ARG_LIMIT,
    PromptTooLarge,
    agent_env,
    orch_env_vars,
    read_env_file,
    render_argv,
)
from orch.errors import ConfigError
from orch.model import RunOutcome, Verdict
from orch.prompts import (
    GENERIC_TEMPLATE,
    load_prompt_template,
    previous_round_report,
    prompt_context,
    render_prompt,
)

ROLES = ("analyst", "developer", "reviewer", "tester")
DELIVERABLES = {
    "analyst": "02-analysis.md",
    "developer": "10-dev-report.md",
    "reviewer": "12-review.md",
    "tester": "13-test-report.md",
}


# --- render_argv ------------------------------------------------------------


@pytest.mark.parametrize("name", PLACEHOLDERS)
def test_render_argv_replaces_each_placeholder(name: str) -> None:
    values = {key: f"<{key}>" for key in PLACEHOLDERS}
    argv = render_argv(["tool", f"--x={{{name}}}", f"{{{name}}}"], values)
    assert argv == ["tool", f"--x=<{name}>", f"<{name}>"]


def test_render_argv_several_placeholders_in_one_element() -> None:
    argv = render_argv(
        ["{task_id}-{stage}-r{round}"], {"task_id": "7", "stage": "dev", "round": "2"}
    )
    assert argv == ["7-dev-r2"]


def test_render_argv_leaves_other_braces_alone() -> None:
    template = ["jq", "{.result}", "{}", "{{prompt}}", "{unknown}", "{ prompt }", "{0}"]
    argv = render_argv(template, {"prompt": "P"})
    assert argv == ["jq", "{.result}", "{}", "{P}", "{unknown}", "{ prompt }", "{0}"]


def test_render_argv_placeholder_without_value_stays() -> None:
    assert render_argv(["{prompt_file}"], {"prompt": "x"}) == ["{prompt_file}"]


def test_render_argv_injection_stays_one_verbatim_element() -> None:
    evil = 'x"; rm -rf / ; echo $(id) `whoami` && {stage} | cat > /etc/passwd'
    argv = render_argv(["claude", "-p", "{prompt}"], {"prompt": evil, "stage": "S"})
    assert argv == ["claude", "-p", evil]  # one element, nothing re-expanded


def test_render_argv_value_is_not_rescanned() -> None:
    argv = render_argv(["{task_id}{stage}"], {"task_id": "{stage}", "stage": "dev"})
    assert argv == ["{stage}dev"]


def test_render_argv_prompt_at_limit_passes_and_one_over_fails() -> None:
    at_limit = "a" * PROMPT_ARG_LIMIT
    assert render_argv(["{prompt}"], {"prompt": at_limit}) == [at_limit]
    with pytest.raises(PromptTooLarge) as caught:
        render_argv(["{prompt}"], {"prompt": at_limit + "a"})
    assert "{prompt_file}" in str(caught.value)
    assert "stdin: prompt" in str(caught.value)
    assert caught.value.size == PROMPT_ARG_LIMIT + 1


def test_render_argv_limit_counts_utf8_bytes_and_the_whole_element() -> None:
    # 'é' is two bytes: half the limit in characters is exactly at the limit.
    assert render_argv(["{prompt}"], {"prompt": "é" * (PROMPT_ARG_LIMIT // 2)})
    with pytest.raises(PromptTooLarge):
        render_argv(["-p={prompt}"], {"prompt": "é" * (PROMPT_ARG_LIMIT // 2)})


def test_render_argv_big_value_in_other_placeholder_is_not_refused() -> None:
    big = "w" * (PROMPT_ARG_LIMIT + 10)
    assert render_argv(["{worktree}"], {"worktree": big}) == [big]


# --- render_prompt / load_prompt_template -------------------------------------


def test_render_prompt_variables_and_unknown_names() -> None:
    text = render_prompt("id={{task_id}} x={{ nope }} code={ a: 1 } {{task_id}}", {"task_id": "9"})
    assert text == "id=9 x= code={ a: 1 } 9"


def test_render_prompt_values_are_not_rescanned() -> None:
    text = render_prompt("{{body}}", {"body": "{{secret}} {{#x}}kept{{/x}}", "secret": "S"})
    assert text == "{{secret}} {{#x}}kept{{/x}}"


def test_render_prompt_section_on_and_off() -> None:
    template = (
        "start\n{{#previous_review}}\n## Review\n{{previous_review}}\n{{/previous_review}}\nend\n"
    )
    assert render_prompt(template, {"previous_review": ""}) == "start\nend\n"
    assert render_prompt(template, {}) == "start\nend\n"
    on = render_prompt(template, {"previous_review": "fix it"})
    assert on == "start\n## Review\nfix it\nend\n"


def test_render_prompt_inline_and_nested_sections() -> None:
    template = "a{{#x}}[{{#y}}Y{{/y}}X]{{/x}}b"
    assert render_prompt(template, {"x": "1", "y": "1"}) == "a[YX]b"
    assert render_prompt(template, {"x": "1"}) == "a[X]b"
    assert render_prompt(template, {"y": "1"}) == "ab"


def test_render_prompt_unclosed_section_left_as_written() -> None:
    assert render_prompt("{{#x}} tail", {"x": "1"}) == "{{#x}} tail"


def test_load_prompt_template_packaged() -> None:
    for role in ROLES:
        text = load_prompt_template(role)
        assert DELIVERABLES[role] in text


def test_load_prompt_template_override(tmp_path: Path) -> None:
    (tmp_path / "developer.md").write_text("mine {{task_id}}", encoding="utf-8")
    assert load_prompt_template("developer", tmp_path) == "mine {{task_id}}"
    # roles without an override fall back to the packaged file
    assert "12-review.md" in load_prompt_template("reviewer", tmp_path)


def test_load_prompt_template_unknown_role_is_generic(tmp_path: Path) -> None:
    assert load_prompt_template("docs-writer", tmp_path) == GENERIC_TEMPLATE
    (tmp_path / "secret.md").write_text("nope", encoding="utf-8")
    assert (
        load_prompt_template("../" + tmp_path.name + "/secret", tmp_path.parent) == GENERIC_TEMPLATE
    )


def _task_dir(tmp_path: Path) -> Path:
    artifacts = tmp_path / "tasks" / "7"
    artifacts.mkdir(parents=True)
    (artifacts / "00-task.md").write_text(
        "---\nid: 7\nrepo: app\ntitle: Add a flag\n---\nThe body {with braces}.\n", encoding="utf-8"
    )
    return artifacts


def _context(artifacts: Path, round_no: int = 0, **extra: str) -> dict[str, str]:
    return prompt_context(
        task_id=7,
        repo="app",
        stage="development",
        round_no=round_no,
        artifacts=artifacts,
        worktree=Path("/wt/app/7"),
        branch="orch/7",
        default_branch="main",
        role="developer",
        **extra,
    )


def test_prompt_context_reads_the_task(tmp_path: Path) -> None:
    context = _context(_task_dir(tmp_path))
    assert context["title"] == "Add a flag"
    assert context["task_body"] == "The body {with braces}."
    assert context["task_id"] == "7" and context["round"] == "0"
    assert context["previous_review"] == context["failure_report"] == ""
    assert context["answered_questions"] == "" and context["reject_reason"] == ""


def test_prompt_context_round_zero_ignores_reports(tmp_path: Path) -> None:
    artifacts = _task_dir(tmp_path)
    (artifacts / "12-review.md").write_text("---\nverdict: REQUEST_CHANGES\n---\nbad\n")
    assert _context(artifacts, 0)["previous_review"] == ""
    assert "bad" in _context(artifacts, 1)["previous_review"]


def _write(path: Path, text: str, mtime: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, (mtime, mtime))


def test_previous_round_report_picks_newest_failure(tmp_path: Path) -> None:
    artifacts = _task_dir(tmp_path)
    _write(artifacts / "12-review.md", "---\nverdict: APPROVE\n---\nok\n", 1000)
    _write(
        artifacts / "13-test-report.md",
        "---\nresult: FAIL\nstatus: failed\nexit_code: 1\n---\ntest_x failed\n",
        2000,
    )
    context = _context(artifacts, 1)
    assert context["previous_review"] == ""
    assert context["failure_report_file"] == "13-test-report.md"
    assert "test_x failed" in context["failure_report"]
    # a newer REQUEST_CHANGES review wins over the old test failure
    _write(artifacts / "12-review.md", "---\nverdict: REQUEST_CHANGES\n---\nrename x\n", 3000)
    context = _context(artifacts, 2)
    assert "rename x" in context["previous_review"] and context["failure_report"] == ""


def test_previous_round_report_skips_a_clean_pass(tmp_path: Path) -> None:
    artifacts = _task_dir(tmp_path)
    _write(artifacts / "14-staging-report.md", "---\noutcome: passed\n---\n", 1000)
    assert previous_round_report(artifacts) is None
    # fail closed: a test report whose keys disagree is shown
    _write(
        artifacts / "13-test-report.md",
        "---\nresult: PASS\nstatus: passed\nexit_code: 1\n---\n",
        2000,
    )
    assert previous_round_report(artifacts) is not None


def test_prompt_context_questions_and_reject_reason(tmp_path: Path) -> None:
    artifacts = _task_dir(tmp_path)
    (artifacts / "01-questions.md").write_text(
        "---\nblocking: true\n---\n1. Which DB?\nA: sqlite\n"
    )
    context = _context(artifacts, reject_reason="  too slow  ")
    assert "A: sqlite" in context["answered_questions"]
    assert context["reject_reason"] == "too slow"


def test_prompt_context_without_task_file(tmp_path: Path) -> None:
    context = _context(tmp_path / "missing")
    assert context["title"] == "" and context["task_body"] == ""


@pytest.mark.parametrize("role", ROLES)
def test_every_packaged_prompt_renders_fully(tmp_path: Path, role: str) -> None:
    artifacts = _task_dir(tmp_path)
    full = _context(artifacts, 1, reject_reason="REJECTED-BECAUSE")
    full |= {
        "previous_review": "PREVIOUS-REVIEW",
        "failure_report": "FAILURE-REPORT",
        "failure_report_file": "13-test-report.md",
        "answered_questions": "ANSWERED-QUESTIONS",
        "role": role,
    }
    text = render_prompt(load_prompt_template(role), full)
    assert "{{" not in text and "}}" not in text
    assert DELIVERABLES[role] in text
    assert str(artifacts) in text and "/wt/app/7" in text and "Add a flag" in text
    assert "REJECTED-BECAUSE" in text
    assert "push" in text  # says what not to do
    empty = render_prompt(load_prompt_template(role), _context(artifacts, 0))
    for marker in ("PREVIOUS-REVIEW", "FAILURE-REPORT", "ANSWERED-QUESTIONS", "REJECTED-BECAUSE"):
        assert marker not in empty
    assert "{{" not in empty


def test_role_specific_prompt_contents() -> None:
    analyst = load_prompt_template("analyst")
    assert "blocking: true" in analyst and "01-questions.md" in analyst
    assert "{{#answered_questions}}" in analyst
    assert "verdict: APPROVE" in load_prompt_template("reviewer")
    assert "REQUEST_CHANGES" in load_prompt_template("reviewer")
    tester = load_prompt_template("tester")
    assert all(key in tester for key in ("result:", "status:", "exit_code:"))
    assert "{{#previous_review}}" in load_prompt_template("developer")


def test_generic_template_renders() -> None:
    text = render_prompt(GENERIC_TEMPLATE, {"role": "docs", "task_id": "3"})
    assert "`docs` agent of task 3" in text and "{{" not in text


# --- env --------------------------------------------------------------------


def test_read_env_file(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text(
        "# a comment\n\n"
        "PLAIN=value\n"
        "export EXPORTED=yes\n"
        "  SPACED = padded  \n"
        'DOUBLE="with spaces # not a comment"\n'
        "SINGLE='$NOT_EXPANDED'\n"
        "HASH=abc#def\n"
        "EMPTY=\n"
        "EQUALS=a=b=c\n"
        "PLAIN=again\n",
        encoding="utf-8",
    )
    assert read_env_file(path) == {
        "PLAIN": "again",
        "EXPORTED": "yes",
        "SPACED": "padded",
        "DOUBLE": "with spaces # not a comment",
        "SINGLE": "$NOT_EXPANDED",
        "HASH": "abc#def",
        "EMPTY": "",
        "EQUALS": "a=b=c",
    }


@pytest.mark.parametrize(
    "bad",
    [
        "no-equals-sk-SECRET123",
        "1BAD=sk-SECRET123",
        'KEY="sk-SECRET123',
        "KEY='sk-SECRET123\"",
        "export sk-SECRET123",
        "MY-KEY=sk-SECRET123",
    ],
)
def test_read_env_file_bad_line_names_the_line_not_the_value(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "env"
    path.write_text(f"OK=1\n# comment\n{bad}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        read_env_file(path)
    message = str(caught.value)
    assert caught.value.line == 3
    assert f"{path}:3" in message and "line 3" in message and "expected KEY=VALUE" in message
    assert "SECRET123" not in message


def test_read_env_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        read_env_file(tmp_path / "nope")


def test_agent_env_precedence() -> None:
    env = agent_env(
        {"PATH": "/bin", "A": "base", "B": "base", "C": "base", "D": "base"},
        {"B": "file", "C": "file", "D": "file"},
        {"C": "orch", "D": "orch"},
        {"D": "role"},
    )
    assert env == {"PATH": "/bin", "A": "base", "B": "file", "C": "orch", "D": "role"}


def test_orch_env_vars_names() -> None:
    env = orch_env_vars(
        home=Path("/h"),
        task_id=1,
        job_id=2,
        run_id=3,
        stage="review",
        round_no=0,
        repo="app",
        artifacts=Path("/h/tasks/1"),
        worktree=Path("/w"),
    )
    assert sorted(env) == sorted(
        f"ORCH_{name}"
        for name in (
            "HOME",
            "TASK_ID",
            "JOB_ID",
            "RUN_ID",
            "STAGE",
            "ROUND",
            "REPO",
            "ARTIFACTS",
            "WORKTREE",
        )
    )
    assert env["ORCH_ROUND"] == "0" and env["ORCH_TASK_ID"] == "1"


# --- parse_output: claude-json -------------------------------------------------


def _claude(**overrides: object) -> str:
    result: dict[str, object] = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "duration_ms": 1200,
        "num_turns": 4,
        "result": "Done.",
        "session_id": "5f0c-abc",
        "total_cost_usd": 0.1234,
        "usage": {
            "input_tokens": 100,
            "output_tokens": 50,
            "cache_creation_input_tokens": 10,
            "cache_read_input_tokens": 5,
        },
        "permission_denials": [],
    }
    result.update(overrides)
    return json.dumps(result)


def test_parse_output_none_kind() -> None:
    assert parse_output(None, "anything") == AgentReport()


def test_parse_output_unknown_kind() -> None:
    with pytest.raises(ValueError, match="aider-text"):
        parse_output("aider-text", "")


def test_claude_success() -> None:
    report = parse_output("claude-json", _claude() + "\n")
    assert report == AgentReport(session_id="5f0c-abc", cost_usd=0.1234, tokens=165)


def test_claude_is_error() -> None:
    report = parse_output("claude-json", _claude(is_error=True, result="Something broke"))
    assert report.error is not None and "Something broke" in report.error
    assert not report.provider_limit and report.session_id == "5f0c-abc"


def test_claude_max_turns() -> None:
    report = parse_output("claude-json", _claude(subtype="error_max_turns", result=None))
    assert report.error is not None and "error_max_turns" in report.error
    assert report.cost_usd == 0.1234


def test_claude_permission_denials() -> None:
    denials = [
        {"tool_name": "Bash", "tool_use_id": "t1", "tool_input": {"command": "rm"}},
        {"tool_name": "Write", "tool_use_id": "t2", "tool_input": {}},
    ]
    report = parse_output("claude-json", _claude(permission_denials=denials))
    # counted on the run and left to the gate: a denial alone discards nothing
    assert report.error is None and report.fault is None
    assert report.denials == 2 and report.denied_tools == ("Bash", "Write")


@pytest.mark.parametrize(
    "text",
    [
        'API Error: 429 {"type":"error","error":{"type":"rate_limit_error"}}',
        "Claude AI usage limit reached|1755615600",
        "API Error: 529 Overloaded",
        "You've hit your limit · resets 7pm",
    ],
)
def test_claude_provider_limit(text: str) -> None:
    report = parse_output("claude-json", _claude(is_error=True, result=text))
    assert report.error is not None and report.provider_limit


def test_claude_garbage() -> None:
    for garbage in ("", "not json at all", '{"type": "assistant"}', "[1, 2", '{"type":'):
        report = parse_output("claude-json", garbage)
        assert report.error is not None and "no result object" in report.error
        assert report.session_id is None and report.cost_usd is None


def test_claude_leading_noise_and_last_result_wins() -> None:
    stdout = (
        'Warning: something on stdout\n{"type": "system"}\n'
        + _claude(session_id="old", subtype="error_during_execution")
        + "\n"
        + _claude(session_id="new")
        + "\ntrailing noise\n"
    )
    report = parse_output("claude-json", stdout)
    assert report.session_id == "new" and report.error is None


def test_claude_verbose_array() -> None:
    stdout = json.dumps([{"type": "system", "subtype": "init"}, json.loads(_claude())])
    assert parse_output("claude-json", stdout).session_id == "5f0c-abc"


def test_claude_odd_field_types() -> None:
    report = parse_output(
        "claude-json", _claude(total_cost_usd="0.5", usage={"input_tokens": True}, session_id=12)
    )
    assert report == AgentReport()


# --- parse_output: codex-jsonl ------------------------------------------------


def _codex(*events: dict[str, object]) -> str:
    return "\n".join(json.dumps(event) for event in events) + "\n"


STARTED = {"type": "thread.started", "thread_id": "0199a213-81c0"}
COMPLETED = {
    "type": "turn.completed",
    "usage": {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122},
}


def test_codex_success() -> None:
    stdout = "Reading prompt from stdin...\n" + _codex(
        STARTED,
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": "ok"}},
        COMPLETED,
    )
    report = parse_output("codex-jsonl", stdout)
    # cached_input_tokens are part of input_tokens: counted once
    assert report == AgentReport(session_id="0199a213-81c0", tokens=24763 + 122)


def test_codex_tokens_summed_over_turns() -> None:
    report = parse_output("codex-jsonl", _codex(STARTED, COMPLETED, COMPLETED))
    assert report.tokens == 2 * (24763 + 122)


def test_codex_turn_failed() -> None:
    stdout = _codex(
        STARTED,
        {"type": "turn.started"},
        {"type": "turn.failed", "error": {"message": "sandbox denied the command"}},
    )
    report = parse_output("codex-jsonl", stdout)
    assert report.error is not None and "sandbox denied" in report.error
    assert not report.provider_limit and report.session_id == "0199a213-81c0"


def test_codex_usage_limit_error() -> None:
    stdout = _codex(
        STARTED, {"type": "error", "message": "You've hit your usage limit. Try again later."}
    )
    report = parse_output("codex-jsonl", stdout)
    assert report.error is not None and report.provider_limit


def test_codex_error_event_is_fatal_even_after_completion() -> None:
    report = parse_output(
        "codex-jsonl", _codex(STARTED, COMPLETED, {"type": "error", "message": "stream failed"})
    )
    assert report.error == "stream failed"


def test_codex_reconnect_then_success_is_clean() -> None:
    stdout = _codex(
        STARTED,
        {"type": "error", "message": "Reconnecting... 1/5 (stream disconnected)"},
        COMPLETED,
    )
    assert parse_output("codex-jsonl", stdout).error is None


def test_codex_reconnect_without_completion() -> None:
    stdout = _codex(
        STARTED, {"type": "error", "message": "Reconnecting... 5/5 (429 Too Many Requests)"}
    )
    report = parse_output("codex-jsonl", stdout)
    assert report.error is not None and "no turn.completed" in report.error
    assert report.provider_limit


def test_codex_no_events() -> None:
    report = parse_output("codex-jsonl", "nothing useful\n")
    assert report.error == "no turn.completed event" and report.tokens is None


@given(st.text())
@settings(max_examples=300)
def test_parse_output_never_raises_on_text(text: str) -> None:
    for kind in ("claude-json", "codex-jsonl"):
        report = parse_output(kind, text)
        assert isinstance(report, AgentReport)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "subtype",
                    "is_error",
                    "result",
                    "session_id",
                    "total_cost_usd",
                    "usage",
                    "permission_denials",
                    "errors",
                    "thread_id",
                    "error",
                    "message",
                    "input_tokens",
                    "output_tokens",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@given(
    st.lists(json_values, max_size=5),
    st.sampled_from(["result", "turn.completed", "turn.failed", "error", "thread.started"]),
)
@settings(max_examples=300)
def test_parse_output_never_raises_on_json_shapes(values: list[object], kind: str) -> None:
    lines = []
    for value in values:
        if isinstance(value, dict):
            value = {**value, "type": kind}
        lines.append(json.dumps(value))
    text = "\n".join(lines)
    for output in ("claude-json", "codex-jsonl"):
        assert isinstance(parse_output(output, text), AgentReport)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Rate limit exceeded", True),
        ("rate_limit_error", True),
        ("Overloaded", True),
        ("insufficient_quota", True),
        ("usage limit reached", True),
        ("HTTP 429", True),
        ("status 529", True),
        ("file not found", False),
        ("wrote 4290 lines", False),
    ],
)
def test_is_provider_limit(text: str, expected: bool) -> None:
    assert is_provider_limit(text) is expected


# --- classify_agent_run --------------------------------------------------------

CLEAN = AgentReport(session_id="s")
HOLLOW = AgentReport(error="is_error")
LIMITED = AgentReport(error="429 rate limit", fault="provider")
AUTH = AgentReport(error="401", fault="auth")


@pytest.mark.parametrize(
    ("exit_code", "timed_out", "report", "expected"),
    [
        (None, True, CLEAN, (RunOutcome.TIMEOUT, Verdict.RETRY)),
        (0, True, CLEAN, (RunOutcome.TIMEOUT, Verdict.RETRY)),
        (-9, True, LIMITED, (RunOutcome.TIMEOUT, Verdict.RETRY)),
        (-9, True, AgentReport(error="x", waiting=True), (RunOutcome.TIMEOUT, Verdict.DEFER)),
        (1, False, AUTH, (RunOutcome.FAILED, Verdict.HOLD)),
        (0, False, AUTH, (RunOutcome.FAILED, Verdict.HOLD)),
        (None, True, AUTH, (RunOutcome.FAILED, Verdict.HOLD)),
        (1, False, CLEAN, (RunOutcome.FAILED, Verdict.RETRY)),
        (None, False, CLEAN, (RunOutcome.FAILED, Verdict.RETRY)),
        (1, False, LIMITED, (RunOutcome.FAILED, Verdict.DEFER)),
        (0, False, HOLLOW, (RunOutcome.HOLLOW_SUCCESS, Verdict.RETRY)),
        (0, False, LIMITED, (RunOutcome.HOLLOW_SUCCESS, Verdict.DEFER)),
        (0, False, CLEAN, (RunOutcome.SUCCEEDED, None)),
        (0, False, AgentReport(), (RunOutcome.SUCCEEDED, None)),
    ],
)
def test_classify_agent_run(
    exit_code: int | None,
    timed_out: bool,
    report: AgentReport,
    expected: tuple[RunOutcome, Verdict | None],
) -> None:
    assert classify_agent_run(exit_code, timed_out, report) == expected


def test_judge_end_to_end_claude_hollow_rate_limit() -> None:
    stdout = _claude(is_error=True, result="API Error: 429 rate_limit_error")
    assert classify_agent_run(0, False, parse_output("claude-json", stdout)) == (
        RunOutcome.HOLLOW_SUCCESS,
        Verdict.DEFER,
    )


def test_prompt_context_fences_artifacts(tmp_path: Path) -> None:
    artifacts = _task_dir(tmp_path)
    (artifacts / "12-review.md").write_text(
        "---\nverdict: REQUEST_CHANGES\n---\nuse ```code``` here\n", encoding="utf-8"
    )
    review = _context(artifacts, 1)["previous_review"]
    assert review.startswith("````markdown\n---\nverdict: REQUEST_CHANGES")
    assert review.endswith("\n````")


def test_prompt_context_cuts_huge_reports(tmp_path: Path) -> None:
    artifacts = _task_dir(tmp_path)
    (artifacts / "13-test-report.md").write_text(
        "---\nresult: FAIL\n---\n" + "x" * 100_000, encoding="utf-8"
    )
    report = _context(artifacts, 1)["failure_report"]
    assert len(report) < 21_000 and "13-test-report.md" in report[-200:]


def test_claude_plain_text_is_not_the_clis_word_and_is_never_echoed() -> None:
    """Without a result object nothing the output says counts (a tool may print anything)."""
    report = parse_output(
        "claude-json", "token=sk-SECRET\nClaude AI usage limit reached|1755615600\n"
    )
    assert not report.provider_limit and report.fault is None
    assert report.error is not None and "SECRET" not in report.error
