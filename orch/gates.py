"""Gates: turn a finished run's artifacts into one Verdict (SPEC sections 3, 6, 7, 8).

A gate is a pure function over files: it reads `tasks/<id>/` and returns a
GateResult. It never touches the database or git (the engine counts the task
branch's new commits and passes the number in) and never raises for a bad
file: a missing, stale, empty or malformed artifact is a RETRY; only what a
valid artifact states (REQUEST_CHANGES, FAIL, failed, conflict) is a FAIL.

Freshness: a file counts only when its mtime is not older than the run's
start (`st_mtime >= run_started`, no slack). This relies on the filesystem
keeping sub-second timestamps that come from the same wall clock as
`run_started` (ext4, xfs and btrfs do; the state home must be local anyway).
On a filesystem with 1-2 s timestamps, or a kernel whose coarse file clock
lags `time.time()` by a tick, a file written within that window of the start
would look stale and the run would be retried, never passed wrongly.

Value parsing is tolerant of case and surrounding blanks (`approve`,
` Passed `), never of other spellings; the test report's `exit_code` must be
a YAML integer (or null): `"0"` is malformed (RETRY), never a PASS.

Every read goes through `orch.artifacts.read_artifact` (a regular file directly
in the task folder, non-blocking, at most 1 MiB; anything else is a RETRY
naming what it is), and a reason quotes at most 200 characters of what an
agent wrote (`orch.artifacts.quote`, `describe_value`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.artifacts import (
    ANALYSIS_FILE,
    DEV_REPORT_FILE,
    MERGE_REPORT_FILE,
    QUESTIONS_FILE,
    REVIEW_FILE,
    STAGING_REPORT_FILE,
    TEST_REPORT_FILE,
    ArtifactError,
    ArtifactFile,
    Document,
    MissingArtifact,
    artifact_stat,
    describe_value,
    parse_document,
    quote,
    read_artifact,
)
from orch.model import Verdict

_FALSE_WORDS = frozenset({"false", "no", "off", "0"})
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_REASON_LIMIT = 300

_REVIEW_VERDICTS = {"APPROVE": Verdict.PASS, "REQUEST_CHANGES": Verdict.FAIL}
_TEST_STATUS = {"PASS": "passed", "FAIL": "failed", "DEFER": "deferred"}
_STAGING_OUTCOMES = {
    "passed": Verdict.PASS,
    "failed": Verdict.FAIL,
    "permanent-env": Verdict.HOLD,
    "transient-infra": Verdict.DEFER,
}


@dataclass(frozen=True)
class GateContext:
    """What a gate may know about the run it judges.

    `run_started` is epoch seconds (`time.time()`) taken before the run began;
    a deliverable counts when its mtime is >= it (no slack, see the module
    docstring). `new_commits` is the number of commits the run added to the
    task branch (only `dev_done` reads it); `exit_code` the run's exit status
    (only `exit_zero` reads it).
    """

    artifacts: Path
    run_started: float
    deliverables: tuple[str, ...] = ()
    questions: bool = False
    questions_gate_enabled: bool = True
    new_commits: int | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class GateResult:
    """A verdict and one line a person can read saying why."""

    verdict: Verdict
    reason: str


class _Unusable(Exception):
    """An artifact that counts for nothing (missing, stale, empty, malformed): a RETRY."""


Gate = Callable[[GateContext], GateResult]


def _result(verdict: Verdict, reason: str) -> GateResult:
    """Build a GateResult whose reason is one line of bounded length."""
    line = " ".join(reason.split())
    if len(line) > _REASON_LIMIT:
        line = line[: _REASON_LIMIT - 3] + "..."
    return GateResult(verdict, line)


def _file_gate(gate: Gate) -> Gate:
    """Turn every unusable, unreadable or malformed artifact into RETRY."""

    @functools.wraps(gate)
    def judged(ctx: GateContext) -> GateResult:
        try:
            return gate(ctx)
        except _Unusable as exc:
            return _result(Verdict.RETRY, str(exc))
        except (ArtifactError, OSError) as exc:
            return _result(Verdict.RETRY, f"artifact unreadable: {quote(exc)}")

    return judged


# --- reading artifacts -------------------------------------------------------


def _mtime_ns(folder: Path, name: str) -> int | None:
    """The mtime in nanoseconds of NAME directly in FOLDER (never through a link), or None
    when it does not exist."""
    st = artifact_stat(folder, name)
    return None if st is None else st.st_mtime_ns


def _read_fresh_file(ctx: GateContext, name: str) -> ArtifactFile:
    """The deliverable's bytes, when it is a safe regular file written during the run."""
    try:
        file = read_artifact(ctx.artifacts, name)
    except MissingArtifact:
        raise _Unusable(f"{name} is missing") from None
    except ArtifactError as exc:
        raise _Unusable(str(exc)) from None
    if file.mtime < ctx.run_started:
        raise _Unusable(f"{name} is stale (written before the run)")
    return file


def _parse(name: str, text: str) -> Document:
    """Parse an artifact's text; _Unusable when its front matter is malformed."""
    try:
        return parse_document(text)
    except ArtifactError as exc:
        raise _Unusable(f"{name} is malformed: {exc}") from exc


def _text(file: ArtifactFile) -> str:
    """A file's UTF-8 text; _Unusable when it is not UTF-8."""
    try:
        return file.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Unusable(f"{file.name} is not UTF-8 text") from exc


def _read_fresh(ctx: GateContext, name: str) -> Document:
    """Read a deliverable that must be fresh and well-formed."""
    return _parse(name, _text(_read_fresh_file(ctx, name)))


def _require_content(ctx: GateContext, name: str) -> None:
    """A prose deliverable: fresh, well-formed, and with non-blank text.

    For Markdown (`.md`) the text is the body after the front matter, so a
    file holding only front matter is empty; other files must have any
    non-whitespace byte.
    """
    if name.endswith(".md"):
        blank = not _read_fresh(ctx, name).body.strip()
    else:
        blank = not _read_fresh_file(ctx, name).data.strip()
    if blank:
        raise _Unusable(f"{name} is empty")


def _check_deliverables(ctx: GateContext, names: Sequence[str], skip: Collection[str] = ()) -> None:
    """Every named deliverable (but those in `skip`) is fresh and non-empty."""
    for name in names:
        if name not in skip:
            _require_content(ctx, name)


# --- reading values ----------------------------------------------------------


def _word(meta: dict[str, Any], key: str) -> str | None:
    """A front matter value as a stripped string, or None when it is not a string."""
    value = meta.get(key)
    return value.strip() if isinstance(value, str) else None


def _is_int(value: object) -> bool:
    """True for a YAML integer (bools are not integers here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_false(value: object) -> bool:
    """YAML false, 0, or one of the strings false/no/off/0 (any case)."""
    if isinstance(value, bool):
        return not value
    if _is_int(value):
        return value == 0
    return isinstance(value, str) and value.strip().lower() in _FALSE_WORDS


def _is_true(value: object) -> bool:
    """YAML true, 1, or one of the strings true/yes/on/1 (any case)."""
    if isinstance(value, bool):
        return value
    if _is_int(value):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in _TRUE_WORDS


def _bad_value(name: str, meta: dict[str, Any], key: str, allowed: str) -> _Unusable:
    """The error for a front matter key that is absent or not an allowed value."""
    if key not in meta:
        return _Unusable(f"{name}: no `{key}` in the front matter (expected {allowed})")
    return _Unusable(f"{name}: {key} {describe_value(meta[key])} is not {allowed}")


def _note(meta: dict[str, Any]) -> str:
    """The report's own `reason`, as a suffix for a gate's reason."""
    reason = meta.get("reason")
    if isinstance(reason, str | int | float) and str(reason).strip():
        return f" ({quote(reason)})"
    return ""


# --- questions (SPEC section 7) ----------------------------------------------


def questions_active(artifacts_dir: Path, deliverables: Sequence[str]) -> bool:
    """True when 01-questions.md exists, is blocking, and is not superseded.

    Blocking unless its front matter says `blocking: false` (or no/off/0); a
    file whose front matter is malformed or unreadable still blocks, since a
    person can sort it out. Superseded when every deliverable exists and each
    is strictly newer (mtime) than the questions file; with no deliverables
    nothing can supersede it. Never raises: an unexpected filesystem error
    counts as active questions (a person looks rather than the run passing).
    """
    try:
        asked = _mtime_ns(artifacts_dir, QUESTIONS_FILE)
        if asked is None or not _questions_blocking(artifacts_dir):
            return False
        return not _superseded(artifacts_dir, deliverables, asked)
    except (OSError, ArtifactError):
        return True


def _questions_blocking(artifacts_dir: Path) -> bool:
    """Whether the questions file blocks; a malformed or unsafe one (a FIFO, a link, over
    the cap) does: a person looks rather than the run passing."""
    try:
        file = read_artifact(artifacts_dir, QUESTIONS_FILE)
        meta = _parse(QUESTIONS_FILE, _text(file)).meta
    except (_Unusable, ArtifactError, OSError):
        return True
    return not _is_false(meta.get("blocking", True))


def _superseded(artifacts_dir: Path, deliverables: Sequence[str], asked_ns: int) -> bool:
    """Every deliverable exists and is strictly newer than the questions."""
    if not deliverables:
        return False
    for name in deliverables:
        written = _mtime_ns(artifacts_dir, name)
        if written is None or written <= asked_ns:
            return False
    return True


# --- the gates -----------------------------------------------------------------


@_file_gate
def analysis_ready(ctx: GateContext) -> GateResult:
    """Active questions: NEEDS_INPUT; else PASS when every deliverable is ready.

    Deliverables default to 02-analysis.md. Questions count only on a stage
    with `questions: true` and while the questions gate flag is on; they win
    over ready deliverables.
    """
    names = ctx.deliverables or (ANALYSIS_FILE,)
    if ctx.questions and ctx.questions_gate_enabled and questions_active(ctx.artifacts, names):
        return _result(Verdict.NEEDS_INPUT, f"{QUESTIONS_FILE} has blocking questions")
    _check_deliverables(ctx, names)
    return _result(Verdict.PASS, f"{', '.join(names)} ready")


@_file_gate
def dev_done(ctx: GateContext) -> GateResult:
    """PASS when the dev report is ready and the run added a commit to the task branch."""
    names = ctx.deliverables or (DEV_REPORT_FILE,)
    _check_deliverables(ctx, names)
    if ctx.new_commits is None:
        return _result(Verdict.RETRY, "the task branch's new commits were not counted")
    if ctx.new_commits < 1:
        return _result(Verdict.RETRY, "no commit added to the task branch during the run")
    return _result(Verdict.PASS, f"{', '.join(names)} ready, {ctx.new_commits} new commit(s)")


@_file_gate
def review_approved(ctx: GateContext) -> GateResult:
    """12-review.md `verdict`: APPROVE is PASS, REQUEST_CHANGES is FAIL, else RETRY."""
    _check_deliverables(ctx, ctx.deliverables, skip=(REVIEW_FILE,))
    meta = _read_fresh(ctx, REVIEW_FILE).meta
    word = (_word(meta, "verdict") or "").upper()
    if word not in _REVIEW_VERDICTS:
        raise _bad_value(REVIEW_FILE, meta, "verdict", "APPROVE or REQUEST_CHANGES")
    return _result(_REVIEW_VERDICTS[word], f"{REVIEW_FILE}: verdict {word}")


@_file_gate
def tests_passed(ctx: GateContext) -> GateResult:
    """13-test-report.md: PASS only when result, status and exit_code all say so.

    Any disagreement between the three is a FAIL (fail closed); a report with
    a missing or unknown value is malformed (RETRY).
    """
    _check_deliverables(ctx, ctx.deliverables, skip=(TEST_REPORT_FILE,))
    meta = _read_fresh(ctx, TEST_REPORT_FILE).meta
    result, status, exit_code = _test_fields(meta)
    fields = f"result {result}, status {status}, exit_code {exit_code}"
    agree = status == _TEST_STATUS[result] and _exit_code_agrees(result, exit_code)
    if not agree:
        return _result(Verdict.FAIL, f"{TEST_REPORT_FILE}: fields disagree ({fields})")
    return _result(Verdict(result), f"{TEST_REPORT_FILE}: result {result}{_note(meta)}")


def _test_fields(meta: dict[str, Any]) -> tuple[str, str, int | None]:
    """The report's result, status and exit_code; _Unusable when one is malformed."""
    result = (_word(meta, "result") or "").upper()
    if result not in _TEST_STATUS:
        raise _bad_value(TEST_REPORT_FILE, meta, "result", "PASS, FAIL or DEFER")
    status = (_word(meta, "status") or "").lower()
    if status not in _TEST_STATUS.values():
        raise _bad_value(TEST_REPORT_FILE, meta, "status", "passed, failed or deferred")
    if "exit_code" not in meta:
        raise _bad_value(TEST_REPORT_FILE, meta, "exit_code", "an integer")
    exit_code = meta["exit_code"]
    if exit_code is not None and not _is_int(exit_code):
        raise _bad_value(TEST_REPORT_FILE, meta, "exit_code", "an integer")
    return result, status, exit_code


def _exit_code_agrees(result: str, exit_code: int | None) -> bool:
    """PASS needs exit 0; DEFER cannot have exit 0; FAIL may (a failed smoke check)."""
    if result == "PASS":
        return exit_code == 0
    if result == "DEFER":
        return exit_code != 0
    return True


@_file_gate
def staging_passed(ctx: GateContext) -> GateResult:
    """14-staging-report.md `outcome`: passed, failed, permanent-env, transient-infra."""
    _check_deliverables(ctx, ctx.deliverables, skip=(STAGING_REPORT_FILE,))
    meta = _read_fresh(ctx, STAGING_REPORT_FILE).meta
    outcome = (_word(meta, "outcome") or "").lower()
    if outcome not in _STAGING_OUTCOMES:
        allowed = "passed, failed, permanent-env or transient-infra"
        raise _bad_value(STAGING_REPORT_FILE, meta, "outcome", allowed)
    return _result(_STAGING_OUTCOMES[outcome], f"{STAGING_REPORT_FILE}: outcome {outcome}")


@_file_gate
def merged(ctx: GateContext) -> GateResult:
    """15-merge-report.md `result`: merged (and pushed), conflict, or blocked."""
    _check_deliverables(ctx, ctx.deliverables, skip=(MERGE_REPORT_FILE,))
    meta = _read_fresh(ctx, MERGE_REPORT_FILE).meta
    result = (_word(meta, "result") or "").lower()
    name = MERGE_REPORT_FILE
    if result == "merged":
        return _judge_merged(meta)
    if result == "conflict":
        return _result(Verdict.FAIL, f"{name}: result conflict{_note(meta)}")
    if result == "blocked" and _is_true(meta.get("defer")):
        return _result(Verdict.DEFER, f"{name}: result blocked, deferred{_note(meta)}")
    if result == "blocked":
        return _result(Verdict.HOLD, f"{name}: result blocked{_note(meta)}")
    raise _bad_value(name, meta, "result", "merged, conflict or blocked")


def _judge_merged(meta: dict[str, Any]) -> GateResult:
    """A merged report: HOLD when the push failed, PASS when it names its commit."""
    name = MERGE_REPORT_FILE
    if _is_false(meta.get("pushed")):
        return _result(Verdict.HOLD, f"{name}: merged but not pushed{_note(meta)}")
    commit = meta.get("commit")
    if not (isinstance(commit, str) and commit.strip()) and not _is_int(commit):
        raise _bad_value(name, meta, "commit", "the new tip of the default branch")
    return _result(Verdict.PASS, f"{name}: merged at {quote(commit)}")


def exit_zero(ctx: GateContext) -> GateResult:
    """A command stage: exit 0 is PASS, another exit FAIL, no exit status RETRY.

    No exit status (None: the run was killed or never exited) is a RETRY,
    since SPEC section 3 makes a crashed run a RETRY, not a judged FAIL.
    """
    code = ctx.exit_code
    if code is None or not _is_int(code):
        return _result(Verdict.RETRY, f"no exit status recorded ({describe_value(code)})")
    if code == 0:
        return _result(Verdict.PASS, "exit status 0")
    return _result(Verdict.FAIL, f"exit status {code}")


def approved(ctx: GateContext) -> GateResult:
    """A human stage: `orch approve` applies the verdict itself, so this is PASS."""
    return _result(Verdict.PASS, "approved")


GATES: dict[str, Gate] = {
    "analysis_ready": analysis_ready,
    "dev_done": dev_done,
    "review_approved": review_approved,
    "tests_passed": tests_passed,
    "staging_passed": staging_passed,
    "merged": merged,
    "exit_zero": exit_zero,
    "approved": approved,
}


def run_gate(gate_name: str, ctx: GateContext) -> GateResult:
    """Run the named gate; an unknown name is a HOLD, never a KeyError."""
    gate = GATES.get(gate_name)
    if gate is None:
        return _result(Verdict.HOLD, f"unknown gate {gate_name!r}")
    return gate(ctx)
