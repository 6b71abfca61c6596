"""A simulated serial device on a pseudo-terminal: :class:`PtyDevice`, the base of the devices in
:mod:`hil.gps`.

Each device owns a pty pair and plays the device on the master; the code under test opens the
slave by a stable path, :attr:`PtyDevice.port`, a symlink the simulator points at the slave's
``/dev/pts/N`` name (a device config names the symlink; a reconnect re-points it, as udev does a
``/dev/serial/by-id`` link). The simulator keeps its own slave fd open for the pty's whole life
so its writes never fail while no reader has the port open, and sets the line raw (no echo, no
CR/LF translation). A pty ignores the baud rate, so the device paces its bytes itself (10 bits
per byte on the wire); bytes the reader leaves unread past the pty's buffer are dropped, as a
UART overrun would drop them.

Faults: :meth:`PtyDevice.disconnect` (the master closes: a reader gets EIO / hang-up, and the
symlink disappears as an unplugged adapter's node would) and :meth:`PtyDevice.reconnect` (a new
pty behind the same symlink).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import tempfile
import threading
import time
import tty
from typing import Final, TypeVar

__all__ = ["CHUNK_SECONDS", "PtyDevice"]

#: Seconds of line time one write covers at most (the pacing granularity).
CHUNK_SECONDS: Final = 0.005

_Device = TypeVar("_Device", bound="PtyDevice")


class PtyDevice:
    """A device on a pty pair behind the symlink :attr:`port` (``link``; by default a fresh
    temporary directory's ``tty``). Subclasses run :meth:`_serve` in a thread."""

    thread_name = "hil-pty-device"

    def __init__(self, link: str | None = None, baudrate: int | None = None) -> None:
        if baudrate is not None and baudrate <= 0:
            raise ValueError("baudrate must be positive")
        self.baudrate = baudrate
        self._tempdir: str | None = None
        if link is None:
            self._tempdir = tempfile.mkdtemp(prefix="hil-pty-")
            link = os.path.join(self._tempdir, "tty")
        elif os.path.lexists(link) and not os.path.islink(link):
            raise FileExistsError(f"{link} exists and is not a symlink")
        self.port: Final[str] = os.path.abspath(link)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name = ""
        self._generation = 0  # bumped by every disconnect/reconnect
        self._line_free = 0.0  # monotonic time the wire is next idle
        self._closed = False
        self.bytes_sent = 0
        self.bytes_dropped = 0  # overruns, and everything sent while disconnected
        self.received = bytearray()  # bytes the reader wrote to the device (kept up to 64 KiB)
        self.connects = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        try:
            self._open_pty()
        except BaseException:
            self._close_fds()
            if self._tempdir is not None:
                shutil.rmtree(self._tempdir, ignore_errors=True)
            raise

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self: _Device) -> _Device:
        """Start the device's thread (a no-op while it runs)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the device was stopped")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, close every fd, remove the symlink (idempotent).

        :raises TimeoutError: the thread did not end within ``timeout``.
        """
        self._stop.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"{self.thread_name} did not stop")
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_pty()
            self._close_fds()
            with contextlib.suppress(FileNotFoundError):
                if os.path.islink(self.port):
                    os.unlink(self.port)
            if self._tempdir is not None:
                shutil.rmtree(self._tempdir, ignore_errors=True)

    def __enter__(self: _Device) -> _Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._master is not None

    @property
    def slave_name(self) -> str:
        """The current ``/dev/pts/N`` behind :attr:`port` ("" while disconnected)."""
        with self._lock:
            return self._slave_name if self._master is not None else ""

    # --- faults ---------------------------------------------------------------------------------

    def disconnect(self) -> None:
        """Unplug: close the pty (a reader of the slave gets EIO / POLLHUP) and remove the
        symlink. Output while unplugged is dropped. A no-op when already unplugged."""
        with self._lock:
            if self._master is None:
                return
            self._close_pty()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.port)
        self._wake()

    def reconnect(self) -> None:
        """Plug in again: a new pty, the symlink re-pointed at it (an unplug first if needed)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the device was stopped")
            if self._master is not None:
                self._close_pty()
            self._open_pty()
        self._wake()

    # --- for subclasses -------------------------------------------------------------------------

    def _serve(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:  # pragma: no cover - a bug; keep the traceback visible
            import logging

            logging.getLogger(__name__).exception("%s failed", self.thread_name)

    def _sleep_until(self, deadline: float) -> bool:
        """Sleep until monotonic ``deadline``; False when stopping."""
        remaining = deadline - time.monotonic()
        if remaining > 0:
            return not self._stop.wait(remaining)
        return not self._stop.is_set()

    def _transmit(self, data: bytes) -> bool:
        """Send ``data`` paced to the baud rate (immediately without one). The schedule is
        absolute: each chunk is written when its last byte would have left the wire. False when
        stopping."""
        if self.baudrate is None:
            self._write_now(data)
            return not self._stop.is_set()
        per_second = self.baudrate / 10.0
        chunk = max(1, int(per_second * CHUNK_SECONDS))
        at = max(self._line_free, time.monotonic())
        for i in range(0, len(data), chunk):
            piece = data[i : i + chunk]
            at += len(piece) / per_second
            if not self._sleep_until(at):
                return False
            self._write_now(piece)
        self._line_free = at
        return True

    def _write_now(self, data: bytes) -> None:
        with self._lock:
            fd = self._master
            if fd is None:
                self.bytes_dropped += len(data)
                return
            view = memoryview(data)
            while view:
                try:
                    n = os.write(fd, view)
                except (BlockingIOError, InterruptedError):
                    break  # the pty's buffer is full: nobody reads; an overrun drops the rest
                except OSError as err:
                    if err.errno not in (errno.EIO, errno.EAGAIN):
                        raise
                    break
                self.bytes_sent += n
                view = view[n:]
            self.bytes_dropped += len(view)

    def _read_available(self) -> tuple[int, bytes]:
        """What the reader wrote to the device since the last call (non-blocking), with the
        generation of the pty it came from."""
        with self._lock:
            fd, generation = self._master, self._generation
            if fd is None:
                return generation, b""
            chunks = []
            while True:
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as err:
                    if err.errno != errno.EIO:
                        raise
                    break
                if not data:
                    break
                chunks.append(data)
        got = b"".join(chunks)
        if got:
            self.received += got
            del self.received[: max(0, len(self.received) - 65536)]
        return generation, got

    def _wait_readable(self, timeout: float) -> None:
        """Wait for input or a wake-up (a disconnect, a reconnect, a stop)."""
        with self._lock:
            fd = self._master
        fds = [self._wake_r] if fd is None else [fd, self._wake_r]
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except (OSError, ValueError):  # the fd closed under us: the generation tells
            ready = []
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    # --- the pty --------------------------------------------------------------------------------

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            os.set_blocking(master, False)
            name = os.ttyname(slave)
            tmp = f"{self.port}.{os.getpid()}.{threading.get_ident()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(name, tmp)
            os.replace(tmp, self.port)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave, self._slave_name = master, slave, name
        self._generation += 1
        self._line_free = time.monotonic()
        self.connects += 1

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._generation += 1

    def _close_fds(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
