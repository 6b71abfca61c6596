"""Plugin options: a provider's TOML table into its frozen ``Options`` dataclass, checked key by
key (tox's ``add_config(of_type, default, desc)``, as a dataclass), with the parser drivers use
(:mod:`clove.drivers.schema`). A field's ``metadata["help"]`` documents it; :func:`describe`
lists them for docs and errors."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from clove.drivers.schema import FieldError, build, describe_type

__all__ = ["OptionError", "describe", "parse_options"]


class OptionError(FieldError):
    """A bad option: ``key`` names it (the field, not an item inside it), ``message`` says what
    is wrong. A ``__post_init__`` raises it for checks across fields."""


def parse_options(cls: type[Any], table: dict[str, Any]) -> Any:
    """Build ``cls`` (a dataclass) from ``table``; ``list[...]`` fields become tuples.

    :raises OptionError: an unknown key, a missing required one, a wrong type.
    """
    try:
        return build(cls, table)
    except OptionError:
        raise
    except FieldError as err:
        field = err.key.split("[", 1)[0].split(".", 1)[0] or next(iter(table), "?")
        raise OptionError(field, err.message) from None


def describe(cls: type[Any]) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, help)`` for each option of ``cls``."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default: Any = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)"
        )
        out.append((f.name, describe_type(hints[f.name]), default, str(f.metadata.get("help", ""))))
    return out
