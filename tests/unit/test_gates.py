"""Gates over real files in tmp_path, with mtimes set by os.utime (SPEC sections 3, 6-8)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import orch
from orch import gates
from orch.artifacts import (
    ANALYSIS_FILE,
    DEV_REPORT_FILE,
    MANIFEST,
    MERGE_REPORT_FILE,
    QUESTIONS_FILE,
    REVIEW_FILE,
    STAGING_REPORT_FILE,
    TASK_FILE,
    TEST_REPORT_FILE,
    parse_document,
)
from orch.gates import GateContext, GateResult, questions_active
from orch.model import GATES as MODEL_GATES
from orch.model import Verdict

RUN_S = 1_700_000_000  # the judged run's start, whole seconds so floats are exact
RUN_NS = RUN_S * 10**9
TEMPLATES = Path(orch.__file__).parent / "data" / "templates"


# --- helpers -------------------------------------------------------------------


def set_mtime(path: Path, offset_s: float) -> None:
    """Set a file's mtime to RUN_S + offset_s, exactly (nanoseconds)."""
    stamp = RUN_NS + round(offset_s * 10**9)
    os.utime(path, ns=(stamp, stamp))


def put(directory: Path, name: str, content: str | bytes, offset_s: float = 5) -> Path:
    """Write an artifact and date it offset_s seconds after the run's start."""
    path = directory / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    set_mtime(path, offset_s)
    return path


def doc(meta: dict[str, Any] | None = None, body: str = "Some text.\n") -> str:
    """A Markdown artifact with front matter (none when meta is None)."""
    if meta is None:
        return body
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + body


def context(directory: Path, **fields: Any) -> GateContext:
    return GateContext(artifacts=directory, run_started=float(RUN_S), **fields)


def judged(gate: str, directory: Path, **fields: Any) -> GateResult:
    result = gates.run_gate(gate, context(directory, **fields))
    assert "\n" not in result.reason and result.reason
    return result


# Each file gate with the file it reads, a valid fresh content and its context.
FILE_GATES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "analysis_ready": (ANALYSIS_FILE, doc(None, "# Analysis\n\nPlan.\n"), {}),
    "dev_done": (DEV_REPORT_FILE, doc(None, "# Dev\n\nDone.\n"), {"new_commits": 1}),
    "review_approved": (REVIEW_FILE, doc({"verdict": "APPROVE"}), {}),
    "tests_passed": (
        TEST_REPORT_FILE,
        doc({"result": "PASS", "status": "passed", "exit_code": 0}),
        {},
    ),
    "staging_passed": (STAGING_REPORT_FILE, doc({"outcome": "passed"}), {}),
    "merged": (MERGE_REPORT_FILE, doc({"result": "merged", "commit": "abc123"}), {}),
}

MALFORMED = {
    "unclosed front matter": "---\nverdict: APPROVE\nbody without a closing line\n",
    "non-mapping yaml": "---\n- a\n- b\n---\nbody\n",
    "scalar yaml": "---\njust a string\n---\nbody\n",
    "bad yaml": "---\nverdict: [unclosed\n---\nbody\n",
    "bad yaml indentation": "---\na: b\n  c: d\n---\nbody\n",
    "impossible date": "---\nwhen: 2020-13-45\n---\nbody\n",
    "bad int tag": "---\nexit_code: !!int x\n---\nbody\n",
    "bad bool tag": "---\nblocking: !!bool maybe\n---\nbody\n",
    "python tag": "---\nx: !!python/object:os.system ls\n---\nbody\n",
    "deep nesting": "---\nx: " + "[" * 1000 + "\n---\nbody\n",
}


# --- what every file gate shares -------------------------------------------------


@pytest.mark.parametrize("gate", FILE_GATES)
def test_fresh_valid_artifact_passes(tmp_path: Path, gate: str) -> None:
    name, content, fields = FILE_GATES[gate]
    put(tmp_path, name, content)
    assert judged(gate, tmp_path, **fields).verdict == Verdict.PASS


@pytest.mark.parametrize("gate", FILE_GATES)
def test_written_exactly_at_run_start_counts(tmp_path: Path, gate: str) -> None:
    name, content, fields = FILE_GATES[gate]
    put(tmp_path, name, content, offset_s=0)
    assert judged(gate, tmp_path, **fields).verdict == Verdict.PASS


@pytest.mark.parametrize("offset_s", [-0.001, -1, -3600])
@pytest.mark.parametrize("gate", FILE_GATES)
def test_stale_artifact_is_retry(tmp_path: Path, gate: str, offset_s: float) -> None:
    name, content, fields = FILE_GATES[gate]
    put(tmp_path, name, content, offset_s=offset_s)
    result = judged(gate, tmp_path, **fields)
    assert result.verdict == Verdict.RETRY
    assert result.reason == f"{name} is stale (written before the run)"


@pytest.mark.parametrize("gate", FILE_GATES)
def test_missing_artifact_is_retry(tmp_path: Path, gate: str) -> None:
    _name, _content, fields = FILE_GATES[gate]
    result = judged(gate, tmp_path, **fields)
    assert result.verdict == Verdict.RETRY
    assert "is missing" in result.reason


@pytest.mark.parametrize("gate", FILE_GATES)
def test_missing_artifacts_directory_is_retry(tmp_path: Path, gate: str) -> None:
    _name, _content, fields = FILE_GATES[gate]
    assert judged(gate, tmp_path / "no-such-task", **fields).verdict == Verdict.RETRY


@pytest.mark.parametrize("content", ["", "   \n\t\n", "---\n---\n", "---\n---\n  \n"])
@pytest.mark.parametrize("gate", FILE_GATES)
def test_empty_artifact_is_retry(tmp_path: Path, gate: str, content: str) -> None:
    name, _content, fields = FILE_GATES[gate]
    put(tmp_path, name, content)
    assert judged(gate, tmp_path, **fields).verdict == Verdict.RETRY


@pytest.mark.parametrize("case", MALFORMED)
@pytest.mark.parametrize("gate", FILE_GATES)
def test_malformed_front_matter_is_retry(tmp_path: Path, gate: str, case: str) -> None:
    name, _content, fields = FILE_GATES[gate]
    put(tmp_path, name, MALFORMED[case])
    result = judged(gate, tmp_path, **fields)
    assert result.verdict == Verdict.RETRY
    assert f"{name} is malformed" in result.reason


@pytest.mark.parametrize("gate", FILE_GATES)
def test_not_utf8_is_retry(tmp_path: Path, gate: str) -> None:
    name, _content, fields = FILE_GATES[gate]
    put(tmp_path, name, b"---\nverdict: \xff\xfe\n---\n")
    result = judged(gate, tmp_path, **fields)
    assert result.verdict == Verdict.RETRY
    assert "not UTF-8" in result.reason


@pytest.mark.parametrize("gate", FILE_GATES)
def test_directory_in_place_of_artifact_is_retry(tmp_path: Path, gate: str) -> None:
    name, _content, fields = FILE_GATES[gate]
    (tmp_path / name).mkdir()
    set_mtime(tmp_path / name, 5)
    result = judged(gate, tmp_path, **fields)
    assert result.verdict == Verdict.RETRY
    assert result.reason == f"{name} is a directory, not a regular file"


@pytest.mark.parametrize("gate", FILE_GATES)
def test_unreadable_artifact_is_retry(tmp_path: Path, gate: str) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    name, content, fields = FILE_GATES[gate]
    path = put(tmp_path, name, content)
    path.chmod(0)
    try:
        assert judged(gate, tmp_path, **fields).verdict == Verdict.RETRY
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("gate", ["review_approved", "tests_passed", "staging_passed", "merged"])
def test_report_gates_check_extra_deliverables(tmp_path: Path, gate: str) -> None:
    name, content, fields = FILE_GATES[gate]
    put(tmp_path, name, content)
    extra = ("notes.md", name)
    result = judged(gate, tmp_path, deliverables=extra, **fields)
    assert (result.verdict, result.reason) == (Verdict.RETRY, "notes.md is missing")
    put(tmp_path, "notes.md", "notes\n")
    assert judged(gate, tmp_path, deliverables=extra, **fields).verdict == Verdict.PASS


def test_long_multiline_reason_is_one_bounded_line(tmp_path: Path) -> None:
    put(tmp_path, REVIEW_FILE, doc({"verdict": "x\n" * 500}))
    result = judged("review_approved", tmp_path)
    assert result.verdict == Verdict.RETRY
    assert len(result.reason) <= 300


# --- analysis_ready --------------------------------------------------------------


def test_analysis_defaults_to_02_analysis(tmp_path: Path) -> None:
    put(tmp_path, ANALYSIS_FILE, "analysis\n")
    result = judged("analysis_ready", tmp_path)
    assert result == GateResult(Verdict.PASS, "02-analysis.md ready")


def test_analysis_front_matter_only_is_empty(tmp_path: Path) -> None:
    put(tmp_path, ANALYSIS_FILE, doc({"title": "x"}, body="\n  \n"))
    result = judged("analysis_ready", tmp_path)
    assert (result.verdict, result.reason) == (Verdict.RETRY, "02-analysis.md is empty")


def test_analysis_with_front_matter_and_body_passes(tmp_path: Path) -> None:
    put(tmp_path, ANALYSIS_FILE, doc({"title": "x"}, body="The plan.\n"))
    assert judged("analysis_ready", tmp_path).verdict == Verdict.PASS


def test_every_declared_deliverable_is_needed(tmp_path: Path) -> None:
    names = ("02-analysis.md", "03-design.md", "plan.txt")
    put(tmp_path, "02-analysis.md", "analysis\n")
    put(tmp_path, "plan.txt", "plan\n")
    result = judged("analysis_ready", tmp_path, deliverables=names)
    assert (result.verdict, result.reason) == (Verdict.RETRY, "03-design.md is missing")
    put(tmp_path, "03-design.md", "design\n", offset_s=-10)
    result = judged("analysis_ready", tmp_path, deliverables=names)
    assert result.reason == "03-design.md is stale (written before the run)"
    put(tmp_path, "03-design.md", "design\n")
    assert judged("analysis_ready", tmp_path, deliverables=names).verdict == Verdict.PASS


def test_non_markdown_deliverable_is_read_as_bytes(tmp_path: Path) -> None:
    put(tmp_path, "out.bin", b"\n \t")
    result = judged("analysis_ready", tmp_path, deliverables=("out.bin",))
    assert (result.verdict, result.reason) == (Verdict.RETRY, "out.bin is empty")
    put(tmp_path, "out.bin", b"\xff\x00data")
    assert judged("analysis_ready", tmp_path, deliverables=("out.bin",)).verdict == Verdict.PASS


def test_non_markdown_deliverable_may_start_with_dashes(tmp_path: Path) -> None:
    put(tmp_path, "data.yaml", "---\na: 1\n")
    assert judged("analysis_ready", tmp_path, deliverables=("data.yaml",)).verdict == Verdict.PASS


# --- questions (SPEC section 7) ----------------------------------------------------

QUESTIONS = doc({"blocking": True}, "1. Which database?\n")


def ask(directory: Path, offset_s: float = 5, content: str | bytes = QUESTIONS) -> None:
    put(directory, QUESTIONS_FILE, content, offset_s)


def analyse(directory: Path, offset_s: float = 5, name: str = ANALYSIS_FILE) -> None:
    put(directory, name, "analysis\n", offset_s)


def analysis_verdict(directory: Path, **fields: Any) -> Verdict:
    fields.setdefault("questions", True)
    return judged("analysis_ready", directory, **fields).verdict


def test_questions_only_needs_input(tmp_path: Path) -> None:
    ask(tmp_path)
    result = judged("analysis_ready", tmp_path, questions=True)
    assert result == GateResult(Verdict.NEEDS_INPUT, "01-questions.md has blocking questions")


def test_deliverables_only_pass(tmp_path: Path) -> None:
    analyse(tmp_path)
    assert analysis_verdict(tmp_path) == Verdict.PASS


def test_questions_newer_than_deliverables_win(tmp_path: Path) -> None:
    analyse(tmp_path, offset_s=5)
    ask(tmp_path, offset_s=6)
    assert analysis_verdict(tmp_path) == Verdict.NEEDS_INPUT


def test_questions_as_old_as_deliverables_still_win(tmp_path: Path) -> None:
    analyse(tmp_path, offset_s=5)
    ask(tmp_path, offset_s=5)
    assert analysis_verdict(tmp_path) == Verdict.NEEDS_INPUT


def test_deliverables_newer_supersede_questions(tmp_path: Path) -> None:
    ask(tmp_path, offset_s=5)
    analyse(tmp_path, offset_s=5.000001)
    assert analysis_verdict(tmp_path) == Verdict.PASS


def test_answered_questions_from_before_the_run_are_superseded(tmp_path: Path) -> None:
    ask(tmp_path, offset_s=-600)
    analyse(tmp_path, offset_s=5)
    assert analysis_verdict(tmp_path) == Verdict.PASS


def test_stale_questions_with_stale_analysis_need_input(tmp_path: Path) -> None:
    analyse(tmp_path, offset_s=-900)
    ask(tmp_path, offset_s=-600)
    assert analysis_verdict(tmp_path) == Verdict.NEEDS_INPUT


def test_only_some_deliverables_newer_do_not_supersede(tmp_path: Path) -> None:
    names = ("02-analysis.md", "03-design.md")
    analyse(tmp_path, offset_s=4, name="03-design.md")
    ask(tmp_path, offset_s=5)
    analyse(tmp_path, offset_s=6)
    assert analysis_verdict(tmp_path, deliverables=names) == Verdict.NEEDS_INPUT
    analyse(tmp_path, offset_s=7, name="03-design.md")
    assert analysis_verdict(tmp_path, deliverables=names) == Verdict.PASS


def test_a_missing_deliverable_does_not_supersede(tmp_path: Path) -> None:
    names = ("02-analysis.md", "03-design.md")
    ask(tmp_path, offset_s=5)
    analyse(tmp_path, offset_s=6)
    assert analysis_verdict(tmp_path, deliverables=names) == Verdict.NEEDS_INPUT


def test_superseding_deliverable_must_still_be_valid(tmp_path: Path) -> None:
    ask(tmp_path, offset_s=5)
    put(tmp_path, ANALYSIS_FILE, "  \n", offset_s=6)
    result = judged("analysis_ready", tmp_path, questions=True)
    assert (result.verdict, result.reason) == (Verdict.RETRY, "02-analysis.md is empty")


@pytest.mark.parametrize("value", [False, "false", "False", " no ", "no", "off", 0, "0"])
def test_non_blocking_questions_are_ignored(tmp_path: Path, value: object) -> None:
    ask(tmp_path, offset_s=6, content=doc({"blocking": value}, "a note\n"))
    analyse(tmp_path, offset_s=5)
    assert analysis_verdict(tmp_path) == Verdict.PASS
    (tmp_path / ANALYSIS_FILE).unlink()
    assert analysis_verdict(tmp_path) == Verdict.RETRY


@pytest.mark.parametrize(
    "content",
    [
        doc({"blocking": True}),
        doc({"blocking": "yes"}),
        doc({"blocking": None}),
        doc({"blocking": "maybe"}),
        doc({"other": 1}),
        doc(None, "1. A question without front matter\n"),
        "",
        MALFORMED["unclosed front matter"],
        MALFORMED["bad yaml"],
        MALFORMED["non-mapping yaml"],
        MALFORMED["bad bool tag"],
        b"---\nblocking: false\xff\n---\n",
    ],
    ids=[
        "true", "yes", "null", "garbage", "absent", "no-front-matter", "empty-file",
        "unclosed", "bad-yaml", "non-mapping", "crashing-yaml", "not-utf8",
    ],
)
def test_blocking_questions(tmp_path: Path, content: str | bytes) -> None:
    ask(tmp_path, offset_s=6, content=content)
    analyse(tmp_path, offset_s=5)
    assert analysis_verdict(tmp_path) == Verdict.NEEDS_INPUT


def test_questions_gate_flag_off_ignores_questions(tmp_path: Path) -> None:
    analyse(tmp_path, offset_s=5)
    ask(tmp_path, offset_s=6)
    assert analysis_verdict(tmp_path, questions_gate_enabled=False) == Verdict.PASS
    (tmp_path / ANALYSIS_FILE).unlink()
    assert analysis_verdict(tmp_path, questions_gate_enabled=False) == Verdict.RETRY


def test_stage_without_questions_ignores_questions(tmp_path: Path) -> None:
    analyse(tmp_path, offset_s=5)
    ask(tmp_path, offset_s=6)
    assert analysis_verdict(tmp_path, questions=False) == Verdict.PASS
    (tmp_path / ANALYSIS_FILE).unlink()
    assert analysis_verdict(tmp_path, questions=False) == Verdict.RETRY


def test_questions_active_directly(tmp_path: Path) -> None:
    assert not questions_active(tmp_path, [ANALYSIS_FILE])
    assert not questions_active(tmp_path / "missing-dir", [ANALYSIS_FILE])
    ask(tmp_path, offset_s=5)
    assert questions_active(tmp_path, [ANALYSIS_FILE])
    analyse(tmp_path, offset_s=6)
    assert not questions_active(tmp_path, [ANALYSIS_FILE])


def test_questions_without_deliverables_are_never_superseded(tmp_path: Path) -> None:
    ask(tmp_path, offset_s=5)
    analyse(tmp_path, offset_s=6)
    assert questions_active(tmp_path, [])


def test_questions_directory_counts_as_blocking(tmp_path: Path) -> None:
    (tmp_path / QUESTIONS_FILE).mkdir()
    set_mtime(tmp_path / QUESTIONS_FILE, 5)
    assert questions_active(tmp_path, [ANALYSIS_FILE])


# --- dev_done -------------------------------------------------------------------


def test_dev_done_needs_a_new_commit(tmp_path: Path) -> None:
    put(tmp_path, DEV_REPORT_FILE, "# Dev\n\nDone.\n")
    result = judged("dev_done", tmp_path, new_commits=0)
    assert result == GateResult(Verdict.RETRY, "no commit added to the task branch during the run")
    assert judged("dev_done", tmp_path, new_commits=None).verdict == Verdict.RETRY
    assert judged("dev_done", tmp_path, new_commits=3).verdict == Verdict.PASS


def test_dev_done_checks_the_report_before_commits(tmp_path: Path) -> None:
    result = judged("dev_done", tmp_path, new_commits=2)
    assert (result.verdict, result.reason) == (Verdict.RETRY, "10-dev-report.md is missing")


def test_dev_done_uses_declared_deliverables(tmp_path: Path) -> None:
    put(tmp_path, "notes.md", "notes\n")
    fields: dict[str, Any] = {"deliverables": ("notes.md",), "new_commits": 1}
    assert judged("dev_done", tmp_path, **fields).verdict == Verdict.PASS


# --- review_approved -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "verdict"),
    [
        ("APPROVE", Verdict.PASS),
        ("REQUEST_CHANGES", Verdict.FAIL),
        ("approve", Verdict.PASS),
        ("  Request_Changes ", Verdict.FAIL),
        ("APPROVED", Verdict.RETRY),
        ("REQUEST CHANGES", Verdict.RETRY),
        ("APPROVE | REQUEST_CHANGES", Verdict.RETRY),
        ("", Verdict.RETRY),
        (None, Verdict.RETRY),
        (True, Verdict.RETRY),
        (1, Verdict.RETRY),
        (["APPROVE"], Verdict.RETRY),
        ({"APPROVE": 1}, Verdict.RETRY),
    ],
)
def test_review_verdicts(tmp_path: Path, value: object, verdict: Verdict) -> None:
    put(tmp_path, REVIEW_FILE, doc({"verdict": value}))
    assert judged("review_approved", tmp_path).verdict == verdict


def test_review_reason_names_the_verdict(tmp_path: Path) -> None:
    put(tmp_path, REVIEW_FILE, doc({"verdict": "request_changes"}))
    assert judged("review_approved", tmp_path).reason == "12-review.md: verdict REQUEST_CHANGES"


def test_review_without_front_matter_is_retry(tmp_path: Path) -> None:
    put(tmp_path, REVIEW_FILE, "verdict: APPROVE\n\nLooks good.\n")
    result = judged("review_approved", tmp_path)
    assert result.verdict == Verdict.RETRY
    assert "no `verdict`" in result.reason


def test_review_with_verdict_only_in_body_is_retry(tmp_path: Path) -> None:
    put(tmp_path, REVIEW_FILE, doc({"reviewer": "bot"}, "verdict: APPROVE\n"))
    assert judged("review_approved", tmp_path).verdict == Verdict.RETRY


# --- tests_passed ----------------------------------------------------------------


def write_test_report(directory: Path, **meta: Any) -> None:
    put(directory, TEST_REPORT_FILE, doc(meta))


@pytest.mark.parametrize(
    ("result", "status", "exit_code", "verdict"),
    [
        ("PASS", "passed", 0, Verdict.PASS),
        ("FAIL", "failed", 1, Verdict.FAIL),
        ("FAIL", "failed", 5, Verdict.FAIL),
        ("FAIL", "failed", None, Verdict.FAIL),  # timeout: no exit status
        ("FAIL", "failed", 0, Verdict.FAIL),  # smoke-failed after exit 0
        ("DEFER", "deferred", 2, Verdict.DEFER),
        ("DEFER", "deferred", -9, Verdict.DEFER),
        ("DEFER", "deferred", None, Verdict.DEFER),  # could not start
        ("pass", " Passed ", 0, Verdict.PASS),
        # disagreement: fail closed
        ("PASS", "failed", 0, Verdict.FAIL),
        ("PASS", "passed", 1, Verdict.FAIL),
        ("PASS", "passed", None, Verdict.FAIL),
        ("PASS", "deferred", 0, Verdict.FAIL),
        ("FAIL", "passed", 0, Verdict.FAIL),
        ("FAIL", "deferred", 2, Verdict.FAIL),
        ("DEFER", "passed", 2, Verdict.FAIL),
        ("DEFER", "failed", 2, Verdict.FAIL),
        ("DEFER", "deferred", 0, Verdict.FAIL),
    ],
)
def test_test_report_fields(
    tmp_path: Path, result: str, status: str, exit_code: int | None, verdict: Verdict
) -> None:
    write_test_report(tmp_path, result=result, status=status, exit_code=exit_code)
    assert judged("tests_passed", tmp_path).verdict == verdict


def test_disagreement_reason_names_the_fields(tmp_path: Path) -> None:
    write_test_report(tmp_path, result="PASS", status="passed", exit_code=1)
    result = judged("tests_passed", tmp_path)
    expected = "13-test-report.md: fields disagree (result PASS, status passed, exit_code 1)"
    assert result == GateResult(Verdict.FAIL, expected)


def test_test_report_reason_quotes_its_own_reason(tmp_path: Path) -> None:
    write_test_report(tmp_path, result="FAIL", status="failed", exit_code=1, reason="tests-failed")
    result = judged("tests_passed", tmp_path)
    assert result == GateResult(Verdict.FAIL, "13-test-report.md: result FAIL (tests-failed)")


@pytest.mark.parametrize(
    "meta",
    [
        {"result": "PASS", "status": "passed", "exit_code": "0"},  # a string is not an exit code
        {"result": "PASS", "status": "passed", "exit_code": 0.0},
        {"result": "PASS", "status": "passed", "exit_code": False},
        {"result": "PASS", "status": "passed", "exit_code": [0]},
        {"result": "PASS", "status": "passed"},  # exit_code absent
        {"result": "PASS", "exit_code": 0},  # status absent
        {"status": "passed", "exit_code": 0},  # result absent
        {"result": "PASSED", "status": "passed", "exit_code": 0},
        {"result": "SKIP", "status": "passed", "exit_code": 0},
        {"result": "PASS", "status": "ok", "exit_code": 0},
        {"result": True, "status": "passed", "exit_code": 0},
        {"result": "FAIL", "status": "failed", "exit_code": "1"},
        {"result": "PASS | FAIL | DEFER", "status": "passed", "exit_code": 0},
    ],
)
def test_malformed_test_report_is_retry(tmp_path: Path, meta: dict[str, Any]) -> None:
    put(tmp_path, TEST_REPORT_FILE, doc(meta))
    assert judged("tests_passed", tmp_path).verdict == Verdict.RETRY


def test_quoted_zero_exit_code_is_named_in_reason(tmp_path: Path) -> None:
    put(tmp_path, TEST_REPORT_FILE, "---\nresult: PASS\nstatus: passed\nexit_code: '0'\n---\n")
    result = judged("tests_passed", tmp_path)
    assert result == GateResult(
        Verdict.RETRY, "13-test-report.md: exit_code '0' is not an integer"
    )


# --- staging_passed ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "verdict"),
    [
        ("passed", Verdict.PASS),
        ("failed", Verdict.FAIL),
        ("permanent-env", Verdict.HOLD),
        ("transient-infra", Verdict.DEFER),
        (" Permanent-Env ", Verdict.HOLD),
        ("PASSED", Verdict.PASS),
        ("permanent_env", Verdict.RETRY),
        ("timeout", Verdict.RETRY),
        ("", Verdict.RETRY),
        (None, Verdict.RETRY),
        (0, Verdict.RETRY),
    ],
)
def test_staging_outcomes(tmp_path: Path, outcome: object, verdict: Verdict) -> None:
    put(tmp_path, STAGING_REPORT_FILE, doc({"outcome": outcome, "exit_code": 0}))
    assert judged("staging_passed", tmp_path).verdict == verdict


def test_staging_without_outcome_is_retry(tmp_path: Path) -> None:
    put(tmp_path, STAGING_REPORT_FILE, doc({"exit_code": 0}))
    result = judged("staging_passed", tmp_path)
    assert result.verdict == Verdict.RETRY
    assert "no `outcome`" in result.reason


# --- merged ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "verdict"),
    [
        ({"result": "merged", "commit": "abc123"}, Verdict.PASS),
        ({"result": "merged", "commit": "abc123", "pushed": True}, Verdict.PASS),
        ({"result": "merged", "commit": "abc123", "pushed": None}, Verdict.PASS),
        ({"result": "Merged", "commit": 1234567}, Verdict.PASS),  # an all-digit sha
        ({"result": "merged", "commit": "abc", "pushed": False}, Verdict.HOLD),
        ({"result": "merged", "commit": "abc", "pushed": "false"}, Verdict.HOLD),
        ({"result": "merged", "commit": "abc", "pushed": "no"}, Verdict.HOLD),
        ({"result": "merged", "pushed": False}, Verdict.HOLD),
        ({"result": "merged"}, Verdict.RETRY),  # no commit
        ({"result": "merged", "commit": ""}, Verdict.RETRY),
        ({"result": "merged", "commit": None}, Verdict.RETRY),
        ({"result": "conflict", "files": ["a.py"]}, Verdict.FAIL),
        ({"result": "blocked"}, Verdict.HOLD),
        ({"result": "blocked", "defer": False}, Verdict.HOLD),
        ({"result": "blocked", "defer": True}, Verdict.DEFER),
        ({"result": "blocked", "defer": "yes"}, Verdict.DEFER),
        ({"result": "blocked", "defer": "maybe"}, Verdict.HOLD),
        ({"result": "conflicted"}, Verdict.RETRY),
        ({"result": None}, Verdict.RETRY),
        ({"commit": "abc"}, Verdict.RETRY),
    ],
)
def test_merge_results(tmp_path: Path, meta: dict[str, Any], verdict: Verdict) -> None:
    put(tmp_path, MERGE_REPORT_FILE, doc(meta))
    assert judged("merged", tmp_path).verdict == verdict


def test_unpushed_merge_holds_with_its_reason(tmp_path: Path) -> None:
    meta = {"result": "merged", "commit": "abc", "pushed": False, "reason": "remote rejected"}
    put(tmp_path, MERGE_REPORT_FILE, doc(meta))
    result = judged("merged", tmp_path)
    expected = "15-merge-report.md: merged but not pushed (remote rejected)"
    assert result == GateResult(Verdict.HOLD, expected)


def test_blocked_merge_holds_with_its_reason(tmp_path: Path) -> None:
    meta = {"result": "blocked", "reason": "default branch has local changes"}
    put(tmp_path, MERGE_REPORT_FILE, doc(meta))
    result = judged("merged", tmp_path)
    expected = "15-merge-report.md: result blocked (default branch has local changes)"
    assert result == GateResult(Verdict.HOLD, expected)


def test_merged_reason_names_the_commit(tmp_path: Path) -> None:
    put(tmp_path, MERGE_REPORT_FILE, doc({"result": "merged", "commit": "abc123"}))
    assert judged("merged", tmp_path).reason == "15-merge-report.md: merged at abc123"


# --- exit_zero, approved, the table ----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "verdict"),
    [(0, Verdict.PASS), (1, Verdict.FAIL), (127, Verdict.FAIL), (-9, Verdict.FAIL),
     (None, Verdict.RETRY), (False, Verdict.RETRY)],
)
def test_exit_zero(tmp_path: Path, code: int | None, verdict: Verdict) -> None:
    assert judged("exit_zero", tmp_path, exit_code=code).verdict == verdict


def test_exit_zero_reads_no_files(tmp_path: Path) -> None:
    put(tmp_path, TEST_REPORT_FILE, doc({"result": "FAIL", "status": "failed", "exit_code": 1}))
    assert judged("exit_zero", tmp_path / "absent", exit_code=0).verdict == Verdict.PASS


def test_approved_passes(tmp_path: Path) -> None:
    assert judged("approved", tmp_path).verdict == Verdict.PASS


def test_gate_table_matches_the_model() -> None:
    assert set(gates.GATES) == set(MODEL_GATES)


def test_unknown_gate_holds(tmp_path: Path) -> None:
    result = judged("no_such_gate", tmp_path)
    assert result == GateResult(Verdict.HOLD, "unknown gate 'no_such_gate'")


# --- no gate ever raises -----------------------------------------------------------------

PROPERTY_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("analysis_ready", ANALYSIS_FILE, {"questions": True}),
    ("analysis_ready", QUESTIONS_FILE, {"questions": True}),
    ("dev_done", DEV_REPORT_FILE, {"new_commits": 1}),
    ("review_approved", REVIEW_FILE, {}),
    ("tests_passed", TEST_REPORT_FILE, {}),
    ("staging_passed", STAGING_REPORT_FILE, {}),
    ("merged", MERGE_REPORT_FILE, {}),
]

front_matter_bytes = st.text().map(lambda text: ("---\n" + text + "\n---\nbody\n").encode())
# Front matter built from the keys gates read and values that break naive parsers.
hostile_values = st.one_of(
    st.sampled_from(
        ["APPROVE", "PASS", "passed", "merged", "0", "'0'", "false", "no", "null", "~",
         "2020-13-45", "!!int x", "!!float x", "!!bool maybe", "!!binary zz", "[[[[",
         "[unclosed", "{a: [", "&a [*a]", "|\n  block", "- a\n- b", "\xff"]
    ),
    st.text(max_size=20),
)
front_matter_lines = st.lists(
    st.tuples(
        st.sampled_from(["verdict", "result", "status", "exit_code", "outcome", "pushed",
                         "commit", "defer", "blocking", "reason"]),
        hostile_values,
    ),
    max_size=6,
)
yaml_ish_bytes = st.tuples(front_matter_lines, st.booleans()).map(
    lambda case: (
        "---\n"
        + "".join(f"{key}: {value}\n" for key, value in case[0])
        + ("---\nbody\n" if case[1] else "")
    ).encode("utf-8", "surrogatepass")
)


@settings(max_examples=300, deadline=None)
@given(content=st.one_of(st.binary(), front_matter_bytes, yaml_ish_bytes))
def test_no_gate_raises_for_arbitrary_bytes(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for gate, name, fields in PROPERTY_CASES:
            put(directory, ANALYSIS_FILE, "analysis\n", offset_s=1)
            put(directory, name, content, offset_s=2)
            result = judged(gate, directory, **fields)
            assert isinstance(result.verdict, Verdict)
            assert isinstance(questions_active(directory, [ANALYSIS_FILE]), bool)


# --- templates ---------------------------------------------------------------------------

TEMPLATE_KEYS = {
    TASK_FILE: {"id", "repo", "title"},
    QUESTIONS_FILE: {"blocking"},
    ANALYSIS_FILE: set(),
    DEV_REPORT_FILE: set(),
    REVIEW_FILE: {"verdict"},
    TEST_REPORT_FILE: {"result", "status", "exit_code"},
    STAGING_REPORT_FILE: {"outcome"},
    MERGE_REPORT_FILE: {"result", "commit", "pushed"},
}


def test_template_keys_cover_the_manifest() -> None:
    assert set(TEMPLATE_KEYS) == set(MANIFEST)


@pytest.mark.parametrize("name", MANIFEST)
def test_template_parses_with_the_keys_its_gate_reads(name: str) -> None:
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    assert text.startswith("---\n")
    document = parse_document(text)
    assert TEMPLATE_KEYS[name] <= set(document.meta)
    assert document.body.strip()


def test_templates_readme_names_every_file() -> None:
    readme = (TEMPLATES / "README.md").read_text(encoding="utf-8")
    for name in MANIFEST:
        assert f"`{name}`" in readme


@pytest.mark.parametrize("gate", ["review_approved", "tests_passed", "staging_passed", "merged"])
def test_unfilled_report_template_never_passes(tmp_path: Path, gate: str) -> None:
    name = FILE_GATES[gate][0]
    put(tmp_path, name, (TEMPLATES / name).read_text(encoding="utf-8"))
    assert judged(gate, tmp_path).verdict == Verdict.RETRY


def test_questions_template_blocks(tmp_path: Path) -> None:
    put(tmp_path, QUESTIONS_FILE, (TEMPLATES / QUESTIONS_FILE).read_text(encoding="utf-8"))
    assert questions_active(tmp_path, [ANALYSIS_FILE])
