"""YAML loading that remembers where each key was written.

Config errors must name the file, the key path and the line, so the YAML is
composed into nodes (which carry marks) and turned into plain Python here,
with a map from key path to line number. Duplicate keys are an error.
"""

from __future__ import annotations

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
