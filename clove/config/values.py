"""Value parsers shared by the config, the CLI and the spawn syscall (sizes, CPU, pids, names),
and :class:`Table`, the typed reader of one TOML table that every table's parser uses.

Errors name the file, the table and the key: ``kernel.toml: [sandbox].backend: expected ...``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final

from clove.errors import ConfigError

__all__ = ["Table", "parse_cpu", "parse_memory", "parse_pids", "parse_size", "validate_name"]

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SIZE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)
_SCALE: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_memory(value: object) -> int:
    """``"64M"``, ``"1.5G"``, ``"512MiB"`` or an int of bytes → bytes (binary units), at least 4M.

    :raises ValueError: with a message fit for a user.
    """
    number = parse_size(value)
    if number < 4 << 20:
        raise ValueError(f"memory limit must be at least 4M, got {value!r}")
    return number


def parse_size(value: object) -> int:
    """``"64K"``, ``"1.5G"``, ``"512MiB"`` or an int of bytes → a positive number of bytes.

    :raises ValueError: with a message fit for a user.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '64M' or bytes, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        size = float(m.group(1)) * _SCALE[m.group(2).upper()]
        if not math.isfinite(size):  # "999...9G" would overflow int()
            raise ValueError(f"expected a size like '64M' or bytes, got {value!r}")
        number = int(size)
    else:
        raise ValueError(f"expected a size like '64M' or bytes, got {value!r}")
    if number < 1:
        raise ValueError(f"expected a positive size, got {value!r}")
    return number


def parse_cpu(value: object) -> int:
    """``"20%"`` (of one core) or an int of µs per 100 ms period → quota in µs per 100 ms."""
    if isinstance(value, bool):
        raise ValueError(f"expected a percentage like '20%' or a quota in µs, got {value!r}")
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            percent = float(value.strip()[:-1])
        except ValueError:
            raise ValueError(f"expected a percentage like '20%', got {value!r}") from None
        if not math.isfinite(percent * 1000):  # "inf%" would overflow int()
            raise ValueError(f"expected a percentage like '20%', got {value!r}")
        quota = int(round(percent * 1000))
    elif isinstance(value, int):
        quota = value
    else:
        raise ValueError(f"expected a percentage like '20%' or a quota in µs, got {value!r}")
    if quota < 1000:
        raise ValueError(f"cpu quota must be at least 1000 µs per 100 ms (1%), got {value!r}")
    return quota


def parse_pids(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a positive int, got {value!r}")
    return value


def validate_name(value: object) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):  # match() lets 'a\n' through
        raise ValueError(f"agent names are 1-63 of [A-Za-z0-9_.-], starting alphanumeric; got {value!r}")
    return value


class Table:
    """Typed access to one TOML table that remembers where it is, for error messages."""

    def __init__(self, source: str, where: str, data: dict[str, Any]) -> None:
        self.source, self.where, self.data = source, where, data
        self.seen: set[str] = set()

    @classmethod
    def top(cls, source: str, raw: dict[str, Any], name: str) -> Table:
        """The top-level table ``[name]`` of a config file's ``raw`` TOML (empty when absent).

        :raises ConfigError: it is not a table.
        """
        data = raw.get(name, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{name}]: expected a table, got {type(data).__name__}")
        return cls(source, name, data)

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: [{self.where}].{key}: {message}", details={"table": self.where, "key": key})

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.seen.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"expected {_kind_names(kinds)}, got bool {value!r}")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {_kind_names(kinds)}, got {type(value).__name__} {value!r}")
        return value

    def parsed(self, key: str, parse: Callable[[object], Any], default: Any) -> Any:
        self.seen.add(key)
        if key not in self.data:
            return default
        try:
            return parse(self.data[key])
        except ValueError as err:
            raise self.fail(key, str(err)) from None

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.fail(key, f"expected one of {', '.join(choices)}; got {value!r}")
        return str(value)

    def positive(self, key: str, kind: type, default: Any) -> Any:
        value = self.get(key, kind, default)
        if value is not None and not value > 0:  # also refuses nan
            raise self.fail(key, f"must be positive, got {value!r}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (known: {', '.join(sorted(self.seen))})")


def _kind_names(kinds: tuple[type, ...]) -> str:
    return " or ".join({bool: "bool", int: "int", float: "number", str: "string", list: "array", dict: "table"}.get(k, k.__name__) for k in kinds)
