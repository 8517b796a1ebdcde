"""Artifacts: Markdown files with YAML front matter in `tasks/<id>/` (SPEC section 6).

Reading never raises for a bad file: it raises ArtifactError, which gates turn
into RETRY. Writing is atomic (temp file + replace) so a reader never sees half
a report.

Artifacts are written by agents, which may do anything, and they are read by
the tick, which must never be stopped by one (SPEC section 6). So a read
(`read_artifact`) takes only a regular file directly in the task folder (the
folder opened without following a link, the file looked up in it without
following one either: no symlink, FIFO, socket, device or directory), opens it
non-blocking, and reads at most `MAX_ARTIFACT_BYTES` (1 MiB). Front matter with
YAML anchors or aliases is malformed (a nine-level alias bomb of 500 bytes
expands to gigabytes when printed), and no more than `QUOTE_LIMIT` (200)
characters of anything an agent wrote reach a reason, an event or a log line
(`quote`).
"""

from __future__ import annotations

import functools
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_ARTIFACT_BYTES = 1024 * 1024
QUOTE_LIMIT = 200
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_KINDS = ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISDIR, "a directory"))

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


class MissingArtifact(ArtifactError):
    """The artifact does not exist (nor does its task folder, maybe)."""


@dataclass(frozen=True)
class Document:
    meta: dict[str, Any]
    body: str


@dataclass(frozen=True)
class ArtifactFile:
    """What `read_artifact` read: the bytes (at most the cap) and the file's mtime."""

    name: str
    data: bytes
    mtime: float
    mtime_ns: int


def quote(text: object, limit: int = QUOTE_LIMIT) -> str:
    """Agent-written text as one line of at most `limit` characters (cut with '...')."""
    line = " ".join(str(text)[: limit * 4].split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe_value(value: object) -> str:
    """A front matter value for a reason: scalars quoted and bounded, containers by kind
    (never printed: a shared structure can be huge once expanded)."""
    if isinstance(value, dict):
        return "(a mapping)"
    if isinstance(value, list | tuple | set):
        return "(a list)"
    if isinstance(value, str):
        return repr(quote(value))
    return quote(repr(value)) if isinstance(value, int | float | bool) or value is None \
        else f"(a {type(value).__name__})"


def _file_kind(mode: int) -> str | None:
    """What a non-regular file is ('a FIFO', ...), or None for a regular file."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


def _open_folder(folder: Path, name: str) -> int:
    """The task folder, opened without following a link (an fd for the *at calls)."""
    try:
        return os.open(folder, _DIR_FLAGS)
    except FileNotFoundError:
        raise MissingArtifact(f"{name} is missing") from None
    except OSError as exc:  # ELOOP (a symlink), ENOTDIR, EACCES
        raise ArtifactError(f"the task folder {folder} cannot be read safely: "
                            f"{exc.strerror or exc}") from None


def artifact_stat(folder: Path, name: str) -> os.stat_result | None:
    """The lstat of NAME directly in FOLDER, never following a link; None when missing.

    ArtifactError when NAME is not a plain file name or the folder is not a real one.
    """
    _check_name(name)
    try:
        dir_fd = _open_folder(folder, name)
    except MissingArtifact:
        return None
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    finally:
        os.close(dir_fd)


def _check_name(name: str) -> None:
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise ArtifactError(f"{quote(name)!r} is not a file name in the task folder")


def read_artifact(folder: Path, name: str, *, limit: int = MAX_ARTIFACT_BYTES) -> ArtifactFile:
    """Read NAME from the task FOLDER safely (see the module docstring).

    MissingArtifact when it does not exist; ArtifactError when it is not a regular
    file, is over `limit` bytes, or changed kind between the look and the open.
    Never blocks (a FIFO is refused before it is opened, and the open is non-blocking
    anyway) and never reads more than `limit` + 1 bytes.
    """
    _check_name(name)
    dir_fd = _open_folder(folder, name)
    try:
        before = _lstat_at(dir_fd, name)
        _check_kind(name, before, limit)
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise MissingArtifact(f"{name} is missing") from None
    except OSError as exc:  # ELOOP: swapped for a link meanwhile; EACCES; ENXIO
        raise ArtifactError(f"{name} cannot be opened safely: {exc.strerror or exc}") from None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb", buffering=0) as handle:
        now = os.fstat(handle.fileno())
        if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            raise ArtifactError(f"{name} was replaced while it was read")
        _check_kind(name, now, limit)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ArtifactError(f"{name} is over the {_size(limit)} cap")
    return ArtifactFile(name, data, now.st_mtime, now.st_mtime_ns)


def _lstat_at(dir_fd: int, name: str) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except NotADirectoryError:
        raise FileNotFoundError(name) from None


def _check_kind(name: str, st: os.stat_result, limit: int) -> None:
    kind = _file_kind(st.st_mode)
    if kind is not None:
        raise ArtifactError(f"{name} is {kind}, not a regular file")
    if st.st_size > limit:
        raise ArtifactError(f"{name} is {_size(st.st_size)}, over the {_size(limit)} cap")


def _size(n: int) -> str:
    """Whole MiB as such, anything else in bytes."""
    mib = 1024 * 1024
    return f"{n // mib} MiB" if n >= mib and n % mib == 0 else f"{n} bytes"


def parse_document(text: str) -> Document:
    """Split `---` front matter from the body; a file without front matter has empty meta.

    ArtifactError when the front matter is not valid YAML, uses anchors or aliases,
    or is not a mapping; its message quotes at most QUOTE_LIMIT characters of the file.
    """
    if not text.startswith("---"):
        return Document({}, text)
    lines = text.split("\n")
    if lines[0].strip() != "---":
        return Document({}, text)
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            raw = "\n".join(lines[1:index])
            meta = _load_front_matter(raw) if raw.strip() else {}
            if meta is None:
                meta = {}
            if not isinstance(meta, dict):
                raise ArtifactError("front matter is not a mapping")
            return Document(meta, "\n".join(lines[index + 1 :]))
    raise ArtifactError("front matter has no closing '---'")


def _load_front_matter(raw: str) -> Any:
    """YAML without anchors and aliases; every way PyYAML fails is an ArtifactError."""
    import yaml

    loader = None
    try:
        loader = _plain_loader()(raw)  # the reader already refuses control characters
        return loader.get_single_data()
    except ArtifactError:
        raise
    except (yaml.YAMLError, ValueError, KeyError, TypeError, IndexError, RecursionError,
            OverflowError, MemoryError) as exc:
        # PyYAML raises more than YAMLError for odd scalars (dates, tags, deep nesting)
        raise ArtifactError(f"front matter is not valid YAML: {type(exc).__name__}: "
                            f"{quote(exc)}") from None
    finally:
        if loader is not None:
            loader.dispose()


@functools.cache
def _plain_loader() -> type:
    """yaml.SafeLoader refusing anchors and aliases (made once, on first use: importing
    PyYAML is costly and a tick that reads no artifact never does it)."""
    import yaml

    class PlainLoader(yaml.SafeLoader):  # type: ignore[misc]
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ArtifactError("front matter uses YAML anchors or aliases")
            return super().compose_node(parent, index)

    return PlainLoader


def read_document(path: Path) -> Document:
    """Read an artifact safely (`read_artifact`) and parse it; ArtifactError when it is
    missing, not a regular file, over the cap, not UTF-8 or malformed."""
    file = read_artifact(path.parent, path.name)
    try:
        text = file.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path.name} is not UTF-8 text") from exc
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
