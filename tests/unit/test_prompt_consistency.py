"""Every role's prompt, in every situation, agrees with itself.

Each packaged role (and the generic template a role without one gets) is
rendered for each situation a task can be in when its agent starts: the first
round, after a REQUEST_CHANGES review, after failing tests, after a merge
conflict, after a person's reject reason. Each prompt is split into what it
tells the agent to do and what it forbids (the bullets under a "Do not"
heading, and any clause with "do not", "don't", "never" or "must not"), and
the written list FORBIDDEN_PAIRS below names the instructions that must never
appear together with a prohibition of the same act. A prompt that says
"`git rebase main`" above a "Do not" list with "rebase onto `main`" (what a
developer got after a merge conflict) fails here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from orch.prompts import GENERIC_TEMPLATE, load_prompt_template, prompt_context, render_prompt

WORKTREE = Path("/wt/app/7")

# role -> (its stage, the deliverables it writes)
ROLES = {
    "analyst": ("analysis", ("02-analysis.md", "01-questions.md")),
    "developer": ("development", ("10-dev-report.md",)),
    "reviewer": ("review", ("12-review.md",)),
    "tester": ("testing", ("13-test-report.md",)),
    "docs": ("docs", ()),  # no packaged template: the generic one
}
DELIVERABLES = ("02-analysis.md", "01-questions.md", "10-dev-report.md", "12-review.md",
                "13-test-report.md", "14-staging-report.md", "15-merge-report.md")

MERGE_CONFLICT_REPORT = """---
task: 7
result: conflict
conflicts: [src/app.py, README.md]
---
**Conflict.** both changed src/app.py; `orch/7` and `main` are unchanged.
"""

# situation -> (round, {artifact file: text}, reject reason)
SITUATIONS: dict[str, tuple[int, dict[str, str], str | None]] = {
    "first round": (0, {}, None),
    "after REQUEST_CHANGES": (
        1, {"12-review.md": "---\nverdict: REQUEST_CHANGES\n---\nRename x to width.\n"}, None),
    "after failing tests": (
        1, {"13-test-report.md": "---\nresult: FAIL\nstatus: failed\nexit_code: 1\n---\n"
                                 "test_width failed: assert 3 == 4\n"}, None),
    "after a merge conflict": (2, {"15-merge-report.md": MERGE_CONFLICT_REPORT}, None),
    "after a reject reason": (
        1, {"14-staging-report.md": "---\noutcome: passed\n---\n"}, "The flag is too slow."),
}


def _banned(verb: str) -> str:
    """A prohibition whose list of verbs names VERB: "do not push, merge, rebase onto"."""
    return (r"\b(?:do not|don't|never|must not)\s+(?:[\w`-]+,?\s+(?:or\s+|and\s+)?){0,6}?"
            + verb)


@dataclass(frozen=True)
class Pair:
    """An instruction (regex over what the prompt tells the agent to do) that must never
    appear with a prohibition (regex over what it forbids) of the same act."""

    name: str
    instruction: str
    prohibition: str


FORBIDDEN_PAIRS = (
    Pair("rebase onto the default branch / do not rebase",
         r"\bgit\b(?: -C \S+)? rebase\b|\brebas\w* (?:[\w`/{}]+ ){0,3}onto\b", _banned("rebas")),
    Pair("commit / do not commit", r"\bcommit (?:your|any|the|it|them|on)\b",
         _banned("commit")),
    Pair("push / do not push", r"\bgit push\b|\bpush (?:your|the|it)\b", _banned("push")),
    Pair("merge into the default branch / do not merge",
         r"\bgit\b(?: -C \S+)? merge\b|\bmerge (?:it|your branch|the branch) into\b",
         _banned("merge")),
    Pair("switch branches / do not switch", r"\bgit\b(?: -C \S+)? (?:checkout|switch)\b",
         r"\bswitch\w*\b[^.;]*\bbranch"),
    Pair("run the tests / do not run the tests", r"\brun (?:the|the project's)\b[\w' ]*\btest",
         _banned(r"run\b[^.;]*\btests?")),
    Pair("fix or edit code / do not fix or edit",
         r"\bfix (?:the cause|it|them|the code|the tests?)\b|\bedit (?:the )?(?:code|tests)\b",
         _banned("(?:fix|edit)")),
    Pair("ask a person / do not ask",
         r"\bask (?:the person|a person|the user|them)\b|\bwait for (?:an? )?(?:answer|input)\b",
         _banned("(?:ask|wait)")),
)

_HEADING = re.compile(r"^#{1,6} ")
_DONT_HEADING = re.compile(r"^#{1,6} .*\bdo not\b", re.IGNORECASE)
_NEGATIVE = re.compile(r"\b(?:do not|don't|never|must not)\b", re.IGNORECASE)
_CLAUSE_END = re.compile(r"(?<=[.;:!?])\s+|\n\s*\n")


def split_prompt(text: str) -> tuple[list[str], list[str]]:
    """(instructions, prohibitions) of a prompt, each a list of one-line clauses, lowercase.

    A bullet under a "Do not" heading is a prohibition ("do not " + the bullet); so
    is any clause elsewhere that says "do not", "don't", "never" or "must not".
    """
    rest: list[str] = []
    prohibitions: list[str] = []
    in_dont = False
    for line in text.splitlines():
        if _HEADING.match(line):
            in_dont = bool(_DONT_HEADING.match(line))
            continue
        if in_dont:
            if line.startswith("- "):
                prohibitions.append("do not " + line[2:])
            elif line.strip() and prohibitions:
                prohibitions[-1] += " " + line.strip()
            continue
        rest.append(line)
    instructions = []
    for clause in _CLAUSE_END.split("\n".join(rest)):
        flat = " ".join(clause.split()).lower()
        if flat:
            (prohibitions if _NEGATIVE.search(flat) else instructions).append(flat)
    return instructions, [" ".join(p.split()).lower() for p in prohibitions]


def contradictions(text: str, role: str) -> list[str]:
    """Every forbidden pair the prompt holds, and every write-instruction for a deliverable
    of another role, each as a line naming the clauses."""
    instructions, prohibitions = split_prompt(text)
    found = []
    for pair in FORBIDDEN_PAIRS:
        told = [c for c in instructions if re.search(pair.instruction, c, re.IGNORECASE)]
        banned = [c for c in prohibitions if re.search(pair.prohibition, c, re.IGNORECASE)]
        if told and banned:
            found.append(f"{pair.name}: told {told[0]!r} but {banned[0]!r}")
    own = ROLES[role][1]
    for clause in instructions:
        for name in DELIVERABLES:
            if name not in own and re.search(rf"\bwrite\b.*{re.escape(name)}", clause):
                found.append(f"a {role} is told to write {name}: {clause!r}")
    return found


def render(role: str, situation: str, tmp_path: Path) -> str:
    round_no, files, reject = SITUATIONS[situation]
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "00-task.md").write_text("---\nid: 7\nrepo: app\ntitle: Add a width flag\n"
                                          "---\nAdd --width to the CLI.\n")
    for name, text in files.items():
        (artifacts / name).write_text(text)
    context = prompt_context(
        task_id=7, repo="app", stage=ROLES[role][0], round_no=round_no, artifacts=artifacts,
        worktree=WORKTREE, branch="orch/7", default_branch="main", role=role,
        reject_reason=reject, test_command="/srv/app/.venv/bin/python -m pytest -q")
    template = load_prompt_template(role)
    if role == "docs":
        assert template == GENERIC_TEMPLATE
    return render_prompt(template, context)


@pytest.mark.parametrize("situation", list(SITUATIONS))
@pytest.mark.parametrize("role", list(ROLES))
def test_no_prompt_contradicts_itself(role: str, situation: str, tmp_path: Path) -> None:
    text = render(role, situation, tmp_path)
    assert "{{" not in text
    assert contradictions(text, role) == [], text


def test_the_developer_is_told_what_to_do_after_a_merge_conflict(tmp_path: Path) -> None:
    text = render("developer", "after a merge conflict", tmp_path)
    steps = ["git -C /wt/app/7 rebase main", "`src/app.py`", "`README.md`",
             "git -C /wt/app/7 add <file>", "git -C /wt/app/7 rebase --continue",
             "commit any fix they need on `orch/7`"]
    positions = [text.find(step) for step in steps]
    assert -1 not in positions and positions[0] < positions[3] < positions[4], text
    assert "**Conflict.**" not in text  # the merge report's own words are not quoted
    instructions, _ = split_prompt(text)
    assert any("rebase main" in clause for clause in instructions)


@pytest.mark.parametrize("role", list(ROLES))
def test_every_role_hears_of_the_conflict(role: str, tmp_path: Path) -> None:
    text = render(role, "after a merge conflict", tmp_path)
    assert "`src/app.py`" in text and "stopped" in text


def test_the_checker_catches_the_old_contradiction() -> None:
    """The developer's prompt before this test existed: the merge report's advice quoted
    under a "Do not" list that forbade it."""
    old = ("## Why the last round failed\n\nIn the task worktree, rebase onto the default "
           "branch (`git rebase main`), resolve the conflicts, `git rebase --continue`.\n\n"
           "## What to do\n\n4. Commit your work on `orch/7`.\n\n## Do not\n\n"
           "- push, merge, rebase onto or edit `main`, switch branches, or\n"
           "  rewrite commits that are already on `main`;\n- commit generated files.\n")
    found = contradictions(old, "developer")
    assert [line.split(":")[0] for line in found] == [
        "rebase onto the default branch / do not rebase", "commit / do not commit"]
    assert contradictions("Write `12-review.md` with your verdict.", "developer") == [
        "a developer is told to write 12-review.md: 'write `12-review.md` with your verdict.'"]
