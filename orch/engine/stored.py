"""What a state shared by several hosts keeps besides rows (SPEC section 11).

A task's files live on the host it is pinned to. So that every host reads
the same deliverables, reasons and prompts, each artifact of the task's
folder is stored in the `artifacts` table when a run of the task is judged
(`store_artifacts`), and a host that takes a task over (admits it, or gets
it re-pinned from a dead host) writes the stored files it lacks back into
its own folder with their stored mtimes (`restore_artifacts`: an old file
stays older than any new run, so the gates' freshness rule holds).
`orch task show` lists the stored names beside the local ones.

Each run's log stays on its host; the last 64 KiB of it is stored with the
run when it ends (`log_tail`), for `orch logs` on another host.

A file is read as a gate reads a deliverable, never trusting the agent that
wrote it: a regular file directly in the folder (no symlink, FIFO or device,
opened without following links and without blocking), at most 1 MiB.
On a SQLite home (one host) nothing is stored: every file is already here.
"""

from __future__ import annotations

import os
from pathlib import Path

from orch.artifacts import TASK_FILE, ArtifactError, read_artifact, write_document
from orch.engine.context import Engine
from orch.state import artifacts
from orch.state.db import Database
from orch.state.records import Task
from orch.timeutil import epoch_of, to_iso_epoch

LOG_TAIL_BYTES = 64 * 1024


def read_regular(folder: Path, name: str) -> tuple[bytes, float] | None:
    """(bytes, mtime) of a regular file directly in FOLDER, read as the gates read
    artifacts (`orch.artifacts.read_artifact`: no links, no FIFOs, capped); None for
    anything else."""
    try:
        got = read_artifact(folder, name)
    except ArtifactError:
        return None
    return got.data, got.mtime


def local_files(folder: Path) -> dict[str, tuple[str, str]]:
    """{name: (content, mtime)} of the folder's readable artifacts."""
    found: dict[str, tuple[str, str]] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        got = read_regular(folder, entry.name)
        if got is not None:
            found[entry.name] = (got[0].decode("utf-8", "replace"), to_iso_epoch(got[1]))
    return found


def store_artifacts(engine: Engine, task_id: int, run_id: int | None) -> int:
    """Store the task folder's artifacts that changed since last stored; returns how many."""
    db = engine.db
    if not db.multi_host:
        return 0
    local = local_files(engine.home.artifacts(task_id))
    if not local:
        return 0
    known = artifacts.mtimes(db, task_id)
    changed = {name: value for name, value in local.items() if known.get(name) != value[1]}
    if changed:
        with db.transaction():
            for name, (content, mtime) in sorted(changed.items()):
                artifacts.store(db, task_id, name, run_id, content, mtime)
    return len(changed)


def restore_artifacts(engine: Engine, task: Task) -> list[str]:
    """Write the stored artifacts this host's folder lacks (or has older), with their
    stored mtimes; 00-task.md from the task row when nothing stored it. Returns names."""
    db = engine.db
    if not db.multi_host:
        return []
    folder = engine.home.artifacts(task.id)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for row in artifacts.for_task(db, task.id):
        path = folder / row["name"]
        stamp = epoch_of(row["mtime"]) if row["mtime"] else None
        if os.path.lexists(path) and (stamp is None or path.lstat().st_mtime >= stamp):
            continue
        _write_file(path, str(row["content"]), stamp)
        written.append(str(row["name"]))
    if not (folder / TASK_FILE).exists():
        write_task_file(folder, task)
        written.append(TASK_FILE)
    return written


def _write_file(path: Path, text: str, stamp: float | None) -> None:
    tmp = path.with_name(f".{path.name}.restore")
    tmp.write_text(text, encoding="utf-8")
    if stamp is not None:
        os.utime(tmp, (stamp, stamp))
    os.replace(tmp, path)


def write_task_file(folder: Path, task: Task) -> None:
    """`00-task.md` from the task row (SPEC section 6)."""
    write_document(folder / TASK_FILE, {"id": task.id, "repo": task.repo, "title": task.title,
                                        "priority": task.priority},
                   f"# {task.title}\n\n{task.body}\n")


def store_task_file(db: Database, settings_folder: Path, task_id: int) -> None:
    """At `orch task add` on a shared state: 00-task.md in the database too."""
    if not db.multi_host:
        return
    got = read_regular(settings_folder, TASK_FILE)
    if got is not None:
        artifacts.store(db, task_id, TASK_FILE, None, got[0].decode("utf-8", "replace"),
                        to_iso_epoch(got[1]))


def log_tail(path: str | Path | None) -> str | None:
    """The last 64 KiB of a run's log, to store with the run on a shared state."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return None
