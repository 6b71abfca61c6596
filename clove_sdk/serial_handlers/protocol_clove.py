"""pyserial's ``clove://DEVICE`` URL: existing pyserial code reaches a serial device through the
kernel, under the agent's grant, unchanged apart from the port name.

    import clove_sdk.pyserial          # registers this package with pyserial
    import serial
    gps = serial.serial_for_url("clove://gps", timeout=1)
    gps.write(b"$PMTK220,1000*1F\\r\\n")
    line = gps.readline()

Each call becomes a device syscall: ``write`` is the driver's ``write`` operation, reads take
the agent's queue of the device's stream (``device.recv``), the modem lines are ``set_modem`` /
``get_modem`` and ``flush`` is ``flush``; so the grant must list what the program uses (at least
``read`` and ``write``). Errors arrive as :class:`serial.SerialException` with the kernel's
message (a refusal's text is kept and the Clove error chained), a write timeout as
:class:`serial.SerialTimeoutException`.

Operators may add options: ``clove://gps?socket=/run/clove.sock&timeout=10&queue=65536``
(the control socket, the client's reply timeout in seconds, the queue size in bytes).
Baud rate, parity and the like belong to the operator's device config: setting them here
changes nothing on the device.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from serial.serialutil import (
    PortNotOpenError,
    SerialBase,
    SerialException,
    SerialTimeoutException,
    Timeout,
    to_bytes,
)

from clove_sdk.errors import CloveError, DeviceTimeout, PermissionDenied

__all__ = ["ClientLike", "DeviceLike", "Serial", "client_factory", "default_client", "parse_url"]

#: The longest single wait in the kernel: blocking reads are cut into slices this long, so a
#: write from another thread waits at most one slice for the shared connection.
READ_SLICE = 0.25
#: Bytes asked for per pull beyond what a read needs (readline reads one byte at a time).
PULL_SIZE = 4096
#: ``device.recv`` refuses more than this per call.
MAX_PULL = 1 << 20
#: in_waiting stops pulling from the kernel once this much is buffered here.
BUFFER_CAP = 1 << 20
OPTIONS = ("socket", "timeout", "queue")


class DeviceLike(Protocol):
    """What this handler needs of :class:`clove_sdk._devices.Device`."""

    def call(self, op: str, /, reply_timeout: float | None = None, **args: Any) -> Any: ...

    def read(self, size: int = 4096, timeout: float | None = None) -> bytes: ...

    def subscribe(self, filters: list[Any] | None = None, queue: int | None = None) -> dict[str, Any]: ...

    def unsubscribe(self) -> dict[str, Any]: ...


class ClientLike(Protocol):
    """What this handler needs of :class:`clove_sdk.CloveClient`."""

    def device(self, name: str) -> DeviceLike: ...

    def close(self) -> None: ...


def default_client(options: dict[str, str]) -> ClientLike:
    """A :class:`clove_sdk.CloveClient`: the agent's channel inside an agent, else the control
    socket (``socket`` option, ``$CLOVE_SOCKET``, ``/tmp/clove.sock``)."""
    from clove_sdk.client import CloveClient

    timeout = float(options["timeout"]) if "timeout" in options else 30.0
    return CloveClient(options.get("socket"), timeout=timeout)


#: Makes the client a port talks through, from the URL's options; tests replace it with a fake.
client_factory: Callable[[dict[str, str]], ClientLike] = default_client


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """``clove://NAME?opt=value`` → ``(NAME, {opt: value})``.

    :raises SerialException: not a clove URL, no device name, or an unknown or bad option.
    """
    usage = f"expected clove://DEVICE[?{'&'.join(f'{o}=...' for o in OPTIONS)}], got {url!r}"
    parts = urlsplit(url)
    if parts.scheme.lower() != "clove" or not parts.netloc or parts.path not in ("", "/") or parts.fragment:
        raise SerialException(usage)
    options: dict[str, str] = {}
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if key not in OPTIONS:
            raise SerialException(f"unknown option {key!r}: {usage}")
        options[key] = values[-1]
    try:
        if "timeout" in options and not float(options["timeout"]) > 0:
            raise ValueError("timeout must be positive")
        if "queue" in options and not int(options["queue"]) > 0:
            raise ValueError("queue must be positive")
    except ValueError as err:
        raise SerialException(f"{err}: {usage}") from None
    return parts.netloc, options


class _Turns:
    """Serialises use of the port's one connection (a ZeroMQ socket is not thread-safe, and an
    operator's subscription belongs to its connection). A waiting operation goes before the
    reader's next slice, so a reader blocked for data cannot starve a writer."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._ops_waiting = 0

    @contextmanager
    def op(self) -> Iterator[None]:
        with self._cond:
            self._ops_waiting += 1
            while self._busy:
                self._cond.wait()
            self._ops_waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._busy or self._ops_waiting:
                self._cond.wait()
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()


@contextmanager
def _as_serial_errors(port: str, what: str) -> Iterator[None]:
    """Clove errors leave as pyserial's, keeping the kernel's message and chaining the cause."""
    try:
        yield
    except PermissionDenied as err:
        raise SerialException(err.message) from err
    except DeviceTimeout as err:
        kind = SerialTimeoutException if what == "write" else SerialException
        raise kind(f"{port}: {what}: {err.message}") from err
    except CloveError as err:
        raise SerialException(f"{port}: {what}: {err.message}") from err


class Serial(SerialBase):  # type: ignore[misc]  # pyserial is untyped
    """A pyserial port on a Clove device (made by ``serial.serial_for_url("clove://NAME")``)."""

    is_open: bool  # set by SerialBase

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._client: ClientLike | None = None
        self._device: DeviceLike | None = None
        self._buffer = bytearray()
        self._turns = _Turns()
        self._cancel = threading.Event()
        super().__init__(*args, **kwargs)  # opens when given a port

    # ---- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect and start queueing the device's stream, so nothing sent after open is lost.

        :raises SerialException: a bad URL, no kernel, no such device, or the device is down.
        """
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise SerialException("Port is already open.")
        name, options = parse_url(self.portstr)
        try:
            client = client_factory(options)
        except (CloveError, OSError) as err:
            raise SerialException(f"could not open port {self.portstr}: {err}") from err
        device = client.device(name)
        try:
            device.subscribe(queue=int(options["queue"]) if "queue" in options else None)
        except PermissionDenied:
            pass  # a write-only grant: the port opens, and a read reports the refusal
        except CloveError as err:
            client.close()
            raise SerialException(f"could not open port {self.portstr}: {err.message}") from err
        self._client, self._device = client, device
        self._buffer.clear()
        self._cancel.clear()
        self.is_open = True

    def close(self) -> None:
        """Stop the subscription and disconnect; safe twice."""
        if not getattr(self, "is_open", False):
            return
        self.is_open = False
        self._cancel.set()  # a reader leaves at its next slice
        with self._turns.op():
            device, client = self._device, self._client
            self._device = self._client = None
            try:
                if device is not None:
                    device.unsubscribe()
            except CloveError:
                pass  # the kernel is gone: the subscription went with it
            finally:
                if client is not None:
                    client.close()

    def _reconfigure_port(self) -> None:
        """Nothing to do: the line settings are the operator's (the device's config)."""

    # ---- data -----------------------------------------------------------------------------------

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes: with ``timeout=None`` wait for all of them, with ``0`` take what
        is there, with ``t`` wait up to ``t`` seconds (pyserial's rules)."""
        if not self.is_open:
            raise PortNotOpenError()
        timeout = Timeout(self._timeout)
        while len(self._buffer) < size and self.is_open:
            if self._cancel.is_set():
                self._cancel.clear()
                break
            left = timeout.time_left()
            self._pull(size - len(self._buffer), READ_SLICE if left is None else min(left, READ_SLICE))
            if timeout.expired():
                break
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _pull(self, need: int, wait: float) -> None:
        """Move what the kernel has queued (up to ``need`` plus a margin) into the buffer,
        waiting up to ``wait`` seconds for the first byte."""
        with self._turns.read(), _as_serial_errors(self.portstr, "read"):
            if self._device is None:
                return  # closed while waiting for the turn
            self._buffer += self._device.read(
                size=min(max(need, PULL_SIZE), MAX_PULL), timeout=max(0.0, wait)
            )

    def write(self, data: Any) -> int:
        """Send ``data`` through the driver's ``write`` operation; returns the count written."""
        if not self.is_open:
            raise PortNotOpenError()
        result = self._op("write", data=to_bytes(data))
        return int(result["written"])

    def cancel_read(self) -> None:
        """Make a blocked :meth:`read` return (within one slice) with what it has."""
        self._cancel.set()

    @property
    def in_waiting(self) -> int:
        """Bytes ready to read without waiting (pulled from the kernel's queue now)."""
        if not self.is_open:
            raise PortNotOpenError()
        if len(self._buffer) < BUFFER_CAP:
            self._pull(PULL_SIZE, 0.0)
        return len(self._buffer)

    @property
    def out_waiting(self) -> int:
        """Always 0: each write is handed to the driver before it returns."""
        return 0

    def reset_input_buffer(self) -> None:
        """Discard what was received and not read: this side's buffer and the kernel's queue
        (other subscribers of the device keep theirs)."""
        if not self.is_open:
            raise PortNotOpenError()
        self._buffer.clear()
        for _ in range(64):  # bounded: a device that never pauses must not keep us here
            self._pull(MAX_PULL, 0.0)
            if not self._buffer:
                break
            self._buffer.clear()

    def reset_output_buffer(self) -> None:
        """Nothing to discard: writes are not buffered on this side."""
        if not self.is_open:
            raise PortNotOpenError()

    def flush(self) -> None:
        """Wait until written bytes have left the device (the driver's ``flush``)."""
        if not self.is_open:
            raise PortNotOpenError()
        self._op("flush")

    # ---- modem lines ----------------------------------------------------------------------------

    def _update_rts_state(self) -> None:
        self._op("set_modem", rts=bool(self._rts_state))

    def _update_dtr_state(self) -> None:
        self._op("set_modem", dtr=bool(self._dtr_state))

    def _update_break_state(self) -> None:
        self._op("set_modem", brk=bool(self._break_state))

    @property
    def cts(self) -> bool:
        return self._line("cts")

    @property
    def dsr(self) -> bool:
        return self._line("dsr")

    @property
    def ri(self) -> bool:
        return self._line("ri")

    @property
    def cd(self) -> bool:
        return self._line("cd")

    def _line(self, name: str) -> bool:
        if not self.is_open:
            raise PortNotOpenError()
        return bool(self._op("get_modem")[name])

    def _op(self, op: str, **args: Any) -> Any:
        with self._turns.op(), _as_serial_errors(self.portstr, op):
            if self._device is None:
                raise PortNotOpenError()
            return self._device.call(op, **args)
