"""`orch snapshot FILE`: the state and the open tasks' artifacts in one .tar.gz.

Made for bug reports and backups. The database is copied with SQLite's
online backup API (one consistent read; ticks keep running), then packed with
`tasks/<id>/` of every open task and a `manifest.json` (orch version, schema
version, time). The archive's root mirrors a home: `tar -xzf FILE -C NEWHOME`
gives an `orch.db` and `tasks/` (add an `orch.yaml` to use it). The config is
left out on purpose: agent `env` entries may hold secrets.

The archive is built in a temp file next to FILE and only then put in place:
with a hard link, which fails if FILE appeared meanwhile (no overwrite without
`--force`), or with os.replace under `--force`. A crash leaves at most a
hidden temp file, never half an archive under FILE.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch import __version__
from orch.config import Settings
from orch.errors import RefusedError
from orch.home import DB_FILE
from orch.state import tasks
from orch.state.db import Database
from orch.timeutil import now_iso

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SnapshotResult:
    path: Path
    size: int
    schema_version: int
    open_tasks: tuple[int, ...]
    files: int  # artifact files packed
    created_at: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self.size,
                "schema_version": self.schema_version, "open_tasks": list(self.open_tasks),
                "files": self.files, "created_at": self.created_at}


def make_snapshot(settings: Settings, db: Database, target: Path, *,
                  force: bool = False) -> SnapshotResult:
    """Write the snapshot to TARGET; refuses (exit 1) an existing TARGET unless FORCE."""
    target = Path(target)
    _check_target(target, force)
    created = now_iso()
    with tempfile.TemporaryDirectory(prefix="orch-snapshot-") as scratch:
        copy = Path(scratch) / DB_FILE
        schema = _backup(db, copy)
        open_ids = tuple(task.id for task in tasks.open_tasks(db))
        manifest = _manifest(settings, schema, created, open_ids)
        tmp = _temp_next_to(target)
        try:
            files = _pack(tmp, copy, manifest, settings, open_ids)
            _put_in_place(tmp, target, force)
        finally:
            _discard(tmp)
    return SnapshotResult(target, target.stat().st_size, schema, open_ids, files, created)


def _check_target(target: Path, force: bool) -> None:
    if target.is_dir():
        raise RefusedError(f"{target} is a directory; name the .tar.gz file to write")
    if target.exists() and not force:
        raise RefusedError(f"{target} exists; choose another name or pass --force")
    if not target.parent.is_dir():
        raise RefusedError(f"{target}: the directory {target.parent} does not exist")


def _manifest(settings: Settings, schema: int, created: str,
              open_ids: tuple[int, ...]) -> dict[str, Any]:

    return {"orch_version": __version__, "schema_version": schema, "created_at": created,
            "home": str(settings.home), "database": DB_FILE, "open_tasks": list(open_ids)}


def _pack(tmp: Path, db_copy: Path, manifest: dict[str, Any], settings: Settings,
          open_ids: tuple[int, ...]) -> int:
    """Write the archive; returns how many artifact files went in."""
    files = 0
    with tarfile.open(tmp, "w:gz") as archive:
        data = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode = len(data), 0o644
        archive.addfile(info, io.BytesIO(data))
        archive.add(db_copy, arcname=DB_FILE)
        for task_id in open_ids:
            folder = settings.paths.artifacts(task_id)
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    archive.add(path, arcname=f"tasks/{task_id}/{path.relative_to(folder)}",
                                recursive=False)
                    files += 1
    return files


def _temp_next_to(target: Path) -> Path:
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                    dir=str(target.parent))
    except OSError as exc:
        raise RefusedError(f"{target}: cannot write in {target.parent}: "
                           f"{exc.strerror or exc}") from exc
    os.close(fd)
    return Path(name)


def _put_in_place(tmp: Path, target: Path, force: bool) -> None:
    """Rename TMP to TARGET; without FORCE, never over an existing file (even a new one)."""
    if force:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # atomic create-if-absent
    except FileExistsError as exc:
        raise RefusedError(f"{target} exists; choose another name or pass --force") from exc
    except OSError:  # a filesystem without hard links: check, then rename
        if target.exists():
            raise RefusedError(f"{target} exists; choose another name or pass --force") \
                from None
        os.replace(tmp, target)


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass


def _backup(db: Database, target: Path) -> int:
    """The backend's consistent copy of the state into TARGET (SQLite's backup API)."""
    backup = getattr(db, "backup_to", None)
    if backup is None:
        raise RefusedError(f"orch snapshot copies a SQLite state; {db.location} is "
                           f"{db.dialect}: use its own backup tool")
    return int(backup(target))
