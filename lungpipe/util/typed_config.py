"""Turn plain mappings (a section of params.yaml, CLI overrides) into typed config dataclasses.

The library never reads params.yaml: stages load it and call :func:`from_dict` to build the
dataclasses that the library functions take. :func:`from_dict` checks every value against the
dataclass's type hints (an ``int`` field takes an int, never ``"ten"`` or ``2.5``; a ``bool``
takes ``true``/``false``; a ``Literal`` takes one of its values), and each config's
``__post_init__`` checks ranges with :func:`require` / :func:`require_choice`. Every error is a
:class:`ConfigError` naming the full params key (``arch.cnn6.train.epochs``), what was found and
what is allowed, so a bad value stops a stage at start-up instead of hours later.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A params section does not fit the config it is meant to build.

    ``field`` is set when the error is about one field of a config (raised by :func:`require`);
    :func:`from_dict` then rewrites the message to name the field's full params key.
    """

    def __init__(self, message: str, *, field: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.field = field
        self.detail = detail if detail is not None else message


def require(obj: Any, name: str, ok: bool, rule: str) -> None:
    """Range check for ``__post_init__``: unless ``ok``, raise a ConfigError about field ``name``
    of ``obj`` saying the ``rule`` it breaks and the value found, e.g. ``must be > 0, got -1``."""
    if not ok:
        detail = f"{rule}, got {getattr(obj, name)!r}"
        raise ConfigError(f"{type(obj).__name__}.{name}: {detail}", field=name, detail=detail)


def require_choice(obj: Any, name: str, allowed: collections.abc.Iterable[Any]) -> None:
    """``__post_init__`` check that field ``name`` holds one of ``allowed`` (listed in the error)."""
    allowed = tuple(allowed)
    require(obj, name, getattr(obj, name) in allowed, f"must be one of {', '.join(map(str, allowed))}")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _bad(where: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {expected}, got {value!r} ({type(value).__name__})")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked against type hint ``tp`` (and converted where lossless: int → float,
    list → tuple, YAML's ``"5e-5"`` string → float)."""
    if tp is Any or tp is object or isinstance(tp, TypeVar):
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise _bad(where, " or ".join(_type_name(a) for a in args), value)
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, where)
            except ConfigError as exc:
                errors.append(exc)
        raise _bad(where, " or ".join(_type_name(a) for a in args), value)
    if value is None:
        raise _bad(where, _type_name(tp), value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _bad(where, f"a mapping of {tp.__name__} fields", value)
        return from_dict(tp, value, where=where)
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise _bad(where, "a list", value)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise _bad(where, f"a list of {len(args)} items", value)
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        items = [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return list(items) if origin is list else tuple(items)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise _bad(where, "a mapping", value)
        key_t, val_t = args if args else (Any, Any)
        return {_convert(key_t, k, f"{where}.{k}"): _convert(val_t, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise _bad(where, "true or false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(where, "an integer", value)
        return value
    if tp is float:
        if isinstance(value, bool):
            raise _bad(where, "a number", value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "5e-5" (no dot) as a string
            except ValueError:
                raise _bad(where, "a number", value) from None
        raise _bad(where, "a number", value)
    if tp is str:
        if not isinstance(value, str):
            raise _bad(where, "a string", value)
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _bad(where, _type_name(tp), value)
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str | None = None,
              keys: Mapping[str, str] | Callable[[str], str] | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, checking each value's type and the config's ranges.

    Nested dataclass fields are built recursively. ``where`` is the params key of ``data``
    (``arch.cnn6.train``); errors name ``<where>.<field>``. ``keys`` (a mapping or a function
    from field name to params key) names fields whose values came from elsewhere, e.g. a value
    merged in from ``train.defaults`` or a tuned file."""
    where = where or cls.__name__
    if data is not None and not isinstance(data, Mapping):
        raise _bad(where, f"a mapping of {cls.__name__} fields", data)
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; allowed: {sorted(fields)}"
        )

    def key_of(name: str) -> str:
        if callable(keys):
            return keys(name)
        if keys is not None and name in keys:
            return keys[name]
        return f"{where}.{name}"

    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints.get(name, Any), value, key_of(name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if exc.field is None:
            raise
        raise ConfigError(f"{key_of(exc.field)}: {exc.detail}", field=None) from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain nested dict (for logging and for writing resolved configs)."""
    return dataclasses.asdict(obj)


def merge(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """Recursive dict merge: values of ``override`` win; nested mappings merge."""
    out = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Flatten nested mappings to ``a.b.c`` keys (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out
