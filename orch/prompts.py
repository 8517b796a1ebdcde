"""Prompts: the templates each agent role is given, and what fills them (SPEC 5).

Prompt templates (`docs/templates/prompts/<role>.md`, overridable per home in
`templates/prompts/`) use a tiny syntax, so that single braces in Markdown and
code are safe:

- `{{name}}` is replaced by the context value `name`; an unknown name becomes
  the empty string. Values are inserted verbatim and never re-scanned.
- `{{#name}} ... {{/name}}` keeps its content only when `name` is non-empty
  (say, the previous review, which exists only from round 1). A tag alone on
  its line takes its line break with it. Sections may nest when their names
  differ; a section without its closing tag is left as written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

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

# How much of an earlier artifact goes into a prompt; the agent can read the rest.
EXCERPT_LIMIT = 20_000

_VARIABLE_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SECTION_RE = re.compile(
    r"\{\{#\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\n?(.*?)\{\{/\s*\1\s*\}\}\n?", re.DOTALL
)
_ROLE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

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
{{#merge_conflict}}
Merging `{{branch}}` into `{{default_branch}}` stopped at conflicts in:

{{merge_conflict}}

If this stage changes code, first rebase `{{branch}}` onto `{{default_branch}}` inside
the worktree (`git -C {{worktree}} rebase {{default_branch}}`), keep the intent of both
sides in each file, `git -C {{worktree}} rebase --continue`, and commit any fix on
`{{branch}}`.

{{/merge_conflict}}
{{#test_command}}
The project's tests run with `{{test_command}}` in the worktree.

{{/test_command}}
Do not push, merge, or touch the default branch `{{default_branch}}`, other
tasks' artifacts, or other stages' deliverables. Nobody answers interactive
questions: decide, and say what you assumed.
"""



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
    test_command: str = "",
) -> dict[str, str]:
    """Everything a prompt template may name, as strings ("" when absent).

    Reads `00-task.md` (title and body), `01-questions.md` (as
    `answered_questions`, whenever it exists: the analyst is re-run after a
    person answered it), and from round 1 on the report that sent the task
    back (see `previous_round_report`) as `previous_review` or as
    `failure_report` with its `failure_report_file`. Those files come whole
    (front matter too, cut at EXCERPT_LIMIT) inside a fenced Markdown block.
    After a merge conflict, the merge report is not quoted: `merge_conflict`
    lists the conflicting files instead, and each role's template says what
    that means for it (the developer rebases its branch), so no report's
    advice can contradict the prompt. `reject_reason` is the reason of an
    `orch reject`, which the caller takes from the event; `test_command` is
    the repo's test command as one shell line. The keys that are also argv
    placeholders (task_id, stage, round, artifacts, worktree) hold the same
    values the argv needs.
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
        "test_command": test_command,
    }
    return context | _round_report(artifacts, round_no)


def _round_report(artifacts: Path, round_no: int) -> dict[str, str]:
    """From round 1 on: the report that sent the task back, as the previous review or
    as the failure report (with its file name); empty strings otherwise."""
    found = {"previous_review": "", "failure_report": "", "failure_report_file": "",
             "merge_conflict": ""}
    report = previous_round_report(artifacts) if round_no > 0 else None
    if report is not None:
        name, text = report
        conflicts = _merge_conflicts(text) if name == MERGE_REPORT_FILE else None
        if name == REVIEW_FILE:
            found["previous_review"] = _fenced(text)
        elif conflicts is not None:
            found["merge_conflict"] = "\n".join(f"- `{path}`" for path in conflicts) \
                or "- (the report names no file)"
        else:
            found.update(failure_report=_fenced(text), failure_report_file=name)
    return found


def _merge_conflicts(text: str) -> list[str] | None:
    """The conflicting files of a merge report that says `result: conflict`, else None."""
    try:
        meta = parse_document(text).meta
    except ArtifactError:
        return None
    if str(meta.get("result", "")).lower() != "conflict":
        return None
    files = meta.get("conflicts")
    return [str(path) for path in files] if isinstance(files, list) else []


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
