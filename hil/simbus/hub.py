"""The simbus hub: the process (or thread) that relays one channel's frames between its nodes,
applying the :class:`~hil.simbus.control.Faults` in force, serving the control socket (with a
:class:`~hil.simbus.control.ControlServer`) and optionally capturing what it delivers to a
python-can log file (see :mod:`hil.simbus`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from types import TracebackType
from typing import Any

import can
import zmq

from hil.simbus.channel import (
    SimBusError,
    SimBusPaths,
    listening,
    resolve_dir,
    simbus_paths,
    validate_channel,
)
from hil.simbus.control import ControlServer, Faults, HubStats, SimBusControl
from hil.simbus.wire import (
    CAN_ERR_BUSERROR,
    CAN_ERR_BUSOFF,
    CAN_ERR_PROT,
    CAN_ERR_RESTARTED,
    CRC_ERROR_DATA,
    NOBLOCK,
    TOPIC_FRAME,
    TOPIC_PROBE,
    decode,
    encode,
    error_frame,
    status_frame,
)

_log = logging.getLogger(__name__)

FrameHook = Callable[[can.Message], "can.Message | None"]


class SimBusHub:
    """The forwarder of one channel: run it with :meth:`start` (a thread) or :meth:`run`.

    :param channel: the bus name (letters, digits, ``_.-``).
    :param simbus_dir: where the sockets go (default :data:`DEFAULT_DIR` or ``$CLOVE_SIMBUS_DIR``).
    :param log_path: capture every delivered frame to this python-can log file.
    :param faults: the initial faults (default: none).
    :param seed: seed of the random choices of ``drop`` and ``error_rate`` (reproducible runs).
    :param frame_hook: in-process only: called with each frame after the faults; returns the
        frame to deliver (possibly changed) or ``None`` to discard it. Runs in the hub's loop.
    :raises ValueError: a bad channel name.
    """

    #: Frames the hub queues per receiving node before that node overruns.
    CLIENT_QUEUE = 50_000
    #: Frames queued on the hub's collecting side before senders wait.
    COLLECT_QUEUE = 10_000
    #: Frames handled per loop round before the control socket gets a turn.
    BATCH = 2048
    #: Longest wait of an idle loop, seconds (bounds how late a direct ``faults.bus_off`` applies).
    IDLE_TICK = 0.05

    def __init__(
        self,
        channel: str,
        simbus_dir: str | os.PathLike[str] | None = None,
        *,
        log_path: str | os.PathLike[str] | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        frame_hook: FrameHook | None = None,
    ) -> None:
        self.channel = validate_channel(channel)
        self.dir = resolve_dir(simbus_dir)
        self.paths = simbus_paths(self.channel, self.dir)
        self.log_path = None if log_path is None else os.fspath(log_path)
        #: The faults in force. Changing its fields directly also works (from any thread, not
        #: validated): ``drop``, ``delay`` and ``error_rate`` apply to the next frame, ``bus_off``
        #: within :attr:`IDLE_TICK`. The control socket validates and applies at once.
        self.faults = Faults().updated(asdict(faults)) if faults is not None else Faults()
        self._announced_bus_off = False  # the bus state nodes were last told
        self.stats = HubStats()
        self._rng = random.Random(seed)
        self._frame_hook = frame_hook
        self._delayed: deque[tuple[float, bytes]] = deque()
        self._logger: can.Listener | None = None
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._inodes: dict[str, int] = {}
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._xsub: zmq.Socket[bytes] | None = None
        self._xpub: zmq.Socket[bytes] | None = None
        self._ctl: zmq.Socket[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._control: SimBusControl | None = None
        self._control_lock = threading.Lock()
        self._ran = False

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> SimBusHub:
        """Run the hub in a daemon thread; returns once its sockets are bound.

        :raises SimBusError: another hub serves the channel, or the sockets cannot be bound.
        """
        if self._thread is not None:
            raise SimBusError("this hub was already started")
        self._thread = threading.Thread(
            target=self._thread_main, name=f"simbus-hub-{self.channel}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise SimBusError(f"simbus hub {self.channel!r} did not start within {timeout} s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def _thread_main(self) -> None:
        try:
            self.run(ready=self._ready.set)
        except BaseException as exc:
            if self._ready.is_set():  # it was running: nobody waits for the error
                _log.exception("simbus hub %r stopped on an error", self.channel)
            self._error = exc  # start() raises it
        finally:
            self._ready.set()

    def __del__(self) -> None:
        if not self._ran:  # never ran, so _close never released the wake pipe
            for fd in (getattr(self, "_wake_r", -1), getattr(self, "_wake_w", -1)):
                with contextlib.suppress(OSError):
                    if fd >= 0:
                        os.close(fd)

    def run(self, ready: Callable[[], None] | None = None) -> None:
        """Bind the sockets, call ``ready``, then forward frames until :meth:`stop`.

        The socket files are removed when it returns.

        :raises SimBusError: another hub serves the channel, or the sockets cannot be bound.
        :raises ValueError: python-can cannot write the log file's type.
        """
        if self._ran:
            raise SimBusError("a hub runs once; make a new SimBusHub")
        self._ran = True
        try:
            self._bind()  # first: a hub that cannot start must not truncate a running hub's capture
            if self.log_path is not None:
                self._logger = can.Logger(self.log_path)  # ValueError: a type python-can cannot write
            if ready is not None:
                ready()
            self._loop()
        finally:
            self._close()

    def request_stop(self) -> None:
        """Ask the loop to end (safe from a signal handler and from any thread)."""
        self._stopping = True
        with contextlib.suppress(OSError):  # full (already woken) or closed (already ended)
            os.write(self._wake_w, b"\0")

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop and, for a hub started with :meth:`start`, wait for its thread."""
        self.request_stop()
        with self._control_lock:
            if self._control is not None:
                self._control.close()
                self._control = None
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> SimBusHub:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- control (through the control socket, so it works whichever thread runs the loop) -------

    def control(self) -> SimBusControl:
        """A control client for this hub (shared; closed by :meth:`stop`)."""
        with self._control_lock:
            if self._control is None:
                self._control = SimBusControl(self.channel, self.dir)
            return self._control

    def set_faults(self, **changes: Any) -> Faults:
        """Change fault knobs (see :class:`Faults`); returns the faults now in force."""
        return self.control().set_faults(**changes)

    def clear_faults(self) -> Faults:
        return self.control().clear_faults()

    def inject_error(self, count: int = 1, error_class: int = CAN_ERR_PROT | CAN_ERR_BUSERROR,
                     data: bytes = CRC_ERROR_DATA) -> None:
        self.control().inject_error(count, error_class, data)

    def get_stats(self) -> HubStats:
        return self.control().stats()

    # ---- sockets --------------------------------------------------------------------------------

    def _bind(self) -> None:
        if not os.path.isdir(self.dir):
            os.makedirs(self.dir, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(self.dir, 0o1777)
        for path in self.paths:
            if os.path.lexists(path):
                if listening(path):
                    raise SimBusError(f"a simbus hub already serves channel {self.channel!r} ({path})")
                os.unlink(path)  # stale: its hub died without cleaning up
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._ctx = ctx
        xsub = self._xsub = ctx.socket(zmq.XSUB)
        xsub.setsockopt(zmq.LINGER, 0)
        xsub.setsockopt(zmq.RCVHWM, self.COLLECT_QUEUE)
        xpub = self._xpub = ctx.socket(zmq.XPUB)
        xpub.setsockopt(zmq.LINGER, 0)
        xpub.setsockopt(zmq.SNDHWM, self.CLIENT_QUEUE)
        ctl = self._ctl = ctx.socket(zmq.REP)
        ctl.setsockopt(zmq.LINGER, 0)
        try:
            for sock, path, mode in ((xpub, self.paths.pub, 0o666), (xsub, self.paths.sub, 0o666),
                                     (ctl, self.paths.ctl, 0o600)):
                sock.bind(SimBusPaths.endpoint(path))
                self._inodes[path] = os.stat(path).st_ino
                os.chmod(path, mode)
        except zmq.ZMQError as exc:
            raise SimBusError(f"simbus hub {self.channel!r} cannot bind in {self.dir}: {exc}") from exc
        xsub.send(b"\x01")  # subscribe to everything every node sends (replayed to each new node)

    def _close(self) -> None:
        for sock in (self._xsub, self._xpub, self._ctl):
            if sock is not None:
                sock.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
        self._xsub = self._xpub = self._ctl = None
        self._ctx = None
        for path, inode in self._inodes.items():
            with contextlib.suppress(OSError):  # libzmq may have removed it already
                if os.lstat(path).st_ino == inode:
                    os.unlink(path)
        self._inodes.clear()
        if self._logger is not None:
            self._logger.stop()
            self._logger = None
        self._delayed.clear()
        wake_r, wake_w = self._wake_r, self._wake_w
        self._wake_r = self._wake_w = -1  # first, so a late request_stop writes nowhere
        for fd in (wake_r, wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # ---- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        xsub, xpub, ctl = self._xsub, self._xpub, self._ctl
        assert xsub is not None
        assert xpub is not None
        assert ctl is not None
        poller = zmq.Poller()
        poller.register(xsub, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        poller.register(ctl, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        delayed = self._delayed
        on_frame = self._on_frame
        control = ControlServer(self, self._emit, self._sync_bus_off)
        batch = self.BATCH
        idle_ms = max(1, int(self.IDLE_TICK * 1000))
        self._sync_bus_off()
        while not self._stopping:
            timeout = idle_ms
            if delayed:
                timeout = min(idle_ms, max(0, math.ceil((delayed[0][0] - time.monotonic()) * 1000)))
            ready = dict(poller.poll(timeout))
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            if xsub in ready:
                for _ in range(batch):
                    try:
                        raw = xsub.recv(NOBLOCK)
                    except zmq.Again:
                        break
                    topic = raw[:1]
                    if topic == TOPIC_FRAME:
                        on_frame(raw)
                    elif topic == TOPIC_PROBE:
                        xpub.send(raw)  # back to the prober: its subscription is in place
                        xpub.send(status_frame(self._announced_bus_off))
            if xpub in ready:  # subscriptions from nodes: the hub takes everything anyway
                for _ in range(batch):
                    try:
                        xpub.recv(NOBLOCK)
                    except zmq.Again:
                        break
            if ctl in ready:
                control.serve(ctl)
            if self.faults.bus_off != self._announced_bus_off:
                self._sync_bus_off()
            if delayed:
                now = time.monotonic()
                while delayed and delayed[0][0] <= now:
                    self._emit(delayed.popleft()[1])
                self.stats.delayed = len(delayed)

    def _on_frame(self, raw: bytes) -> None:
        faults, stats = self.faults, self.stats
        stats.received += 1
        if faults.bus_off:
            stats.dropped_bus_off += 1
            return
        if faults.drop and self._rng.random() < faults.drop:
            stats.dropped += 1
            return
        if faults.error_rate and self._rng.random() < faults.error_rate:
            stats.corrupted += 1
            self._emit(error_frame(CAN_ERR_PROT | CAN_ERR_BUSERROR, CRC_ERROR_DATA))
            return
        if self._frame_hook is not None:
            sender, msg = decode(raw, self.channel)
            try:
                changed = self._frame_hook(msg)
            except Exception:
                _log.exception("simbus hub %r: the frame hook failed; the frame is dropped", self.channel)
                changed = None
            if changed is None:
                stats.dropped_hook += 1
                return
            if not changed.is_remote_frame:
                changed.dlc = len(changed.data)  # a hook that changed the data need not fix the length
            raw = encode(sender, changed, changed.timestamp)
        if faults.delay > 0:
            self._delayed.append((time.monotonic() + faults.delay, raw))
            stats.delayed = len(self._delayed)
            return
        self._emit(raw)

    def _emit(self, raw: bytes) -> None:
        assert self._xpub is not None
        self._xpub.send(raw)  # XPUB never blocks: a node whose queue is full misses the frame
        self.stats.forwarded += 1
        if self._logger is not None:
            self._logger(decode(raw, None)[1])

    def _sync_bus_off(self) -> None:
        """Tell the nodes the bus state, with an error frame, when ``faults.bus_off`` changed."""
        assert self._xpub is not None
        bus_off = bool(self.faults.bus_off)
        if bus_off == self._announced_bus_off:
            return
        self._announced_bus_off = bus_off
        self._xpub.send(status_frame(bus_off))
        self.stats.errors_injected += 1
        self._emit(error_frame(CAN_ERR_BUSOFF if bus_off else CAN_ERR_RESTARTED, bytes(8)))
