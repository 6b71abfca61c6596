"""TOML tables and wire bodies into typed, frozen dataclasses: the one parser behind a driver's
``Config``, its ``Grant`` and its operations' argument classes, an LLM provider's ``Options``
(:mod:`clove.llm.options`) and the risk engine's limits.

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
from typing import Any, TypeVar, Union

__all__ = ["FieldError", "build", "describe_type", "fields_doc", "invalid"]

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
