"""Task operations behind `orch task ...`: add, import, list, show."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.artifacts import TASK_FILE, render_plain_document, write_atomic
from orch.config import Settings
from orch.errors import ConfigError, NotFoundError, UsageError
from orch.state import events, jobs, runs, tasks
from orch.state.db import Database
from orch.state.records import Task
from orch.timeutil import now_iso
from orch.yamlio import load_yaml

IMPORT_KEYS = ("repo", "title", "body", "priority")


@dataclass(frozen=True)
class NewTask:
    repo: str
    title: str
    body: str = ""
    priority: int = 0


def validate_new_task(settings: Settings, new: NewTask, where: str = "") -> None:
    """Unknown repo: exit 3; an empty title: a usage error."""
    prefix = f"{where}: " if where else ""
    if new.repo not in settings.repos:
        known = ", ".join(sorted(settings.repos)) or "none configured"
        raise NotFoundError(f"{prefix}no such repo: {new.repo!r} (known: {known})")
    if not new.title.strip():
        raise UsageError(f"{prefix}title must not be empty")
    if not -(2**63) <= new.priority < 2**63:  # SQLite's INTEGER range
        raise UsageError(f"{prefix}priority {new.priority} is out of range")


def add_task(settings: Settings, db: Database, new: NewTask, first_stage: str) -> Task:
    """Insert one task (waiting at the first stage) and write its 00-task.md."""
    validate_new_task(settings, new)
    with db.transaction():
        task_id = _insert(db, new, first_stage)
        write_atomic(settings.paths.artifacts(task_id) / TASK_FILE, task_document(task_id, new))
    task = tasks.get(db, task_id)
    assert task is not None
    return task


def _insert(db: Database, new: NewTask, first_stage: str, at: str | None = None) -> int:
    task_id = tasks.insert(db, repo=new.repo, title=new.title, body=new.body,
                           priority=new.priority, stage=first_stage, at=at)
    events.record(db, "created", f"task added to {new.repo} at stage {first_stage}",
                  task_id=task_id, at=at)
    return task_id


def task_document(task_id: int, new: NewTask) -> str:
    """The text of a task's 00-task.md."""
    return render_plain_document(
        {"id": task_id, "repo": new.repo, "title": new.title, "priority": new.priority},
        f"# {new.title}\n\n{new.body}\n")


def import_tasks(settings: Settings, db: Database, path: Path, first_stage: str) -> list[int]:
    """Add every record of a .yaml/.yml list or a .jsonl file in one transaction; every
    00-task.md is written before the commit."""
    records = read_import_file(path)
    checked = []
    for line, record in records:
        new = _record_to_task(record, f"{path}:{line}")
        validate_new_task(settings, new, f"{path}:{line}")
        checked.append(new)
    with db.transaction():
        at = now_iso()  # one import, one moment: every row and event gets the same stamp
        ids = [_insert(db, new, first_stage, at) for new in checked]
        _write_task_files(settings, list(zip(ids, checked, strict=True)))
    return ids


def _write_task_files(settings: Settings, new_tasks: list[tuple[int, NewTask]]) -> None:
    """00-task.md of each new task, in its new folder, written before the commit.

    Written in place, not through a scratch file and a rename: until the commit no
    task row names the folder, so nothing reads a half-written file, and a file left
    by an import that was rolled back is truncated and rewritten when its id is
    reused. Plain string paths and one thread (more only contend for the lock of the
    parent folder): the files are most of an import's time."""
    root = os.fspath(settings.paths.artifacts(0).parent)
    os.makedirs(root, exist_ok=True)
    for task_id, new in new_tasks:
        folder = f"{root}/{task_id}"
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass
        with open(f"{folder}/{TASK_FILE}", "w", encoding="utf-8") as handle:
            handle.write(task_document(task_id, new))


def read_import_file(path: Path) -> list[tuple[int, Any]]:
    """(line, record) pairs from a YAML list or JSON lines; errors name the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from exc
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        records = []
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                records.append((number, json.loads(raw)))
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{number}: not valid JSON: {exc.msg}") from exc
        return records
    if suffix in (".yaml", ".yml"):
        return _yaml_records(path, text)
    raise UsageError(f"{path}: expected a .yaml, .yml or .jsonl file")


def _yaml_records(path: Path, text: str) -> list[tuple[int, Any]]:

    try:
        data, marks = load_yaml(text, str(path))
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    if data is None:
        return []
    if not isinstance(data, list):
        raise UsageError(f"{path}:{marks.get((), 1)}: expected a list of tasks")
    return [(marks.get((index,), 0), record) for index, record in enumerate(data)]


def _record_to_task(record: Any, where: str) -> NewTask:
    if not isinstance(record, dict):
        raise UsageError(f"{where}: expected an object with repo and title")
    for key in record:
        if key not in IMPORT_KEYS:
            raise UsageError(f"{where}: unknown key {key!r} (allowed: {', '.join(IMPORT_KEYS)})")
    for key in ("repo", "title"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise UsageError(f"{where}: {key} must be a non-empty string")
    body = record.get("body", "")
    if body is None:
        body = ""
    if not isinstance(body, str):
        raise UsageError(f"{where}: body must be a string")
    priority = record.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise UsageError(f"{where}: priority must be an integer")
    return NewTask(record["repo"], record["title"], body, priority)


def get_task(db: Database, task_id: int) -> Task:
    task = tasks.get(db, task_id)
    if task is None:
        raise NotFoundError(f"no such task: {task_id}")
    return task


def task_detail(settings: Settings, db: Database, task_id: int) -> dict[str, Any]:
    """Everything `orch task show` prints: task, jobs, runs, events, artifacts."""
    task = get_task(db, task_id)
    folder = settings.paths.artifacts(task_id)
    names = sorted(p.name for p in folder.iterdir() if p.is_file()
                   and not p.name.startswith(".")) if folder.is_dir() else []
    return {"task": task.as_dict(),
            "jobs": [job.as_dict() for job in jobs.for_task(db, task_id)],
            "runs": [run.as_dict() for run in runs.for_task(db, task_id)],
            "events": [event.as_dict() for event in events.for_task(db, task_id)],
            "artifacts": names}


TASK_STATES = ("waiting", "active", "needs_input", "held", "closed")


@dataclass(frozen=True)
class TaskList:
    """What `orch task list` shows, and how many closed tasks it leaves out."""

    tasks: list[Task]
    hidden_closed: int


def list_tasks(db: Database, *, include_closed: bool, repo: str | None,
               state: str | None = None, stage: str | None = None) -> TaskList:
    """Open tasks (all with INCLUDE_CLOSED or STATE closed), filtered by STATE and STAGE."""
    if state is not None and state not in TASK_STATES:
        raise UsageError(f"--state {state!r}: expected one of {', '.join(TASK_STATES)}")
    closed_too = include_closed or state == "closed"
    rows = tasks.all_tasks(db, repo) if closed_too else tasks.open_tasks(db, repo)
    rows = [row for row in rows if (state is None or str(row.state) == state)
            and (stage is None or row.stage == stage)]
    hidden = 0 if closed_too or state is not None else tasks.count_closed(db, repo, stage)
    return TaskList(rows, hidden)

