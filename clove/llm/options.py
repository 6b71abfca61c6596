"""Plugin options: a provider's TOML table into its frozen ``Options`` dataclass, checked key by
key (tox's ``add_config(of_type, default, desc)``, as a dataclass). A field's
``metadata["help"]`` documents it; :func:`describe` lists them for docs and errors."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

__all__ = ["OptionError", "describe", "parse_options"]


class OptionError(ValueError):
    """A bad option: ``key`` names it, the message says what is wrong."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is list or origin is tuple:
        return "array"
    if origin is dict or hint is dict:
        return "table"
    return {bool: "bool", int: "int", float: "number", str: "string"}.get(hint, getattr(hint, "__name__", str(hint)))


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        arms = typing.get_args(hint)
        if value is None and type(None) in arms:
            return None
        for arm in arms:
            if arm is type(None):
                continue
            try:
                return _convert(value, arm, key)
            except OptionError:
                continue
        raise OptionError(key, f"expected {_type_name(hint)}, got {type(value).__name__} {value!r}")
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (list, tuple):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        if isinstance(value, list):
            return tuple(_convert(v, item, key) for v in value)
    elif origin is dict or hint is dict:
        args = typing.get_args(hint) or (str, Any)
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {k: _convert(v, args[1], key) for k, v in value.items()}
    raise OptionError(key, f"expected {_type_name(hint)}, got {type(value).__name__} {value!r}")


def parse_options(cls: type[Any], table: dict[str, Any]) -> Any:
    """Build ``cls`` (a dataclass) from ``table``.

    ``list[...]`` fields become tuples. ``__post_init__`` may raise :class:`OptionError` (or
    ``ValueError``) for checks across fields.

    :raises OptionError: an unknown key, a missing required one, a wrong type.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise OptionError(unknown[0], f"unknown key (known: {', '.join(sorted(fields))})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise OptionError(name, "required")
            continue
        values[name] = _convert(table[name], hints[name], name)
    try:
        return cls(**values)
    except OptionError:
        raise
    except (ValueError, TypeError) as err:
        raise OptionError(getattr(err, "key", next(iter(table), "?")), str(err)) from None


def describe(cls: type[Any]) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, help)`` for each option of ``cls``."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default: Any = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)"
        )
        out.append((f.name, _type_name(hints[f.name]), default, str(f.metadata.get("help", ""))))
    return out
