"""Task operations behind `orch task ...`: add, import, list, show, move."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.artifacts import TASK_FILE, render_plain_document, write_atomic
from orch.config import Settings
from orch.errors import ConfigError, NotFoundError, RefusedError, UsageError
from orch.model import JobStatus
from orch.state import artifacts, events, jobs, runs, tasks
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


def validate_new_task(settings: Settings, new: NewTask, where: str = "",
                      elsewhere: frozenset[str] = frozenset()) -> None:
    """Unknown repo: exit 3; an empty title: a usage error. ELSEWHERE: the repos that
    live hosts of a shared state have (SPEC section 11: any of them is accepted)."""
    prefix = f"{where}: " if where else ""
    if new.repo not in settings.repos and new.repo not in elsewhere:
        known = ", ".join(sorted(set(settings.repos) | elsewhere)) or "none configured"
        raise NotFoundError(f"{prefix}no such repo: {new.repo!r} (known: {known})")
    if not new.title.strip():
        raise UsageError(f"{prefix}title must not be empty")
    if not -(2**63) <= new.priority < 2**63:  # SQLite's INTEGER range
        raise UsageError(f"{prefix}priority {new.priority} is out of range")


def live_repos(settings: Settings, db: Database) -> frozenset[str]:
    """The repos live hosts of a shared state have (empty on SQLite: just orch.yaml's)."""
    if not db.multi_host:
        return frozenset()
    from orch.state import hosts

    return frozenset(repo for host in hosts.all_hosts(db)
                     if host.alive(settings.host_timeout_s) for repo in host.repos)


def add_task(settings: Settings, db: Database, new: NewTask, first_stage: str) -> Task:
    """Insert one task (waiting at the first stage) and write its 00-task.md."""
    validate_new_task(settings, new, elsewhere=live_repos(settings, db))
    with db.transaction():
        task_id = _insert(db, new, first_stage)
        write_atomic(settings.paths.artifacts(task_id) / TASK_FILE, task_document(task_id, new))
        _store_task_files(settings, db, [task_id])
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
    elsewhere = live_repos(settings, db)
    for line, record in records:
        new = _record_to_task(record, f"{path}:{line}")
        validate_new_task(settings, new, f"{path}:{line}", elsewhere)
        checked.append(new)
    with db.transaction():
        at = now_iso()  # one import, one moment: every row and event gets the same stamp
        ids = [_insert(db, new, first_stage, at) for new in checked]
        _write_task_files(settings, list(zip(ids, checked, strict=True)))
        _store_task_files(settings, db, ids)
    return ids


def _store_task_files(settings: Settings, db: Database, ids: list[int]) -> None:
    """On a state shared by several hosts, 00-task.md in the state too: the host that
    admits the task may be another (SPEC section 11)."""
    if not db.multi_host:
        return
    from orch.engine.stored import store_task_file

    for task_id in ids:
        store_task_file(db, settings.paths.artifacts(task_id), task_id)


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
    local = {p.name for p in folder.iterdir() if p.is_file()
             and not p.name.startswith(".")} if folder.is_dir() else set()
    # on a state shared by several hosts, the files stored as runs were judged count too
    names = sorted(local | set(artifacts.names(db, task_id))) if db.multi_host \
        else sorted(local)
    return {"task": task.as_dict(),
            "jobs": [job.as_dict() for job in jobs.for_task(db, task_id)],
            "runs": [run.as_dict() for run in runs.for_task(db, task_id)],
            "events": [event.as_dict() for event in events.for_task(db, task_id)],
            "artifacts": names}


def move_task(db: Database, task_id: int, host: str) -> str:
    """`orch task move ID --host H`: pin a task to another host (SPEC section 11).

    Refused (exit 1) while a job of the task runs, or when H does not configure the
    task's repo; exit 3 for an unknown task or a host that never ticked on this state.
    The new host builds the worktree from the pushed task branch (merge.push_branches)
    or, without one, anew from the default branch; the task's files come from the
    state. A task held because its host is gone stays held until `orch retry`.
    """
    from orch.state import hosts

    with db.transaction():
        task = tasks.get(db, task_id, lock=True)
        if task is None:
            raise NotFoundError(f"no such task: {task_id}")
        if task.closed:
            raise RefusedError(f"task {task_id} is closed ({task.stage}): cannot move it")
        target = hosts.get(db, host)
        if target is None:
            known = ", ".join(h.name for h in hosts.all_hosts(db)) or "none yet"
            raise NotFoundError(f"no such host: {host!r} (hosts of this state: {known})")
        job = jobs.open_job(db, task_id)
        if job is not None and job.status == JobStatus.RUNNING:
            raise RefusedError(f"task {task_id}: job {job.id} runs on host {job.host}; "
                               "wait for it to end (or orch cancel it), then move the task")
        if task.repo not in target.repo_limits:
            raise RefusedError(f"host {host} does not configure repo {task.repo}")
        if task.host == host:
            return f"task {task_id}: already on host {host}"
        tasks.update(db, task_id, host=host)
        events.record(db, "moved", f"pinned to host {host} (was {task.host or 'none'}) by "
                      "orch task move", task_id=task_id)
    return f"task {task_id}: moved to host {host}"


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

