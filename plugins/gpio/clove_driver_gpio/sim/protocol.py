"""The simulated chip's wire: one JSON object per ``SOCK_SEQPACKET`` message on a UNIX socket.

``SOCK_SEQPACKET`` keeps message boundaries (no framing code) and is connection-oriented, so a
client learns at once that the server went away (EOF), which a ZeroMQ socket would hide behind
reconnects. Every request is ``{"op": NAME, ...args}`` and is answered by ``{"result": ...}`` or
``{"error": {"kind", "message"}}``. A connection that sent ``watch`` then only receives
``{"edges": [[offset, rising, ts], ...]}``.

Driver ops: ``request`` (claim lines: ``consumer``, ``lines`` = LineSpec fields) → ``{"request":
id, "label"}``; ``watch`` (``request`` = id, on a second connection); ``get`` (``offsets``) →
values; ``set`` (``values`` = ``[[offset, value], ...]``). Controller ops are
:class:`~clove_driver_gpio.simchip.SimChip`'s outside-world methods by name, with their keyword
arguments.
"""

from __future__ import annotations

import json
import socket
from typing import Any, Final, final

from clove_driver_gpio.simchip import SimChipError

__all__ = ["CONTROLLER_OPS", "MAX_MESSAGE", "Channel", "ServerGone", "decode", "encode"]

#: The largest message either side sends (a history reply is cut to fit).
MAX_MESSAGE: Final = 1 << 17

#: The operations a controller may send: SimChip's outside-world methods.
CONTROLLER_OPS: Final = frozenset(
    {"set_input", "press", "release", "toggle", "stuck", "level", "levels", "outputs", "history", "info"}
)


class ServerGone(ConnectionError):
    """The simulated chip's server closed the connection (stopped, or the request was released)."""


def encode(message: dict[str, Any]) -> bytes:
    """:raises ValueError: the message is larger than :data:`MAX_MESSAGE`."""
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return data


def decode(data: bytes) -> dict[str, Any]:
    """:raises ValueError: not a JSON object."""
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError("a message is a JSON object")
    return message


@final
class Channel:
    """A client connection that sends a request and waits for its reply.

    :raises FileNotFoundError: no socket at ``path``.
    :raises ConnectionRefusedError: nothing listens there (a stale socket).
    """

    def __init__(self, path: str, timeout: float | None = 5.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise

    def call(self, op: str, **args: Any) -> Any:
        """Send ``op`` and return its result.

        :raises SimChipError: the server refused it.
        :raises ServerGone: the server went away.
        :raises TimeoutError: no reply in time.
        """
        try:
            self.sock.sendall(encode({"op": op, **args}))
            data = self.sock.recv(MAX_MESSAGE)
        except (BrokenPipeError, ConnectionResetError):
            data = b""
        if not data:
            raise ServerGone(f"the simulated GPIO chip server at {self.path} went away")
        reply = decode(data)
        error = reply.get("error")
        if error is not None:
            raise SimChipError(str(error.get("message")), str(error.get("kind", "invalid")))
        return reply.get("result")

    def close(self) -> None:
        self.sock.close()
