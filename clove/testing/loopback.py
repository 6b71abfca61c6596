"""``loopback``: a driver with no hardware behind it, for testing agents and deployments.

What an agent ``write``\\ s comes back on the stream, tagged; operations make the host crash,
hang or leak on purpose so supervision can be tested. Registered through the ``clove.drivers``
entry point ``loopback`` like any plugin, and loaded only when a config names it.

Config keys: ``pollable`` (true: the host polls ``fileno()``; false: it runs a reader thread),
``fail_open`` (open raises :class:`DeviceUnavailable`), ``open_delay`` (seconds open takes, as
a slow device's does).

Grant keys: ``tags`` (the tags an agent may write and receive; ``["*"]`` for all).
"""

from __future__ import annotations

import collections
import os
import select
import threading
import time
from dataclasses import dataclass
from typing import Any

from clove.drivers import (
    Caller,
    DeviceGrant,
    DeviceUnavailable,
    Driver,
    NoArgs,
    deny,
    hookimpl,
    invalid,
    operation,
)
from clove.drivers.registry import DriverRegistry


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopbackConfig:
    pollable: bool = True
    fail_open: bool = False
    max_queue: int = 100_000
    open_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise invalid("max_queue", f"must be positive, got {self.max_queue}")
        if not 0 <= self.open_delay <= 60:
            raise invalid("open_delay", f"must be 0..60 seconds, got {self.open_delay}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopbackGrant(DeviceGrant):
    tags: tuple[str, ...] = ()

    def check(self, op: str, args: Any) -> None:
        if op == "write" and not self._tag_ok(args.tag):
            raise deny(f"tag {args.tag!r} is not granted", tag=args.tag, granted=list(self.tags))

    def admits(self, item: Any) -> bool:
        return self._tag_ok(item.get("tag"))

    def _tag_ok(self, tag: Any) -> bool:
        return "*" in self.tags or tag in self.tags


@dataclass(frozen=True, slots=True)
class WriteArgs:
    tag: str
    data: Any = None
    count: int = 1
    to: str | None = None  # address the items to one agent (as an exchange's execution reports are)

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 100_000:
            raise invalid("count", "must be 1..100000")


@dataclass(frozen=True, slots=True)
class HangArgs:
    seconds: float | None = None  # None: until the host is killed


@dataclass(frozen=True, slots=True)
class LeakArgs:
    megabytes: int = 1024


class LoopbackDriver(Driver):
    Config = LoopbackConfig
    Grant = LoopbackGrant
    stream = "items"
    stream_op = "recv"

    def __init__(self, config: LoopbackConfig) -> None:
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._wake_r = self._wake_w = -1
        self._seq = 0
        self._ballast: list[bytearray] = []
        self._broken = False
        super().__init__(config)

    def _open(self) -> None:
        time.sleep(self.config.open_delay)  # a slow device (a bus that takes its time to come up)
        if self.config.fail_open:
            raise DeviceUnavailable("loopback: fail_open is set")
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def _close(self) -> None:
        with self._cond:
            self._cond.notify_all()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def fileno(self) -> int:
        return self._wake_r if self.config.pollable else -1

    @operation(args=WriteArgs)
    def write(self, args: WriteArgs) -> dict[str, Any]:
        """Put ``count`` items carrying ``data`` on the stream under ``tag``."""
        with self._cond:
            for _ in range(args.count):
                self._seq += 1
                item = {"tag": args.tag, "seq": self._seq, "data": args.data, "ts": time.time()}
                if args.to is not None:
                    item["to"] = args.to
                self._queue.append(item)
            while len(self._queue) > self.config.max_queue:
                self._queue.popleft()
            self._cond.notify_all()
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full: it is readable, which is all the host needs
        return {"written": args.count, "seq": self._seq}

    @operation(caller=True)
    def whoami(self, args: NoArgs, caller: Caller | None) -> dict[str, Any]:
        """Who the kernel says is calling, and the grant it passed along."""
        if caller is None:
            return {}
        return {"agent": caller.agent, "agent_id": caller.agent_id, "operator": caller.operator, "grant": caller.grant}

    @operation()
    def crash(self, args: NoArgs) -> None:
        """Kill the host process at once (exit status 70)."""
        os._exit(70)

    @operation(args=HangArgs)
    def hang(self, args: HangArgs) -> None:
        """Block the host's main loop (no heartbeats) for ``seconds``, or until it is killed."""
        threading.Event().wait(args.seconds)

    @operation(args=LeakArgs)
    def leak(self, args: LeakArgs) -> dict[str, Any]:
        """Allocate and touch ``megabytes`` of memory, 1 MiB at a time."""
        for _ in range(args.megabytes):
            self._ballast.append(bytearray(b"\x01" * (1 << 20)))
        return {"held_mb": len(self._ballast)}

    @operation()
    def break_stream(self, args: NoArgs) -> None:
        """Make the next stream read fail with device.broken (the host then exits 4)."""
        self._broken = True
        os.write(self._wake_w, b"x")

    def _read_internal(self, timeout: float | None) -> list[dict[str, Any]]:
        if self._broken:
            raise OSError(5, "loopback stream broken on request")
        if self.config.pollable:
            try:
                while os.read(self._wake_r, 65536):
                    pass
            except BlockingIOError:
                pass
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._queue and not self.closed and timeout != 0:
                left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if left <= 0:
                    break
                select.select([self._wake_r], [], [], left)  # in slices: close() cannot wake a select
        else:
            with self._cond:
                if not self._queue and timeout != 0 and not self.closed:
                    self._cond.wait(timeout)
        out: list[dict[str, Any]] = []
        with self._cond:
            while self._queue and len(out) < 1024:
                out.append(self._queue.popleft())
        return out

    def status(self) -> dict[str, Any]:
        return {"queued": len(self._queue), "seq": self._seq}


@hookimpl
def clove_register_drivers(registry: DriverRegistry) -> None:
    registry.add("loopback", LoopbackDriver)
