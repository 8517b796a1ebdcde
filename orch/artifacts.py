"""Artifacts: Markdown files with YAML front matter in `tasks/<id>/` (SPEC section 6).

Reading never raises for a bad file: it raises ArtifactError, which gates turn
into RETRY. Writing is atomic (temp file + replace) so a reader never sees half
a report.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASK_FILE = "00-task.md"
QUESTIONS_FILE = "01-questions.md"
ANALYSIS_FILE = "02-analysis.md"
DEV_REPORT_FILE = "10-dev-report.md"
REVIEW_FILE = "12-review.md"
TEST_REPORT_FILE = "13-test-report.md"
STAGING_REPORT_FILE = "14-staging-report.md"
MERGE_REPORT_FILE = "15-merge-report.md"

MANIFEST = (
    TASK_FILE,
    QUESTIONS_FILE,
    ANALYSIS_FILE,
    DEV_REPORT_FILE,
    REVIEW_FILE,
    TEST_REPORT_FILE,
    STAGING_REPORT_FILE,
    MERGE_REPORT_FILE,
)


class ArtifactError(Exception):
    """A deliverable that is missing, empty or malformed (a RETRY, never a crash)."""


@dataclass(frozen=True)
class Document:
    meta: dict[str, Any]
    body: str


def parse_document(text: str) -> Document:
    """Split `---` front matter from the body; a file without front matter has empty meta."""
    if not text.startswith("---"):
        return Document({}, text)
    lines = text.split("\n")
    if lines[0].strip() != "---":
        return Document({}, text)
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            import yaml

            raw = "\n".join(lines[1:index])
            try:
                meta = yaml.safe_load(raw) if raw.strip() else {}
            except (yaml.YAMLError, ValueError, KeyError, TypeError, RecursionError) as exc:
                # PyYAML raises more than YAMLError for odd scalars (dates, tags)
                raise ArtifactError(f"front matter is not valid YAML: {exc}") from exc
            if meta is None:
                meta = {}
            if not isinstance(meta, dict):
                raise ArtifactError("front matter is not a mapping")
            return Document(meta, "\n".join(lines[index + 1 :]))
    raise ArtifactError("front matter has no closing '---'")


def read_document(path: Path) -> Document:
    """Read an artifact; ArtifactError when it is missing, unreadable or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path.name} is missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path.name} is unreadable: {exc}") from exc
    return parse_document(text)


def render_plain_document(meta: dict[str, str | int], body: str) -> str:
    """`render_document` for front matter of plain strings and integers only, without
    PyYAML: each string is written JSON-quoted, which is a YAML double-quoted scalar that
    reads back as the same string (`orch task import` writes thousands of 00-task.md)."""
    import json

    lines = []
    for key, value in meta.items():
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError(f"{key}: only strings and integers, got {value!r}")
        lines.append(f"{key}: {json.dumps(value, ensure_ascii=False)}")
    if not body.endswith("\n"):
        body += "\n"
    return "---\n" + "\n".join(lines) + "\n---\n" + body


def render_document(meta: dict[str, Any], body: str) -> str:
    import yaml

    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
    if not body.endswith("\n"):
        body += "\n"
    return f"---\n{front}---\n{body}"


def write_atomic(path: Path, text: str) -> None:
    """Write a file through a temp file and os.replace, so readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_document(path: Path, meta: dict[str, Any], body: str) -> None:
    """Write an artifact with front matter atomically."""
    write_atomic(path, render_document(meta, body))
