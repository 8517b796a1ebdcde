"""YAML loading that remembers where each key was written.

Config errors must name the file, the key path and the line, so the YAML is
composed into nodes (which carry marks) and turned into plain Python here,
with a map from key path to line number. Duplicate keys are an error.

Inside `caching(FILE)` (each CLI command's settings and pipeline are loaded
so), a file parsed before and unchanged since is answered from a small JSON
cache instead: a tick runs every minute, and importing PyYAML costs more than
all the rest of loading the configuration.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orch.errors import ConfigError

KeyPath = tuple[str | int, ...]


def dotted(path: KeyPath) -> str:
    """`repos.myapp.test.timeout_s` / `stages[2].runner` from a key path."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def load_yaml(text: str, file: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML text into Python data plus {key path: 1-based line}."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node = yaml.compose(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(file, "", f"malformed YAML: {problem}", line=line) from exc
    marks: dict[KeyPath, int] = {}
    if node is None:
        return None, marks
    return _convert(node, (), marks, file), marks


def load_yaml_file(path: Path) -> tuple[Any, dict[KeyPath, int]]:
    """Parse a YAML file (from the active cache when it holds this very file)."""
    if _active_cache is not None:
        return _active_cache.load(path)
    return _read_and_parse(path)


def _read_and_parse(path: Path) -> tuple[Any, dict[KeyPath, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "", "not UTF-8 text") from exc
    return load_yaml(text, str(path))


def _convert(node: Any, path: KeyPath, marks: dict[KeyPath, int], file: str,
             ancestors: frozenset[int] = frozenset()) -> Any:
    import yaml

    marks.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.CollectionNode):
        if id(node) in ancestors:  # `a: &x [*x]` would recurse forever
            raise ConfigError(file, dotted(path), "recursive alias",
                              line=node.start_mark.line + 1)
        ancestors = ancestors | {id(node)}
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise ConfigError(file, dotted(path), "keys must be plain scalars",
                                  line=key_node.start_mark.line + 1)
            key = str(key)
            child = (*path, key)
            if key in result:
                raise ConfigError(file, dotted(child), "duplicate key",
                                  line=key_node.start_mark.line + 1)
            marks[child] = key_node.start_mark.line + 1
            result[key] = _convert(value_node, child, marks, file, ancestors)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), marks, file, ancestors)
                for i, item in enumerate(node.value)]
    return _scalar(node)


_constructor: Any = None


def _scalar(node: Any) -> Any:
    """Resolve a scalar's tag (int, bool, null, ...) exactly as safe_load would."""
    global _constructor
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        return node
    if _constructor is None:
        _constructor = yaml.SafeLoader("")
    return _constructor.construct_object(node, deep=True)


# --------------------------------------------------------------------------- the parse cache

CACHE_FORMAT = 1
RACY_NS = 3_000_000_000  # files changed more recently than this are not cached
_active_cache: YamlCache | None = None


class YamlCache:
    """Parsed YAML files kept in one small JSON file (in the home), keyed by each file's identity.

    A tick runs every minute and reads the same orch.yaml and pipeline file each
    time; importing PyYAML alone costs more than the rest of loading the config.
    An entry is used only while its file has the very size, inode, device and
    modification and change times (in ns) it was parsed at, and this module is
    the one that parsed it; only data that JSON keeps exactly (no dates, no
    infinities) of a file not changed in the last few seconds is stored. A
    cache that cannot be read or written is ignored: it can only save time,
    never change a result.
    """

    def __init__(self, file: Path) -> None:
        self.file = file

    def load(self, path: Path) -> tuple[Any, dict[KeyPath, int]]:
        stamp = _stamp(path)
        entries = self._read() if stamp is not None else {}
        entry = entries.get(str(path.absolute()))
        if isinstance(entry, dict) and entry.get("stamp") == stamp:
            return entry["data"], {tuple(part): line for part, line in entry["marks"]}
        data, marks = _read_and_parse(path)
        if stamp is not None and _settled(stamp) and _json_exact(data):
            entries[str(path.absolute())] = {
                "stamp": stamp, "data": data,
                "marks": [[list(part), line] for part, line in marks.items()]}
            self._write(entries)
        return data, marks

    def _read(self) -> dict[str, Any]:

        try:
            saved = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(saved, dict) or saved.get("format") != _format() \
                or not isinstance(saved.get("files"), dict):
            return {}
        return saved["files"]

    def _write(self, entries: dict[str, Any]) -> None:

        tmp = self.file.with_name(f"{self.file.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({"format": _format(), "files": entries}), encoding="utf-8")
            os.replace(tmp, self.file)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass  # the home is read-only or gone: then there is no cache, that is all


@contextmanager
def caching(file: Path) -> Iterator[None]:
    """Within this block, load_yaml_file answers from (and fills) the cache in FILE."""
    global _active_cache
    previous, _active_cache = _active_cache, YamlCache(file)
    try:
        yield
    finally:
        _active_cache = previous


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _settled(stamp: list[int]) -> bool:
    """Was the file last changed long enough ago that a same-size edit must change its stamp?

    On a file system with coarse timestamps, an edit within the same second
    could keep size and times; such a fresh file is parsed, not cached (as git
    treats "racily clean" files).
    """

    return time.time_ns() - max(stamp[1], stamp[2]) > RACY_NS


def _format() -> list[Any]:
    """The cache format plus this module's own stamp: editing the parser drops old entries."""
    return [CACHE_FORMAT, _stamp(Path(__file__))]


def _json_exact(value: Any) -> bool:
    """Does JSON give back exactly this value (types included)?"""
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_json_exact(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _json_exact(item) for key, item in value.items())
    return False
