"""Where ``clove top``'s figures come from: the operator syscalls the other commands use, at
most two per refresh so watching costs the kernel little.

Every refresh asks ``metrics.agents`` (agents change fastest). Devices (``device.list``),
interlocks (``interlock.list``) and the LLM gateway (``llm.stats``) are slower to change and
are asked in turn, one per refresh. A section the kernel has nothing for (no devices, no
interlocks, the gateway disabled) leaves the rotation after its first answer: the kernel's
config, which declares them, is fixed while it runs. After an action the affected section is
asked at the next refresh, ahead of its turn.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

from clove.cli.top.model import Snapshot, build_snapshot

#: The slower sections, in the order they are refreshed.
SECTIONS: Final = ("interlocks", "devices", "llm")


class Caller(Protocol):
    """What the source needs of a :class:`clove_sdk.client.CloveClient`."""

    def call(self, syscall: str, /, reply_timeout: float | None = None, **body: Any) -> Any: ...


def _fetch_section(client: Caller, section: str) -> Any:
    if section == "devices":
        return list(client.call("device.list")["devices"])
    if section == "interlocks":
        return list(client.call("interlock.list")["interlocks"])
    return dict(client.call("llm.stats"))


def _empty(section: str, value: Any) -> bool:
    if section == "llm":
        return not value.get("enabled")
    return not value


class Source:
    """Takes snapshots through one operator client.

    :param client: an open client (``call`` raises :class:`clove.errors.CloveError`).
    :param clock: monotonic seconds, for syscalls/s.
    """

    def __init__(self, client: Caller, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        self.rotation: deque[str] = deque(SECTIONS)
        self.urgent: list[str] = []
        self.last: Snapshot | None = None
        self.calls = 0  # syscalls made so far (the bench and the tests read it)

    def _call_section(self, snap: Snapshot, section: str) -> None:
        value = _fetch_section(self.client, section)
        self.calls += 1
        setattr(snap, section, value)
        if _empty(section, value) and section in self.rotation:
            self.rotation.remove(section)  # nothing configured: never asked again

    def refresh(self, *, everything: bool = False) -> Snapshot:
        """One refresh: the agents, plus one slower section (all of them with ``everything``,
        as the first screen and plain output do)."""
        rows = self.client.call("metrics.agents")["agents"]
        self.calls += 1
        snap = build_snapshot(rows, self.clock(), self.last)
        if everything:
            for section in list(self.rotation):
                self._call_section(snap, section)
        elif self.urgent:
            section = self.urgent.pop(0)
            if section in self.rotation:  # asked now; its turn in the rotation stays where it was
                self._call_section(snap, section)
        elif self.rotation:
            self.rotation.rotate(-1)
            self._call_section(snap, self.rotation[-1])
        self.last = snap
        return snap

    def soon(self, section: str) -> None:
        """Ask ``section`` at the next refresh (after an action changed it)."""
        if section not in self.urgent:
            self.urgent.append(section)
