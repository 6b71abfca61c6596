"""A virtual CAN bus that spans processes: python-can's ``simbus`` interface and its hub.

One hub process serves one bus (a *channel*)::

    python -m hil.simbus --channel rover [--dir DIR] [--log capture.blf]

and any number of processes join it with plain python-can::

    bus = can.Bus(interface="simbus", channel="rover")        # or hil.simbus.SimBus(channel="rover")
    bus.send(can.Message(arbitration_id=0x101, data=b"\\x01", is_extended_id=False))
    msg = bus.recv(timeout=1.0)

Every frame a node sends reaches every other node on the channel, in the order the hub received
them, with the sender's timestamp (``time.time()`` when ``send`` was called). As on a real bus a
node does not see its own frames unless it is opened with ``receive_own_messages=True``.

**Endpoints.** The hub binds three ZeroMQ ``ipc`` sockets in its directory (default
``/tmp/clove-simbus``, or ``$CLOVE_SIMBUS_DIR``): ``<channel>.pub`` where the hub publishes frames
(nodes subscribe there), ``<channel>.sub`` where the hub collects frames (nodes publish there) and
``<channel>.ctl``, its control socket. A directory the hub creates gets mode ``1777`` (like
``/tmp``: anyone may connect, nobody may delete another's socket) and the two bus sockets mode
``0666``, so a sandboxed process can join the bus if the two files are exposed to it. The control
socket is ``0600``: the fault controls belong to the harness, not to the agents under test — expose
only ``.pub`` and ``.sub`` to a sandbox.

**Faults.** The hub forwards frames in its own poll loop, which applies a :class:`Faults` setting
that can be changed while the bus runs, through the control socket (:class:`SimBusControl`, or the
convenience methods of an in-process :class:`SimBusHub`):

* ``drop`` — the share of frames lost (0..1); they reach nobody.
* ``delay`` — seconds every frame is held before it is delivered (order is kept).
* ``error_rate`` — the share of frames corrupted on the wire: the frame is lost and every node
  receives an error frame instead (class ``CAN_ERR_PROT | CAN_ERR_BUSERROR``, CRC sequence).
* ``bus_off`` — the bus is unusable: nodes' ``state`` becomes ``can.BusState.ERROR`` (python-can has
  no separate bus-off state; its drivers report bus-off as ``ERROR``), ``send`` raises
  ``can.CanOperationError`` and the hub drops frames already in flight. Entering and leaving
  bus-off each sends an error frame (``CAN_ERR_BUSOFF``, then ``CAN_ERR_RESTARTED``).
* ``inject_error()`` sends error frames at once. Error frames follow SocketCAN's layout: the error
  class is the ``arbitration_id``, the details are the 8 data bytes.

The state a node reports changes asynchronously (as a controller's does): after ``bus_off`` is set,
poll ``bus.state`` rather than assume the next ``send`` fails; the hub drops frames meanwhile.

**Capture.** ``--log PATH`` (``log_path=``) writes every frame the hub delivers, error frames
included, to a python-can log file (format from the extension: ``.blf``, ``.asc``, ``.log``, ...)
with the senders' timestamps, for replay with ``can.LogReader``. Dropped frames are not logged
(they never reached the bus). ``.blf`` keeps everything; ``.asc`` stores timestamps relative to the
first frame and, like ``.log``, keeps no error-frame details (python-can's formats, not the hub).

**Queues.** A sender's transmit queue holds :attr:`SimBus.TX_QUEUE` frames; when the hub falls
behind, ``send`` waits for room (up to its ``timeout``; ``timeout=0`` fails at once) rather than
dropping. Each receiver has up to :attr:`SimBus.RX_QUEUE` frames queued locally plus
:attr:`SimBusHub.CLIENT_QUEUE` at the hub; a node that stops reading loses frames beyond that (an
overrun, as a controller's receive FIFO would), without slowing the others.

**Wire format.** One ZeroMQ message per frame: the topic byte ``F`` then msgpack of
``(sender_id, arbitration_id, is_extended, is_remote, is_error, is_fd, brs, dlc, data, timestamp,
esi)``. Topics ``P`` (connection probes) and ``S`` (bus state) never reach users as frames.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from types import FrameType, TracebackType
from typing import Any, NamedTuple, cast

import can
import msgpack
import zmq

__all__ = [
    "CAN_ERR_BUSERROR",
    "CAN_ERR_BUSOFF",
    "CAN_ERR_PROT",
    "CAN_ERR_RESTARTED",
    "DEFAULT_DIR",
    "Faults",
    "HubStats",
    "SimBus",
    "SimBusControl",
    "SimBusError",
    "SimBusHub",
    "SimBusPaths",
    "main",
    "simbus_paths",
]

#: Where hubs put their sockets unless told otherwise (``$CLOVE_SIMBUS_DIR`` overrides it).
DEFAULT_DIR = "/tmp/clove-simbus"
DIR_ENV = "CLOVE_SIMBUS_DIR"

# SocketCAN error classes (linux/can/error.h), carried in an error frame's arbitration_id.
CAN_ERR_CRTL = 0x00000004
CAN_ERR_PROT = 0x00000008
CAN_ERR_BUSOFF = 0x00000040
CAN_ERR_BUSERROR = 0x00000080
CAN_ERR_RESTARTED = 0x00000100
_CAN_ERR_PROT_LOC_CRC_SEQ = 0x08
#: The details of a corrupted frame: a protocol violation of unspecified type in the CRC sequence.
_CRC_ERROR_DATA = bytes([0, 0, 0, _CAN_ERR_PROT_LOC_CRC_SEQ, 0, 0, 0, 0])

_TOPIC_FRAME = b"F"
_TOPIC_PROBE = b"P"
_TOPIC_STATUS = b"S"
_SENDER_ID_LEN = 8
#: The sender id of frames the hub makes itself (error frames).
_HUB_SENDER = bytes(_SENDER_ID_LEN)

# Plain ints: pyzmq's enum flags cost a microsecond per use on the hot paths.
_NOBLOCK = int(zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)
_EVENTS = int(zmq.EVENTS)

_CHANNEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes, NUL included
_FD_LENGTHS = frozenset((0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64))


_log = logging.getLogger(__name__)


class SimBusError(Exception):
    """The hub cannot start, cannot be reached, or refused a control request."""


# ---- naming -------------------------------------------------------------------------------------


class SimBusPaths(NamedTuple):
    """The socket files of one channel's hub."""

    pub: str  #: the hub publishes here; nodes' SUB sockets connect
    sub: str  #: the hub collects here; nodes' PUB sockets connect
    ctl: str  #: the hub's control socket (REP)

    @staticmethod
    def endpoint(path: str) -> str:
        return "ipc://" + path


def _validate_channel(channel: object) -> str:
    if not isinstance(channel, str) or not _CHANNEL_RE.fullmatch(channel):
        raise ValueError(
            "a simbus channel is 1-64 characters of letters, digits, '_', '.' and '-', starting "
            f"with a letter or digit (e.g. 'rover'), got {channel!r}"
        )
    return channel


def _resolve_dir(simbus_dir: str | os.PathLike[str] | None) -> str:
    if simbus_dir is None:
        simbus_dir = os.environ.get(DIR_ENV) or DEFAULT_DIR
    return os.path.abspath(os.fspath(simbus_dir))


def simbus_paths(channel: str, simbus_dir: str | os.PathLike[str] | None = None) -> SimBusPaths:
    """The socket paths of ``channel``'s hub in ``simbus_dir`` (default: :data:`DEFAULT_DIR`).

    :raises ValueError: the channel name is invalid, or the paths are too long for a Unix socket.
    """
    channel = _validate_channel(channel)
    base = _resolve_dir(simbus_dir)
    paths = SimBusPaths(*(os.path.join(base, f"{channel}.{kind}") for kind in ("pub", "sub", "ctl")))
    longest = max(paths, key=lambda p: len(os.fsencode(p)))
    if len(os.fsencode(longest)) > _SUN_PATH_MAX:
        raise ValueError(
            f"socket path {longest!r} is longer than a Unix socket allows ({_SUN_PATH_MAX} bytes); "
            "use a shorter simbus directory or channel name"
        )
    return paths


def _listening(path: str) -> bool:
    """Whether something accepts connections on the Unix socket ``path`` (False: absent or stale).

    A failure that does not tell (e.g. permission denied) counts as listening; ZeroMQ then decides.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    finally:
        probe.close()
    return True


# ---- wire format --------------------------------------------------------------------------------


def _encode(sender: bytes, msg: can.Message, timestamp: float) -> bytes:
    packed: bytes = msgpack.packb(
        (
            sender,
            msg.arbitration_id,
            msg.is_extended_id,
            msg.is_remote_frame,
            msg.is_error_frame,
            msg.is_fd,
            msg.bitrate_switch,
            msg.dlc,
            msg.data if msg.data is not None else b"",
            timestamp,
            msg.error_state_indicator,
        )
    )
    return _TOPIC_FRAME + packed


def _decode(raw: bytes, channel: str | None) -> tuple[bytes, can.Message]:
    """``(sender_id, message)`` from a frame on the wire (topic byte included)."""
    fields_ = msgpack.unpackb(memoryview(raw)[1:], use_list=False)
    sender, arb, ext, rtr, err, fd, brs, dlc, data, ts = fields_[:10]
    esi = bool(fields_[10]) if len(fields_) > 10 else False
    msg = can.Message(
        timestamp=ts,
        arbitration_id=arb,
        is_extended_id=ext,
        is_remote_frame=rtr,
        is_error_frame=err,
        is_fd=fd,
        bitrate_switch=brs,
        error_state_indicator=esi,
        dlc=dlc,
        data=data,
        channel=channel,
        check=False,
    )
    return bytes(sender), msg


def _error_frame(error_class: int, data: bytes, timestamp: float | None = None) -> bytes:
    msg = can.Message(
        arbitration_id=error_class,
        is_extended_id=True,
        is_error_frame=True,
        dlc=len(data),
        data=data,
        check=False,
    )
    return _encode(_HUB_SENDER, msg, time.time() if timestamp is None else timestamp)


def _status_frame(bus_off: bool) -> bytes:
    packed: bytes = msgpack.packb({"bus_off": bus_off})
    return _TOPIC_STATUS + packed


# ---- faults -------------------------------------------------------------------------------------


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


# ---- the hub ------------------------------------------------------------------------------------

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
        self.channel = _validate_channel(channel)
        self.dir = _resolve_dir(simbus_dir)
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
                     data: bytes = _CRC_ERROR_DATA) -> None:
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
                if _listening(path):
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
                        raw = xsub.recv(_NOBLOCK)
                    except zmq.Again:
                        break
                    topic = raw[:1]
                    if topic == _TOPIC_FRAME:
                        on_frame(raw)
                    elif topic == _TOPIC_PROBE:
                        xpub.send(raw)  # back to the prober: its subscription is in place
                        xpub.send(_status_frame(self._announced_bus_off))
            if xpub in ready:  # subscriptions from nodes: the hub takes everything anyway
                for _ in range(batch):
                    try:
                        xpub.recv(_NOBLOCK)
                    except zmq.Again:
                        break
            if ctl in ready:
                self._serve_control(ctl)
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
            self._emit(_error_frame(CAN_ERR_PROT | CAN_ERR_BUSERROR, _CRC_ERROR_DATA))
            return
        if self._frame_hook is not None:
            sender, msg = _decode(raw, self.channel)
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
            raw = _encode(sender, changed, changed.timestamp)
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
            self._logger(_decode(raw, None)[1])

    def _sync_bus_off(self) -> None:
        """Tell the nodes the bus state, with an error frame, when ``faults.bus_off`` changed."""
        assert self._xpub is not None
        bus_off = bool(self.faults.bus_off)
        if bus_off == self._announced_bus_off:
            return
        self._announced_bus_off = bus_off
        self._xpub.send(_status_frame(bus_off))
        self.stats.errors_injected += 1
        self._emit(_error_frame(CAN_ERR_BUSOFF if bus_off else CAN_ERR_RESTARTED, bytes(8)))

    # ---- control socket -------------------------------------------------------------------------

    def _serve_control(self, ctl: zmq.Socket[bytes]) -> None:
        while True:
            try:
                raw = ctl.recv(_NOBLOCK)
            except zmq.Again:
                return
            try:
                request = msgpack.unpackb(raw)
                if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                    raise ValueError("a control request is a map with a string 'op'")
                reply = self._control_op(request)
            except Exception as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            ctl.send(msgpack.packb(reply))

    def _control_op(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "set":
            changes = request.get("faults")
            if not isinstance(changes, dict):
                raise ValueError("'set' takes a map 'faults'")
            self._apply_faults(self.faults.updated(changes))
        elif op == "clear":
            self._apply_faults(Faults())
        elif op == "inject_error":
            count = int(request.get("count", 1))
            error_class = int(request.get("error_class", CAN_ERR_PROT | CAN_ERR_BUSERROR))
            data = bytes(request.get("data", _CRC_ERROR_DATA))
            if not 1 <= count <= 10_000:
                raise ValueError(f"count is 1..10000, got {count}")
            if not 0 <= error_class <= 0x1FFFFFFF or len(data) > 8:
                raise ValueError("an error frame has a 29-bit error class and at most 8 data bytes")
            for _ in range(count):
                self._emit(_error_frame(error_class, data))
            self.stats.errors_injected += count
        elif op not in ("get", "ping"):
            raise ValueError(f"unknown op {op!r}; known: get, set, clear, inject_error, ping")
        return {"ok": True, "faults": asdict(self.faults), "stats": asdict(self.stats)}

    def _apply_faults(self, new: Faults) -> None:
        for f in fields(new):  # in place: whoever holds hub.faults sees the change
            setattr(self.faults, f.name, getattr(new, f.name))
        self._sync_bus_off()


# ---- the control client -------------------------------------------------------------------------


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
                     data: bytes = _CRC_ERROR_DATA) -> None:
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


# ---- the python-can interface -------------------------------------------------------------------


class SimBus(can.BusABC):
    """A node on a simulated CAN bus served by a :class:`SimBusHub` (python-can interface ``simbus``).

    :param channel: the bus name, as the hub was started with.
    :param can_filters: python-can filters (applied in this process, as python-can does).
    :param simbus_dir: the hub's directory (default :data:`DEFAULT_DIR` or ``$CLOVE_SIMBUS_DIR``).
    :param receive_own_messages: also receive the frames this bus sends (``is_rx`` False).
    :param fd: a CAN FD controller (may send FD frames); every node receives FD frames regardless.
    :param connect_timeout: seconds to wait for the hub to answer (the bus is usable on return).
    :param bitrate: accepted for compatibility and ignored (so is ``data_bitrate``).
    :raises can.CanInitializationError: no hub serves the channel, or it did not answer in time.
    :raises ValueError: an invalid channel name.

    ``fileno()`` returns -1: ZeroMQ's ``ZMQ_FD`` is edge-triggered and would mislead a
    ``select``-based reader, so python-can's ``Notifier`` uses a reader thread for this bus.

    Threads: one thread may receive while others send; sends are serialised by a lock.
    """

    #: Frames a sender queues before ``send`` waits for the hub.
    TX_QUEUE = 4096
    #: Frames queued locally for a receiver that is not reading (the hub queues more).
    RX_QUEUE = 50_000
    #: How long ``shutdown`` lets queued frames drain to the hub (milliseconds).
    SHUTDOWN_LINGER_MS = 1000
    #: Seconds a sender goes on using the bus state it read last (``state`` always reads it).
    STATUS_INTERVAL = 0.001
    #: Seconds between connection probes while connecting.
    PROBE_INTERVAL = 0.01

    def __init__(
        self,
        channel: Any = None,
        can_filters: can.typechecking.CanFilters | None = None,
        *,
        simbus_dir: str | os.PathLike[str] | None = None,
        receive_own_messages: bool = False,
        fd: bool = False,
        connect_timeout: float = 2.0,
        bitrate: int | None = None,
        data_bitrate: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.channel = _validate_channel(channel)
        self.paths = simbus_paths(self.channel, simbus_dir)
        self.channel_info = f"simbus channel {self.channel!r} ({os.path.dirname(self.paths.pub)})"
        self.receive_own_messages = bool(receive_own_messages)
        self._fd = bool(fd)
        if self._fd:
            self._can_protocol = can.CanProtocol.CAN_FD
        self._sender = os.urandom(_SENDER_ID_LEN)
        self._probe = _TOPIC_PROBE + self._sender
        self._bus_off = False
        self._status_due = 0.0
        self._tx_lock = threading.Lock()
        self._pending: deque[bytes] = deque()  # frames that arrived while connecting

        for path in (self.paths.pub, self.paths.sub):
            if not os.path.exists(path):
                raise can.CanInitializationError(
                    f"no simbus hub for channel {self.channel!r}: {path} does not exist "
                    f"(start one: python -m hil.simbus --channel {self.channel} "
                    f"--dir {os.path.dirname(path)})"
                )
            if not _listening(path):
                raise can.CanInitializationError(
                    f"no simbus hub for channel {self.channel!r}: nothing listens on {path} "
                    "(a stale socket: its hub is not running)"
                )

        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            self._pub = self._ctx.socket(zmq.PUB)
            self._pub.setsockopt(zmq.SNDHWM, self.TX_QUEUE)
            self._pub.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue makes send wait, not drop
            self._pub.setsockopt(zmq.LINGER, self.SHUTDOWN_LINGER_MS)
            self._sub = self._ctx.socket(zmq.SUB)
            self._sub.setsockopt(zmq.RCVHWM, self.RX_QUEUE)
            self._sub.setsockopt(zmq.LINGER, 0)
            self._sub.setsockopt(zmq.SUBSCRIBE, _TOPIC_FRAME)
            self._sub.setsockopt(zmq.SUBSCRIBE, self._probe)  # after F: once it works, F does
            self._status = self._ctx.socket(zmq.SUB)
            self._status.setsockopt(zmq.CONFLATE, 1)  # only the latest state matters
            self._status.setsockopt(zmq.LINGER, 0)
            self._status.setsockopt(zmq.SUBSCRIBE, _TOPIC_STATUS)
            self._pub.connect(SimBusPaths.endpoint(self.paths.sub))
            self._sub.connect(SimBusPaths.endpoint(self.paths.pub))
            self._status.connect(SimBusPaths.endpoint(self.paths.pub))
            self._handshake(float(connect_timeout))
            super().__init__(self.channel, can_filters=can_filters, **kwargs)
        except BaseException:
            self._ctx.destroy(linger=0)
            raise

    def _handshake(self, timeout: float) -> None:
        """Probe through the hub until the probe and a state report come back.

        Then the hub takes this node's frames and sends it everyone's: ZeroMQ subscriptions
        propagate asynchronously, so without this the first frames either way would be lost.
        """
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        poller.register(self._sub, zmq.POLLIN)
        poller.register(self._status, zmq.POLLIN)
        probed = stated = False
        while not (probed and stated):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise can.CanInitializationError(
                    f"simbus hub for channel {self.channel!r} did not answer within {timeout} s "
                    f"({SimBusPaths.endpoint(self.paths.sub)} -> {SimBusPaths.endpoint(self.paths.pub)})"
                )
            with contextlib.suppress(zmq.Again):
                self._pub.send(self._probe, _NOBLOCK)
            ready = dict(poller.poll(max(1, int(min(remaining, self.PROBE_INTERVAL) * 1000))))
            if self._sub in ready:
                while True:
                    try:
                        raw = self._sub.recv(_NOBLOCK)
                    except zmq.Again:
                        break
                    if raw == self._probe:
                        probed = True
                    elif raw[:1] == _TOPIC_FRAME:
                        self._pending.append(raw)
            if self._status in ready:
                self._poll_status()
                stated = True

    # ---- state ----------------------------------------------------------------------------------

    def _poll_status(self) -> None:
        status = self._status
        while cast(int, status.getsockopt(_EVENTS)) & _POLLIN:
            raw = status.recv(_NOBLOCK)
            report = msgpack.unpackb(memoryview(raw)[1:])
            if isinstance(report, dict):
                self._bus_off = bool(report.get("bus_off"))

    @property
    def state(self) -> can.BusState:
        """``ACTIVE``, or ``ERROR`` while the hub's bus-off fault is active."""
        if self._is_shutdown:
            return can.BusState.ERROR if self._bus_off else can.BusState.ACTIVE
        with self._tx_lock:
            self._poll_status()
            return can.BusState.ERROR if self._bus_off else can.BusState.ACTIVE

    @state.setter
    def state(self, new_state: can.BusState) -> None:
        raise NotImplementedError(
            "a simbus node's state follows the hub (SimBusControl.set_faults(bus_off=...))"
        )

    @property
    def bus_off(self) -> bool:
        """Whether the bus is off (the hub's ``bus_off`` fault)."""
        return self.state == can.BusState.ERROR

    def fileno(self) -> int:
        """-1: no readable file descriptor (see the class docstring)."""
        return -1

    # ---- sending --------------------------------------------------------------------------------

    def _check_frame(self, msg: can.Message) -> None:
        if msg.is_error_frame:
            raise ValueError(
                "nodes cannot send error frames; the hub injects them (SimBusControl.inject_error)"
            )
        limit = 0x1FFFFFFF if msg.is_extended_id else 0x7FF
        if not 0 <= msg.arbitration_id <= limit:
            kind = "extended (29-bit)" if msg.is_extended_id else "standard (11-bit)"
            raise ValueError(f"arbitration id {msg.arbitration_id:#x} does not fit a {kind} id")
        length = len(msg.data) if msg.data is not None else 0
        if msg.is_fd:
            if not self._fd:
                raise ValueError("a CAN FD frame on a bus opened without fd=True")
            if msg.is_remote_frame:
                raise ValueError("CAN FD has no remote frames")
            if length not in _FD_LENGTHS:
                raise ValueError(
                    f"a CAN FD frame carries 0-8, 12, 16, 20, 24, 32, 48 or 64 bytes, not {length}"
                )
        elif length > 8 or (msg.is_remote_frame and not 0 <= msg.dlc <= 8):
            raise ValueError(f"a classic CAN frame carries at most 8 bytes, got {max(length, msg.dlc)}")

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        """Put ``msg`` on the bus, stamped with ``time.time()`` (``msg`` itself is not changed).

        :param timeout: seconds to wait for room in the transmit queue (``None``: as long as it
            takes; ``0``: not at all).
        :raises can.CanOperationError: the bus is off, the queue stayed full, or the bus is shut down.
        :raises ValueError: the frame cannot exist on this bus (see :meth:`_check_frame`).
        """
        if self._is_shutdown:
            raise can.CanOperationError(f"simbus {self.channel!r}: the bus is shut down")
        self._check_frame(msg)
        with self._tx_lock:
            now = time.monotonic()
            if now >= self._status_due:  # reading the state costs ~2 us: at most once a millisecond
                self._status_due = now + self.STATUS_INTERVAL
                self._poll_status()
            if self._bus_off:
                raise can.CanOperationError(f"simbus {self.channel!r}: bus off (the hub's bus_off fault)")
            frame = _encode(self._sender, msg, time.time())
            try:
                self._pub.send(frame, _NOBLOCK)
                return
            except zmq.Again:
                if timeout is not None and timeout <= 0:
                    raise can.CanOperationError(f"simbus {self.channel!r}: transmit queue full") from None
            self._pub.setsockopt(zmq.SNDTIMEO, -1 if timeout is None else max(1, int(timeout * 1000)))
            try:
                self._pub.send(frame)
            except zmq.Again:
                raise can.CanOperationError(
                    f"simbus {self.channel!r}: transmit queue still full after {timeout} s"
                ) from None
            finally:
                self._pub.setsockopt(zmq.SNDTIMEO, -1)

    # ---- receiving ------------------------------------------------------------------------------

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        sub = self._sub
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._pending:
                raw = self._pending.popleft()
            else:
                try:
                    raw = sub.recv(_NOBLOCK)
                except zmq.Again:
                    if deadline is None:
                        sub.poll(None)
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None, False
                    sub.poll(max(1, math.ceil(remaining * 1000)))
                    continue
            if raw[:1] != _TOPIC_FRAME:
                continue  # a late answer to a connection probe
            sender, msg = _decode(raw, self.channel)
            if sender == self._sender:
                if not self.receive_own_messages:
                    continue
                msg.is_rx = False
            return msg, False

    # ---- closing --------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Close the sockets; frames still queued get up to :attr:`SHUTDOWN_LINGER_MS` to drain."""
        if self._is_shutdown:
            return
        super().shutdown()
        with self._tx_lock:
            self._sub.close(linger=0)
            self._status.close(linger=0)
            self._pub.close()
            self._ctx.term()


# ---- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hil.simbus --channel NAME``: run a hub until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m hil.simbus",
        description="Run the hub of a simulated CAN bus (python-can interface 'simbus').",
    )
    parser.add_argument("--channel", required=True, help="the bus name, e.g. rover")
    parser.add_argument("--dir", default=None, help=f"socket directory (default ${DIR_ENV} or {DEFAULT_DIR})")
    parser.add_argument(
        "--log", default=None, metavar="PATH", help="capture every frame to a python-can log file"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the random faults")
    parser.add_argument("--drop", type=float, default=0.0, help="initial share of frames dropped")
    parser.add_argument("--delay", type=float, default=0.0, help="initial delay of every frame, seconds")
    parser.add_argument("--error-rate", type=float, default=0.0, help="initial share of frames corrupted")
    args = parser.parse_args(argv)
    try:
        faults = Faults().updated({"drop": args.drop, "delay": args.delay, "error_rate": args.error_rate})
        hub = SimBusHub(args.channel, args.dir, log_path=args.log, faults=faults, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        hub.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def ready() -> None:
        print(f"simbus hub ready: channel={hub.channel} pub={hub.paths.pub} sub={hub.paths.sub} "
              f"ctl={hub.paths.ctl}", flush=True)

    try:
        hub.run(ready=ready)
    except (SimBusError, ValueError) as exc:
        print(f"simbus: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
