"""The fault/control channel of a simbus hub: the :class:`Faults` it applies, the :class:`HubStats`
it counts, :class:`SimBusControl`, the client of its control socket (``<channel>.ctl``), and
:class:`ControlServer`, the hub's side of that socket.

A request is a msgpack map ``{"op": ..., ...}`` (ops ``get``, ``set``, ``clear``,
``inject_error``, ``ping``); the reply is ``{"ok": True, "faults": {...}, "stats": {...}}`` or
``{"ok": False, "error": "..."}``. The hub (:class:`hil.simbus.hub.SimBusHub`) serves it with a
:class:`ControlServer`, in its loop.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from types import TracebackType
from typing import Any, Protocol

import msgpack
import zmq

from hil.simbus.channel import SimBusError, SimBusPaths, simbus_paths
from hil.simbus.wire import CAN_ERR_BUSERROR, CAN_ERR_PROT, CRC_ERROR_DATA, NOBLOCK, error_frame


@dataclass
class Faults:
    """What the hub does to the frames it forwards. All off by default."""

    #: Share of frames lost (0..1).
    drop: float = 0.0
    #: Seconds every frame is held before delivery (0..60); order is kept.
    delay: float = 0.0
    #: Share of frames corrupted (0..1): each is replaced by an error frame.
    error_rate: float = 0.0
    #: The bus is off: nodes cannot send, frames in flight are dropped.
    bus_off: bool = False

    def updated(self, changes: dict[str, Any]) -> Faults:
        """A copy with ``changes`` applied, all validated first.

        :raises ValueError: an unknown knob or a value out of range.
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; known: {sorted(known)}")
        new = Faults(**{**asdict(self), **changes})
        for name in ("drop", "error_rate"):
            value = float(getattr(new, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a share of frames, 0..1, got {value!r}")
            setattr(new, name, value)
        new.delay = float(new.delay)
        if not 0.0 <= new.delay <= 60.0:
            raise ValueError(f"delay is 0..60 seconds, got {new.delay!r}")
        if not isinstance(new.bus_off, bool):
            if new.bus_off in (0, 1):
                new.bus_off = bool(new.bus_off)
            else:
                raise ValueError(f"bus_off is a bool, got {new.bus_off!r}")
        return new


@dataclass
class HubStats:
    """Counters of a hub since it started (frames only; probes and control are not counted)."""

    received: int = 0  #: frames the hub took from nodes
    forwarded: int = 0  #: frames the hub delivered, error frames included
    dropped: int = 0  #: frames lost to the ``drop`` fault
    dropped_bus_off: int = 0  #: frames lost because the bus was off
    dropped_hook: int = 0  #: frames the frame hook discarded
    corrupted: int = 0  #: frames replaced by an error frame (``error_rate``)
    errors_injected: int = 0  #: error frames from ``inject_error`` and bus-off transitions
    delayed: int = 0  #: frames held by the ``delay`` fault right now


class SimBusControl:
    """Changes a running hub's faults and reads its counters, through its control socket.

    Each call returns once the hub has applied it; frames sent afterwards see the new faults.
    Nodes see a bus-off change asynchronously (poll ``bus.state``).

    :raises SimBusError: (from every call) the hub did not answer within ``timeout`` or refused.
    """

    def __init__(self, channel: str, simbus_dir: str | os.PathLike[str] | None = None, *,
                 timeout: float = 2.0) -> None:
        self.paths = simbus_paths(channel, simbus_dir)
        self.timeout = timeout
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._lock = threading.Lock()

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request; returns the hub's reply (``faults`` and ``stats``)."""
        with self._lock:
            if self._ctx.closed:
                raise SimBusError("this control client is closed")
            sock = self._ctx.socket(zmq.REQ)  # one per call: a lost reply cannot wedge the next
            try:
                sock.setsockopt(zmq.LINGER, 0)
                ms = max(1, int(self.timeout * 1000))
                sock.setsockopt(zmq.SNDTIMEO, ms)
                sock.setsockopt(zmq.RCVTIMEO, ms)
                sock.connect(SimBusPaths.endpoint(self.paths.ctl))
                try:
                    sock.send(msgpack.packb({"op": op, **args}))
                    reply = msgpack.unpackb(sock.recv())
                except zmq.Again:
                    raise SimBusError(
                        f"simbus hub at {self.paths.ctl} did not answer {op!r} within {self.timeout} s"
                    ) from None
            finally:
                sock.close(linger=0)
        if not isinstance(reply, dict) or not reply.get("ok"):
            error = reply.get("error") if isinstance(reply, dict) else reply
            raise SimBusError(f"simbus hub refused {op!r}: {error}")
        return reply

    def faults(self) -> Faults:
        return Faults(**self.call("get")["faults"])

    def set_faults(self, **changes: Any) -> Faults:
        """Change the given knobs (``drop``, ``delay``, ``error_rate``, ``bus_off``), keep the rest."""
        return Faults(**self.call("set", faults=changes)["faults"])

    def clear_faults(self) -> Faults:
        return Faults(**self.call("clear")["faults"])

    def inject_error(self, count: int = 1, error_class: int = CAN_ERR_PROT | CAN_ERR_BUSERROR,
                     data: bytes = CRC_ERROR_DATA) -> None:
        """Send ``count`` error frames to every node now (SocketCAN layout: class in the id)."""
        self.call("inject_error", count=count, error_class=error_class, data=bytes(data))

    def stats(self) -> HubStats:
        return HubStats(**self.call("get")["stats"])

    def close(self) -> None:
        with self._lock:
            if not self._ctx.closed:
                self._ctx.term()

    def __enter__(self) -> SimBusControl:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _ControlledHub(Protocol):
    """What a :class:`ControlServer` changes and reports: the hub's faults (changed in place) and
    its counters."""

    faults: Faults
    stats: HubStats


class ControlServer:
    """The hub's side of the control socket: answers every request waiting on it.

    :param hub: whose ``faults`` are changed (in place: whoever holds them sees the change) and
        whose ``faults`` and ``stats`` every reply carries.
    :param emit: delivers an (error) frame to every node, as the hub delivers frames.
    :param sync_bus_off: tells the nodes the bus state when ``faults.bus_off`` changed.
    """

    def __init__(self, hub: _ControlledHub, emit: Callable[[bytes], None],
                 sync_bus_off: Callable[[], None]) -> None:
        self._hub = hub
        self._emit = emit
        self._sync_bus_off = sync_bus_off

    def serve(self, ctl: zmq.Socket[bytes]) -> None:
        """Answer the requests waiting on ``ctl`` (a REP socket; never blocks)."""
        while True:
            try:
                raw = ctl.recv(NOBLOCK)
            except zmq.Again:
                return
            try:
                request = msgpack.unpackb(raw)
                if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                    raise ValueError("a control request is a map with a string 'op'")
                reply = self.handle(request)
            except Exception as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            ctl.send(msgpack.packb(reply))

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply one request; returns the reply.

        :raises ValueError: an unknown op or a bad argument.
        """
        hub = self._hub
        op = request["op"]
        if op == "set":
            changes = request.get("faults")
            if not isinstance(changes, dict):
                raise ValueError("'set' takes a map 'faults'")
            self._apply_faults(hub.faults.updated(changes))
        elif op == "clear":
            self._apply_faults(Faults())
        elif op == "inject_error":
            count = int(request.get("count", 1))
            error_class = int(request.get("error_class", CAN_ERR_PROT | CAN_ERR_BUSERROR))
            data = bytes(request.get("data", CRC_ERROR_DATA))
            if not 1 <= count <= 10_000:
                raise ValueError(f"count is 1..10000, got {count}")
            if not 0 <= error_class <= 0x1FFFFFFF or len(data) > 8:
                raise ValueError("an error frame has a 29-bit error class and at most 8 data bytes")
            for _ in range(count):
                self._emit(error_frame(error_class, data))
            hub.stats.errors_injected += count
        elif op not in ("get", "ping"):
            raise ValueError(f"unknown op {op!r}; known: get, set, clear, inject_error, ping")
        return {"ok": True, "faults": asdict(hub.faults), "stats": asdict(hub.stats)}

    def _apply_faults(self, new: Faults) -> None:
        faults = self._hub.faults
        for f in fields(new):  # in place: whoever holds hub.faults sees the change
            setattr(faults, f.name, getattr(new, f.name))
        self._sync_bus_off()
