"""`frozen_record`: a frozen dataclass without the cost of making one at import time.

`@dataclass(frozen=True)` compiles six methods for each class while its module
is imported (about 4 M instructions a class), and a tick imports a few dozen
such classes (the settings, the stage machine, the state's records): more work
than an idle tick's own. This makes the same class from generic methods
instead. Measured in docs/performance.md ("What each speed trick buys"): kept
because it saves more than 3% of an idle tick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, FrozenInstanceError, dataclass, field, fields
from typing import Any, TypeVar, dataclass_transform

_Record = TypeVar("_Record")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen_record(cls: type[_Record]) -> type[_Record]:
    """`@dataclass(frozen=True)` without its cost at import time.

    dataclass compiles six methods for each frozen class while its module is
    imported (about 4 M instructions a class), and a tick imports a few dozen
    such classes: more work than the tick itself. This makes the same class
    from generic methods instead: the same fields (`dataclasses.fields`,
    `replace` and `asdict` work), construction by position or keyword with
    defaults and default factories, equality and hash over the fields, the
    dataclass repr, and FrozenInstanceError on assignment or deletion.
    """
    made = dataclass(init=False, repr=False, eq=False)(cls)
    for name, method in _methods(made).items():
        method.__qualname__ = f"{made.__qualname__}.{name}"
        setattr(made, name, method)
    return made


def _methods(made: type) -> dict[str, Callable[..., Any]]:
    """The six generic methods of a frozen record, closed over its fields."""
    spec = fields(made)
    names = tuple(f.name for f in spec)
    compared = tuple(f.name for f in spec if f.compare)
    hashed = tuple(f.name for f in spec if (f.hash is None and f.compare) or f.hash)
    shown = tuple(f.name for f in spec if f.repr)
    defaults = {f.name: f.default for f in spec if f.default is not MISSING}
    factories = {f.name: f.default_factory for f in spec if f.default_factory is not MISSING}

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        values = _bind(made.__qualname__, names, args, kwargs)
        for name in names:
            if name in values:
                value = values[name]
            elif name in defaults:
                value = defaults[name]
            elif name in factories:
                value = factories[name]()
            else:
                raise TypeError(f"{made.__qualname__}() missing required argument: {name!r}")
            object.__setattr__(self, name, value)

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return tuple(getattr(self, name) for name in compared) == \
            tuple(getattr(other, name) for name in compared)

    def __hash__(self: Any) -> int:
        return hash(tuple(getattr(self, name) for name in hashed))

    return {"__init__": __init__, "__repr__": __repr__, "__eq__": __eq__,
            "__hash__": __hash__, "__setattr__": _refuse_set, "__delattr__": _refuse_del}


def _refuse_set(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_del(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _bind(qualname: str, names: tuple[str, ...], args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments by field name, with the TypeErrors a dataclass __init__ would raise."""
    if len(args) > len(names):
        raise TypeError(f"{qualname}() takes {len(names)} positional arguments "
                        f"but {len(args)} were given")
    values = dict(zip(names, args, strict=False))
    for name, value in kwargs.items():
        if name not in names:
            raise TypeError(f"{qualname}() got an unexpected keyword argument {name!r}")
        if name in values:
            raise TypeError(f"{qualname}() got multiple values for argument {name!r}")
        values[name] = value
    return values
