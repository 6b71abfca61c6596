"""What every plugin family shares (driver plugins, LLM provider plugins): a typed registry of
kinds, filled by a ``clove_register_*`` hook, and loading only the allowlisted entry points of
a group into a fresh pluggy manager (eggsample's ``get_plugin_manager()``, tox's typed
``register``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

import pluggy

from clove.errors import ConfigError

__all__ = ["KindRegistry", "installed", "load_allowlisted"]

T = TypeVar("T")


class KindRegistry(Generic[T]):
    """Kinds to classes. ``base`` is the class every registered one must subclass; ``what``
    names the family in messages ("driver", "LLM provider")."""

    base: type[T]
    base_name: str  # how users import it, for messages: "clove.drivers.Driver"
    what: str

    def __init__(self) -> None:
        self._kinds: dict[str, type[T]] = {}

    def check(self, kind: str, cls: type[T]) -> None:
        """More checks a family needs (``ValueError`` to refuse)."""

    def add(self, kind: str, cls: type[T]) -> None:
        """:raises ValueError: an empty or duplicate kind, or a class of the wrong family."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"a {self.what} kind must be a non-empty string, got {kind!r}")
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ValueError(f"{self.what} kind {kind!r}: {cls!r} is not a {self.base_name} subclass")
        self.check(kind, cls)
        if kind in self._kinds and self._kinds[kind] is not cls:
            raise ValueError(f"{self.what} kind {kind!r} is registered twice ({self._kinds[kind].__qualname__}, {cls.__qualname__})")
        self._kinds[kind] = cls

    def get(self, kind: str) -> type[T]:
        """:raises KeyError: no plugin registered ``kind``."""
        return self._kinds[kind]

    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds


def installed(group: str) -> list[str]:
    """Names of the entry points in ``group`` (nothing is imported)."""
    import importlib.metadata  # here: about 4 MiB of a process that never lists plugins

    return sorted({ep.name for ep in importlib.metadata.entry_points(group=group)})


def load_allowlisted(pm: pluggy.PluginManager, group: str, allow: Iterable[str], what: str) -> None:
    """Load the named entry points of ``group`` into ``pm`` and check every hook has a spec.

    :raises ConfigError: a named plugin is not installed, fails to import, or has a hook no
        spec knows.
    """
    for name in allow:
        if pm.has_plugin(name):
            continue
        try:
            count = pm.load_setuptools_entrypoints(group, name=name)
        except Exception as err:  # noqa: BLE001 - a broken plugin is a config problem, named
            raise ConfigError(f"{what} plugin {name!r} failed to load: {type(err).__name__}: {err}", details={"plugin": name}) from err
        if count == 0 and not pm.has_plugin(name):
            found = ", ".join(installed(group)) or "none"
            raise ConfigError(f"{what} plugin {name!r} is not installed (entry point group {group}; installed: {found})", details={"plugin": name})
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        raise ConfigError(f"{what} plugin {pm.get_name(err.plugin) or err.plugin!r}: {err}") from None
