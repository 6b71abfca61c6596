"""The two clients of a :class:`~clove_driver_gpio.sim.SimChipServer`: the driver's line request
(:class:`RemoteLines`) and the outside world's :class:`SimChipController`.

:class:`RemoteLines` uses two connections: one for request/reply calls (the driver's caller
thread) and one that only receives edges (the reader thread, and the fd the host polls), so
the two threads never read the same socket.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Final, final

from clove_driver_gpio.lines import Edge, LineSpec
from clove_driver_gpio.sim.protocol import MAX_MESSAGE, Channel, ServerGone, decode

__all__ = ["RemoteLines", "SimChipController", "wait_for_server"]

#: Messages one ``read_edges`` takes at most, so a flood cannot keep a reader inside it.
READ_BATCH: Final = 64


@final
class RemoteLines:
    """Lines held on a served simulated chip (a :class:`~clove_driver_gpio.lines.Lines` backend).

    :raises FileNotFoundError, ConnectionRefusedError: no server at ``path``.
    :raises SimChipError: the request was refused (``busy``, ``unavailable``).
    :raises ServerGone: the server closed the connection.
    """

    simulated = True
    kind = "sim-socket"

    def __init__(
        self, path: str, specs: list[LineSpec], consumer: str = "clove", timeout: float = 5.0
    ) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._ctl = Channel(path, timeout)
        self._events: Channel | None = None
        try:
            held = self._ctl.call(
                "request", consumer=consumer, lines=[dataclasses.asdict(spec) for spec in specs]
            )
            self.label = str(held["label"])
            self._events = Channel(path, timeout)
            self._events.call("watch", request=held["request"])
            self._events.sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def get(self, offsets: list[int]) -> list[int]:
        with self._lock:
            return [int(v) for v in self._ctl.call("get", offsets=offsets)]

    def set(self, values: dict[int, int]) -> None:
        with self._lock:
            self._ctl.call("set", values=[[off, value] for off, value in values.items()])

    def read_edges(self) -> list[Edge]:
        assert self._events is not None
        sock = self._events.sock
        edges: list[Edge] = []
        for _ in range(READ_BATCH):
            try:
                data = sock.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionResetError:
                data = b""
            if not data:
                raise ServerGone(f"the simulated GPIO chip server at {self.path} went away")
            edges.extend(Edge(int(off), bool(rising), float(ts)) for off, rising, ts in decode(data)["edges"])
        return edges

    def fileno(self) -> int:
        return self._events.sock.fileno() if self._events is not None else -1

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
        self._ctl.close()


@final
class SimChipController:
    """The outside world of a served chip: press buttons, inject faults, watch outputs. Every
    method is the :class:`~clove_driver_gpio.simchip.SimChip` method of the same name.

    :raises FileNotFoundError, ConnectionRefusedError: no server at ``socket_path``.
    Methods raise :class:`~clove_driver_gpio.simchip.SimChipError` for a refusal and
    :class:`~clove_driver_gpio.sim.protocol.ServerGone` when the server stopped.
    """

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self._channel = Channel(socket_path, timeout)

    def press(self, name: str) -> None:
        """Drive an input to its active level."""
        self._channel.call("press", name=name)

    def release(self, name: str) -> None:
        """Drive an input to its inactive level."""
        self._channel.call("release", name=name)

    def set_input(self, name: str, level: int) -> None:
        """Drive an input's wire level."""
        self._channel.call("set_input", name=name, level=level)

    def toggle(self, name: str) -> int:
        """Invert an input; returns the new wire level."""
        return int(self._channel.call("toggle", name=name))

    def stuck(self, name: str, level: int | None) -> None:
        """Freeze a line at ``level`` (``None``: free it)."""
        self._channel.call("stuck", name=name, level=level)

    def level(self, name: str) -> int:
        """A line's wire level."""
        return int(self._channel.call("level", name=name))

    def levels(self) -> dict[str, int]:
        """Every line's wire level."""
        return dict(self._channel.call("levels"))

    def outputs(self) -> dict[str, int]:
        """The outputs' wire levels."""
        return dict(self._channel.call("outputs"))

    def history(self, since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Output changes commanded by the driver, oldest first (at most ``limit``, newest kept)."""
        return list(self._channel.call("history", since=since, limit=limit))

    def info(self) -> dict[str, Any]:
        """The chip's label and every line's wiring and state."""
        return dict(self._channel.call("info"))

    def wait_level(self, name: str, level: int, timeout: float = 5.0) -> bool:
        """Poll until line ``name`` is at ``level``; whether it got there within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if self.level(name) == level:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SimChipController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for_server(socket_path: str, timeout: float = 10.0) -> None:
    """Poll until a server accepts connections at ``socket_path`` (for a server started in
    another process).

    :raises TimeoutError: none did within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            Channel(socket_path, timeout=1.0).close()
            return
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no simulated GPIO chip server at {socket_path} within {timeout} s"
                ) from None
            time.sleep(0.01)
