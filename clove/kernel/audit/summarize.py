"""Bounds on what a journal record may carry: :func:`summarize_args` and :func:`clip_text`.

A record holds what an agent sent (syscall arguments, names it chose), so every value is cut to
a bounded, JSON-safe, UTF-8-safe summary before it is chained. Pure and thread-free.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["clip_text", "summarize_args"]


def summarize_args(args: Any, *, max_str: int = 200, max_items: int = 20, max_depth: int = 4) -> Any:
    """A bounded, JSON-safe summary of syscall arguments for the journal.

    Strings longer than ``max_str`` end in ``"…(+N chars)"``; bytes become ``"<N bytes>"``; lists,
    tuples and sets keep ``max_items`` items plus a ``"…(+N items)"`` marker; mappings keep
    ``max_items`` entries plus a ``"…"`` entry; containers nested deeper than ``max_depth`` become
    ``"<dict of N items>"``; dataclass instances become mappings of their fields; non-finite floats
    and very large ints become strings; anything else becomes its ``repr``, clipped. Unpaired
    surrogates are escaped, so the result always encodes as UTF-8.

    :param args: anything, typically a decoded request body or a request dataclass.
    :returns: ``None``, ``bool``, ``int``, ``float``, ``str``, or lists and str-keyed dicts of those.
    """
    return _summarize(args, max_str, max_items, max_depth, 0)


_SCALARS = (type(None), bool, float)
_MIN_INT, _MAX_INT = -(2**63 - 1), 2**63 - 1  # the ints kept as they are (at most 63 bits)


def _summarize(value: Any, max_str: int, max_items: int, max_depth: int, depth: int) -> Any:
    kind = type(value)
    if kind is str and len(value) <= max_str and value.isascii():
        return value  # the common case, checked first: short plain strings need no work
    if kind is dict and len(value) <= max_items and depth < max_depth:
        return {
            (k if type(k) is str and len(k) <= max_str and k.isascii() else clip_text(k if isinstance(k, str) else _safe_repr(k), max_str)): (
                v if (type(v) is str and len(v) <= max_str and v.isascii()) or type(v) in (bool, type(None))
                or (type(v) is int and _MIN_INT <= v <= _MAX_INT)
                else _summarize(v, max_str, max_items, max_depth, depth + 1)
            )
            for k, v in value.items()
        }  # fmt: skip
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        bits = value.bit_length()
        return int(value) if bits <= 63 else f"<int of {bits} bits>"  # JSON readers lose precision past 2**53 anyway
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if isinstance(value, str):
        return clip_text(value, max_str)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, memoryview):
        return f"<{value.nbytes} bytes>"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {field.name: getattr(value, field.name, None) for field in dataclasses.fields(value)}
    if isinstance(value, (Mapping, list, tuple, set, frozenset, deque)):
        count = len(value)
        if depth >= max_depth:
            what = "dict" if isinstance(value, Mapping) else type(value).__name__
            return f"<{what} of {count} item{'' if count == 1 else 's'}>"
        more = count - max_items
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for index, (key, item) in enumerate(value.items()):
                if index >= max_items:
                    out["…"] = f"+{more} more items"
                    break
                name = clip_text(key if isinstance(key, str) else _safe_repr(key), max_str)
                out[name] = _summarize(item, max_str, max_items, max_depth, depth + 1)
            return out
        items: list[Any] = []
        for index, item in enumerate(value):
            if index >= max_items:
                items.append(f"…(+{more} items)")
                break
            items.append(_summarize(item, max_str, max_items, max_depth, depth + 1))
        return items
    return clip_text(_safe_repr(value), max_str)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not break the audit trail
        return f"<unrepresentable {type(value).__name__}>"


def clip_text(text: str, limit: int) -> str:
    """``text`` as a plain, UTF-8-safe str: at most ``limit`` characters, then ``"…(+N chars)"``."""
    if type(text) is str and len(text) <= limit and text.isascii():
        return text
    text = str.__str__(text)  # a plain str, also for str subclasses such as str-valued Enums
    extra = len(text) - limit
    if extra > 0:
        text = f"{text[:limit]}…(+{extra} chars)"
    try:
        text.encode()
    except UnicodeEncodeError:  # unpaired surrogates, e.g. from a "\ud800" escape in a JSON body
        text = text.encode("utf-8", "backslashreplace").decode()
    return text
