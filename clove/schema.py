"""Dicts into typed, frozen dataclasses: the one schema module. Two front ends share its field
introspection and type descriptions:

* :func:`build` converts TOML tables and wire bodies (arrays become tuples, ints become floats
  where a float is wanted) for a driver's ``Config``, ``Grant`` and operation arguments, an LLM
  provider's ``Options`` (:mod:`clove.llm.options`) and the risk engine's limits, raising
  :class:`FieldError`;
* :func:`parse_body` checks a syscall's request body against its ``Request`` class on every
  request: a fast path (one cached field table per class, a ``type(value) is hint`` check first)
  that converts nothing and raises ``InvalidArguments`` naming the argument.

Supported field types: ``str``, ``int``, ``float`` (finite), ``bool``, ``bytes`` (wire only),
``X | None``, ``tuple[T, ...]`` and ``list[T]`` (from an array; both become tuples),
``dict[str, T]`` and ``dict`` (from a table) and ``typing.Any``. Unknown
keys, missing required keys and wrong types raise :class:`FieldError` naming the key; a
dataclass's ``__post_init__`` checks ranges and raises :func:`invalid` the same way.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from clove.errors import InvalidArguments

__all__ = ["FieldError", "build", "describe_type", "fields_doc", "invalid", "parse_body"]

T = TypeVar("T")


class FieldError(ValueError):
    """A value that does not fit its field; ``key`` names the field (``""`` for the table)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


def invalid(key: str, message: str) -> FieldError:
    """The error a ``__post_init__`` raises for a value out of range: ``raise invalid("baudrate",
    "must be positive")``."""
    return FieldError(key, message)


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    cached = _HINTS.get(cls)
    if cached is None:
        cached = _HINTS[cls] = typing.get_type_hints(cls)
    return cached


def describe_type(hint: Any) -> str:
    """A user-facing name for a field type (``"int"``, ``"array of string"``, ...)."""
    if hint is Any:
        return "any value"
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(describe_type(a) for a in arms)
    if origin in (tuple, list):
        return f"array of {describe_type(typing.get_args(hint)[0])}" if typing.get_args(hint) else "array"
    if origin is dict or hint is dict:
        return f"table of {describe_type(typing.get_args(hint)[1])}" if typing.get_args(hint) else "table"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return {str: "string", int: "int", float: "number", bool: "bool", bytes: "bytes"}.get(hint, getattr(hint, "__name__", str(hint)))


def _convert(key: str, value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` wants it, or :class:`FieldError`."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        arms = typing.get_args(hint)
        if value is None and type(None) in arms:
            return None
        real = [arm for arm in arms if arm is not type(None)]
        if len(real) == 1:  # X | None: X's own message is the precise one
            return _convert(key, value, real[0])
        for arm in real:
            try:
                return _convert(key, value, arm)
            except FieldError:
                continue
        raise FieldError(key, f"expected {describe_type(hint)}, got {_kind(value)}")
    if origin is typing.Literal:
        if value in typing.get_args(hint) and type(value) in {type(a) for a in typing.get_args(hint)}:
            return value
        raise FieldError(key, f"expected {describe_type(hint)}, got {value!r}")
    if origin in (tuple, list):
        (item, *_rest) = typing.get_args(hint) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise FieldError(key, f"expected {describe_type(hint)}, got {_kind(value)}")
        return tuple(_convert(f"{key}[{i}]", v, item) for i, v in enumerate(value))
    if origin is dict or hint is dict:
        _k, item = typing.get_args(hint) or (str, Any)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise FieldError(key, f"expected {describe_type(hint)}, got {_kind(value)}")
        return {k: _convert(f"{key}.{k}", v, item) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise FieldError(key, f"expected a finite number, got {value!r}")
            return float(value)
    elif hint is bytes:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise FieldError(key, f"expected {describe_type(hint)}, got {_kind(value)}")


def _kind(value: Any) -> str:
    names = {bool: "bool", int: "int", float: "number", str: "string", list: "array", tuple: "array", dict: "table"}
    return f"{names.get(type(value), type(value).__name__)} {value!r}"[:120]


def build(cls: type[T], data: dict[str, Any], *, ignore: frozenset[str] = frozenset()) -> T:
    """An instance of the dataclass ``cls`` from ``data``.

    :param ignore: keys that belong to someone else (the framework's keys in a device table).
    :raises FieldError: an unknown, missing or mistyped key, or a ``__post_init__`` refusal.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted((k for k in data if k not in fields and k not in ignore), key=str)  # keys may be bytes
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise FieldError(str(unknown[0]), f"unknown key (known: {known})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise FieldError(name, "required")
            continue
        values[name] = _convert(name, data[name], hints[name])
    try:
        return cls(**values)
    except FieldError:
        raise
    except (TypeError, ValueError) as err:
        raise FieldError("", str(err)) from None


def fields_doc(cls: type[Any]) -> list[dict[str, Any]]:
    """The fields of a schema dataclass, for ``clove devices --describe``."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[operator]
        out.append({"name": f.name, "type": describe_type(hints[f.name]), "required": required, "default": default})
    return out


# ---- request bodies: checked, not converted, on every syscall ---------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    hint: Any
    required: bool


_FIELDS: dict[type[Any], tuple[tuple[_Field, ...], frozenset[str]]] = {}


def _fields_of(cls: type[Any]) -> tuple[tuple[_Field, ...], frozenset[str]]:
    """The request class's fields with resolved type hints, and their names: once per class."""
    cached = _FIELDS.get(cls)
    if cached is None:
        hints = _hints(cls)
        fields = tuple(
            _Field(f.name, hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls)
        )
        cached = _FIELDS[cls] = (fields, frozenset(f.name for f in fields))
    return cached


_STR: frozenset[type] = frozenset({str})


def _check(value: Any, hint: Any) -> bool:
    if hint is Any or type(value) is hint:  # the fast, common case (type(True) is bool, not int)
        return True
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_check(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_check(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint) or (Any, Any)
        if not isinstance(value, dict):
            return False
        if key is str and item is Any:  # a message's shape: only its keys to check, at C speed
            return set(map(type, value)) <= _STR or all(isinstance(k, str) for k in value)
        return all(_check(k, key) and _check(v, item) for k, v in value.items())
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if typing.get_args(hint):  # list[str] has a __name__ too ("list"); say what it holds
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def parse_body(cls: type[Any], body: dict[str, Any], call: str) -> Any:
    fields, names = _fields_of(cls)
    if not names.issuperset(body):
        unknown = min((key for key in body if key not in names), key=str)  # keys may be bytes (msgpack bin)
        raise InvalidArguments(f"{call}: unknown argument {unknown!r}", details={"argument": unknown, "known": sorted(names)})
    values = {}
    for field in fields:
        if field.name not in body:
            if field.required:
                raise InvalidArguments(f"{call}: missing argument {field.name!r}", details={"argument": field.name})
            continue
        value = body[field.name]
        if not _check(value, field.hint):
            raise InvalidArguments(
                f"{call}: argument {field.name!r} must be {_describe(field.hint)}, got {type(value).__name__}",
                details={"argument": field.name, "expected": _describe(field.hint)},
            )
        values[field.name] = value
    return cls(**values)
