"""The serial driver: one pyserial port (a tty, a pty, or a pyserial URL) behind the Clove
driver contract.

Reads never block inside pyserial: the port is opened with ``timeout=0`` and the driver waits
itself, so a ``close()`` from another thread can always cut the wait short:

- ttys and ``socket://`` have an fd that is readable exactly when pyserial's ``read`` has data;
  the wait polls it together with a private wake-up pipe that ``close()`` writes to;
- other URLs (``loop://``, ``rfc2217://``) buffer inside pyserial, so the driver retries a
  non-blocking read in short slices, sleeping on an event that ``close()`` sets.

Only ttys report their fd through :meth:`SerialDriver.fileno` (the host polls it and reads
with ``read(0)``); URL ports answer ``-1`` and the host pumps them with a reader thread.
"""

from __future__ import annotations

import errno
import math
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

from clove.drivers import (
    DeviceBroken,
    DeviceBusy,
    DeviceError,
    DeviceTimeout,
    DeviceUnavailable,
    Driver,
    NoArgs,
    operation,
)
from clove_driver_serial.config import SerialConfig, SerialGrant, SetModemArgs, WriteArgs

__all__ = ["SerialDriver"]

#: How often a port without a pollable fd is retried while a read waits (seconds).
_POLL_SLICE = 0.01
#: Readable-but-empty polls in a row before a port counts as gone (a disconnected tty stays
#: readable forever; pyserial usually raises on the first, this guards the other paths).
_MAX_EMPTY_READY = 3
#: How long close() waits for a reader to leave the port before closing it anyway.
_CLOSE_WAIT = 2.0
_NO_MODEM_ERRNOS = (errno.ENOTTY, errno.EINVAL)


class SerialDriver(Driver):
    """A serial port; its stream is the bytes it receives."""

    Config: ClassVar[type[Any]] = SerialConfig
    Grant = SerialGrant
    stream: ClassVar[Literal["items", "bytes"] | None] = "bytes"
    stream_op: ClassVar[str | None] = "read"

    config: SerialConfig

    def __init__(self, config: SerialConfig) -> None:
        super().__init__(config)
        self._ser: Any = None
        self._tty = False  # a POSIX tty: fileno() is reported to the host
        self._poller: Any = None  # polls the port's fd and the wake-up pipe (ttys, socket://)
        self._wake_r = self._wake_w = -1
        self._closing = threading.Event()
        self._io_lock = threading.Lock()  # held by a read; close() takes it before closing the port
        self._empty_ready = 0

    # ---- lifecycle ------------------------------------------------------------------------------

    def _open(self) -> None:
        import serial
        from serial.urlhandler import protocol_socket

        cfg = self.config
        try:
            ser = serial.serial_for_url(cfg.port, do_not_open=True)
            ser.baudrate = cfg.baudrate
            ser.bytesize = cfg.bytesize
            ser.parity = cfg.parity
            ser.stopbits = int(cfg.stopbits) if cfg.stopbits in (1, 2) else cfg.stopbits
            ser.xonxoff, ser.rtscts, ser.dsrdtr = cfg.xonxoff, cfg.rtscts, cfg.dsrdtr
            ser.timeout = 0  # reads never block in pyserial; _read_internal does the waiting
            ser.write_timeout = cfg.write_timeout
            tty = os.name == "posix" and isinstance(ser, serial.Serial)
            if tty and cfg.exclusive:
                ser.exclusive = True  # flock(LOCK_EX | LOCK_NB): a second opener fails
            ser.open()
        except (serial.SerialException, ValueError) as err:
            raise self._open_error(err) from err
        self._ser, self._tty = ser, tty
        if tty or isinstance(ser, protocol_socket.Serial):
            try:
                self._wake_r, self._wake_w = os.pipe()
                self._poller = select.poll()
                self._poller.register(ser.fileno(), select.POLLIN | select.POLLPRI)
                self._poller.register(self._wake_r, select.POLLIN)
            except BaseException:
                self._close_wake_pipe()
                ser.close()
                raise

    def _open_error(self, err: Exception) -> DeviceError:
        code = getattr(err, "errno", None)
        text = f"serial: could not open port {self.config.port!r}: {err}"
        if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
            return DeviceBusy(
                f"{text} (is another program using it?)", details={"port": self.config.port, "errno": code}
            )
        return DeviceUnavailable(text, details={"port": self.config.port, "errno": code})

    def _close(self) -> None:
        self._closing.set()
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        # Wait for a reader to leave the port, so no fd it polls is closed (and reused) under it.
        held = self._io_lock.acquire(timeout=_CLOSE_WAIT)
        try:
            self._ser.close()
        finally:
            if held:
                self._close_wake_pipe()
                self._io_lock.release()

    def _close_wake_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def fileno(self) -> int:
        """The tty's fd (readable when :meth:`read` has data); ``-1`` for URLs and when closed."""
        if self._tty and self.is_open:
            return int(self._ser.fileno())
        return -1

    def status(self) -> dict[str, Any]:
        port = self.config.port
        return {
            "port": port,
            "transport": port.split("://", 1)[0] if "://" in port else "tty",
            "baudrate": self.config.baudrate,
        }

    @staticmethod
    def detect() -> list[dict[str, Any]]:
        """Serial ports pyserial finds on this machine (USB adapters, onboard UARTs)."""
        from serial.tools import list_ports

        return [
            {"port": p.device, "description": p.description, "hwid": p.hwid} for p in list_ports.comports()
        ]

    # ---- the stream -----------------------------------------------------------------------------

    def _read_internal(self, timeout: float | None) -> bytes:
        with self._io_lock:
            if self._closing.is_set():
                return b""
            data = self._read_now()
            if data or timeout == 0:
                return data
            if self._poller is not None:
                return self._wait_on_fd(timeout)
            return self._wait_in_slices(timeout)

    def _read_now(self) -> bytes:
        return bytes(self._ser.read(self.config.read_chunk))

    def _wait_on_fd(self, timeout: float | None) -> bytes:
        ready = self._poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000)))
        if self._closing.is_set() or not ready:
            return b""
        data = self._read_now()  # pyserial raises for a disconnected tty or a closed socket
        if data:
            self._empty_ready = 0
            return data
        self._empty_ready += 1
        if self._empty_ready >= _MAX_EMPTY_READY:
            raise DeviceBroken(f"serial: {self.config.port} is readable but returns no data (disconnected?)")
        return b""

    def _wait_in_slices(self, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _POLL_SLICE if deadline is None else deadline - time.monotonic()
            if left <= 0 or self._closing.wait(min(left, _POLL_SLICE)):
                return b""
            data = self._read_now()
            if data:
                return data

    # ---- operations -----------------------------------------------------------------------------

    @operation(args=WriteArgs)
    def write(self, args: WriteArgs) -> dict[str, int]:
        """Send bytes; waits up to write_timeout for room in the port's output buffer."""
        return {"written": int(self._ser.write(args.data))}

    @operation(args=SetModemArgs)
    def set_modem(self, args: SetModemArgs) -> dict[str, bool]:
        """Drive the RTS, DTR and break output lines (omitted ones keep their state)."""
        with _modem_lines(self.config.port, "set_modem"):
            if args.rts is not None:
                self._ser.rts = args.rts
            if args.dtr is not None:
                self._ser.dtr = args.dtr
            if args.brk is not None:
                self._ser.break_condition = args.brk
        return {
            "rts": bool(self._ser.rts),
            "dtr": bool(self._ser.dtr),
            "brk": bool(self._ser.break_condition),
        }

    @operation(args=NoArgs)
    def get_modem(self, args: NoArgs) -> dict[str, bool]:
        """Read the modem lines: inputs CTS, DSR, RI, CD and outputs RTS, DTR."""
        ser = self._ser
        with _modem_lines(self.config.port, "get_modem"):
            inputs = {"cts": bool(ser.cts), "dsr": bool(ser.dsr), "ri": bool(ser.ri), "cd": bool(ser.cd)}
        return {**inputs, "rts": bool(ser.rts), "dtr": bool(ser.dtr)}

    @operation(args=NoArgs)
    def flush(self, args: NoArgs) -> dict[str, bool]:
        """Wait until written bytes have left the port (up to write_timeout)."""
        if self._tty:
            # tcdrain has no timeout and blocks for good under stalled flow control; wait for
            # the kernel's output queue ourselves, then drain the last bytes.
            deadline = time.monotonic() + self.config.write_timeout
            while self._ser.out_waiting:
                if time.monotonic() >= deadline:
                    raise DeviceTimeout(
                        f"serial: {self.config.port} did not drain within {self.config.write_timeout:g} s",
                        details={"pending": int(self._ser.out_waiting)},
                    )
                time.sleep(0.005)
        self._ser.flush()
        return {"flushed": True}

    @operation(args=NoArgs)
    def reset_input(self, args: NoArgs) -> dict[str, bool]:
        """Discard bytes received by the host but not yet read."""
        self._ser.reset_input_buffer()
        return {"reset": True}

    # ---- errors ---------------------------------------------------------------------------------

    def map_error(self, err: BaseException) -> DeviceError | None:
        serial = sys.modules.get("serial")  # not imported: the error cannot be one of its own
        if serial is None:
            return None
        SerialException, SerialTimeoutException = serial.SerialException, serial.SerialTimeoutException  # noqa: N806
        port = self.config.port
        if isinstance(err, SerialTimeoutException):
            return DeviceTimeout(f"serial: {port}: {err}", details={"port": port})
        if isinstance(err, SerialException):
            return DeviceBroken(f"serial: {port}: {err}", details={"port": port})
        return None


@contextmanager
def _modem_lines(port: str, what: str) -> Iterator[None]:
    """Turn the ENOTTY that a port without modem lines (a pty, a socket) raises into a clear
    DeviceUnavailable; other errors pass on to the usual mapping."""
    try:
        yield
    except OSError as err:
        if err.errno not in _NO_MODEM_ERRNOS:
            raise
        raise DeviceUnavailable(
            f"serial: {port}: this port has no modem lines ({what}: {err.strerror})",
            details={"port": port, "errno": err.errno},
        ) from err
