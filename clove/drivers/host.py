"""A driver host: the process that owns one device. ``python -m clove.drivers.host FD``.

The kernel starts it with one inherited pipe ``FD``; the host blocks reading it until EOF, so
nothing of the driver runs before the kernel has moved the process into its cgroup. The pipe
carries the start spec (msgpack): device name, driver kind and plugin, the driver's config
table, the kernel's endpoint, the incarnation and the heartbeat interval.

Then, on a DEALER connected to the kernel (messages are msgpack maps with a ``t`` key; the host
may send several in one multipart ZeroMQ message, one map per frame, as it does with the replies
one commit releases)::

    host → kernel   hello {pid, incarnation}       once connected
                    opened {status} | failed {error}   then exits 3
                    reply {id, result} | reply {id, error}
                    data {items} | data {bytes}    the incoming stream, in batches
                    hb {counters, status}          every interval, from the main loop
                    broken {error}                 the stream failed; then exits 4
                    filtered {id} | filtered {id, error}   the stream filter is in place
    kernel → host   call {id, op, args} [+ caller]  run one operation; the caller (for operations
                                                   that ask for it) comes as a second frame
                    filter {id, spec}              narrow the stream (Driver.set_stream_filter)
                    stop {}                        close the device and exit 0

Operations run in the main thread, one at a time, in the order they arrive. An operation that
returns a :class:`~clove.drivers.Later` (its result waits on a commit, not on the driver) does
not hold the host: it takes the next calls at once, and replies when the result is settled
(a settling thread wakes it through a pipe). Replies leave in the order the calls arrived. At
most ``max_in_flight`` replies wait (spec key, default :data:`MAX_IN_FLIGHT`); at the bound the
host stops reading calls until the oldest is answered, and ZeroMQ queues the rest. The stream is
pumped by polling the driver's ``fileno()`` or, without one, by a reader thread that hands
batches over an inproc socket. A call that hangs stops the heartbeats, and the kernel restarts
the host.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from typing import Any

import msgpack
import zmq

from clove.drivers.base import Caller, Driver
from clove.drivers.later import Later
from clove.drivers.registry import load_drivers
from clove.drivers.schema import FieldError
from clove.errors import CloveError, ConfigError, DeviceBroken, DeviceError, InternalError, to_wire
from clove.helperproc import harden, read_spec

log = logging.getLogger("clove.drivers.host")

EXIT_STOPPED, EXIT_OPEN_FAILED, EXIT_BROKEN = 0, 3, 4
#: Replies that may wait on :class:`Later` results (and the replies queued behind them) at once.
MAX_IN_FLIGHT = 256
_CALLERS_KEPT = 1024  # decoded caller frames kept (agents x devices is small; a flood just clears it)
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)  # plain ints: no enum object per call
_packb = msgpack.Packer(use_bin_type=True).pack  # one packer, reused: no object per message


def pack(message: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(message, use_bin_type=True))


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


def _reply_bytes(call_id: Any, result: Any) -> bytes:
    encoded: bytes = _packb({"t": "reply", "id": call_id, "result": result})
    return encoded


def _error_bytes(call_id: Any, err: CloveError) -> bytes:
    encoded: bytes = _packb({"t": "reply", "id": call_id, "error": to_wire(err)})
    return encoded


class _Waiting:
    """One reply in the order of its call: ready (``encoded``) or waiting on ``later``."""

    __slots__ = ("call_id", "encoded", "later", "op")

    def __init__(self, call_id: Any, op: str, later: Later | None, encoded: bytes | None) -> None:
        self.call_id, self.op, self.later, self.encoded = call_id, op, later, encoded


class Host:
    def __init__(self, spec: dict[str, Any], driver: Driver, sock: zmq.Socket[bytes], ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.spec = spec
        self.driver = driver
        self.sock = sock
        self.ctx = ctx
        self.interval = float(spec.get("heartbeat", 0.5))
        self.window = max(1, int(spec.get("max_in_flight") or MAX_IN_FLIGHT))
        self.stopping = False
        self.exit_code = EXIT_STOPPED
        self._pump: zmq.Socket[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._poller = zmq.Poller()
        #: Replies not sent yet, in call order; empty unless a Later is pending (the fast path).
        self._waiting: deque[_Waiting] = deque()
        self._paused = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._callers: dict[bytes, Caller] = {}

    def send(self, message: dict[str, Any]) -> None:
        self.sock.send(pack(message))

    def run(self) -> int:
        poller = self._poller
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        fd = -1
        if self.driver.stream is not None:
            fd = self.driver.fileno()
            if fd >= 0:
                poller.register(fd, zmq.POLLIN)
            else:
                self._pump = self._start_reader()
                poller.register(self._pump, zmq.POLLIN)
        wake = self._wake_r
        next_beat = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            if now >= next_beat:
                self.send({"t": "hb", "counters": dict(self.driver.counters), "status": self._status()})
                next_beat = now + self.interval
            for source, _ in poller.poll(max(0, int((next_beat - now) * 1000)) + 1):
                if source is self.sock:
                    self._serve()
                elif source == wake:
                    self._flush()
                elif source is self._pump:
                    self._forward()
                elif source == fd:
                    self._read_ready()
                if self.stopping:
                    break
        self.driver.close()  # settles what waits on the device (a commit releases or fails it)
        self._flush()
        self._abandon()
        if self._reader is not None:
            self._reader.join(2.0)
        if self._pump is not None:
            self._pump.close(linger=0)  # an open socket would keep ctx.term() waiting
        os.close(self._wake_r)
        os.close(self._wake_w)
        return self.exit_code

    def _status(self) -> dict[str, Any]:
        try:
            return dict(self.driver.status())
        except Exception as err:  # noqa: BLE001 - a status failure must not stop the heartbeat
            return {"status_error": f"{type(err).__name__}: {err}"}

    # ---- operations -----------------------------------------------------------------------------

    def _serve(self) -> None:
        sock = self.sock
        while not self._paused and int(sock.get(_EVENTS)) & _POLLIN:  # cheaper than raising zmq.Again per wake-up
            frames = sock.recv_multipart(_NOBLOCK)
            message = unpack(frames[0])
            kind = message.get("t")
            if kind == "call":
                self._call(message, self._caller(frames[1]) if len(frames) > 1 else Caller.from_wire(message.get("caller")))
            elif kind == "filter":
                self._filter(message)
            elif kind == "stop":
                self.stopping = True
                return

    def _caller(self, raw: bytes) -> Caller | None:
        """The caller frame of a call, decoded once per distinct caller (the kernel encodes it
        once per caller and device, so equal bytes are the same caller)."""
        caller = self._callers.get(raw)
        if caller is None:
            if len(self._callers) >= _CALLERS_KEPT:
                self._callers.clear()
            caller = Caller.from_wire(unpack(raw))
            if caller is not None:
                self._callers[raw] = caller
        return caller

    def _call(self, message: dict[str, Any], caller: Caller | None = None) -> None:
        call_id = message.get("id")
        op = message.get("op")
        try:
            result = self.driver.begin_call(str(op), message.get("args") or {}, caller)
        except CloveError as err:
            encoded = _error_bytes(call_id, err)
        except Exception as err:  # noqa: BLE001 - a driver bug becomes a structured reply
            log.exception("operation %s failed", op)
            encoded = _error_bytes(call_id, self._bug(op, err))
        else:
            if isinstance(result, Later):
                waiting = _Waiting(call_id, str(op), result, None)
                if not result.settled or self._waiting:
                    self._hold(waiting)
                    result.on_settled(self._settled)
                    return
                encoded = self._settled_reply(waiting, result)  # settled already, nothing ahead of it
                self.sock.send(encoded)
                return
            try:
                encoded = _reply_bytes(call_id, result)
            except Exception as err:  # noqa: BLE001 - a result msgpack cannot carry
                encoded = _error_bytes(call_id, self._bug(op, err))
        if self._waiting:  # behind a pending reply: keep the order of the calls
            self._hold(_Waiting(call_id, str(op), None, encoded))
        else:
            self.sock.send(encoded)

    def _bug(self, op: Any, err: BaseException) -> DeviceBroken:
        return DeviceBroken(f"{type(self.driver).__name__}.{op} failed: {type(err).__name__}: {err}")

    def _hold(self, waiting: _Waiting) -> None:
        self._waiting.append(waiting)
        if len(self._waiting) >= self.window and not self._paused:
            self._paused = True  # at the bound: calls wait in ZeroMQ's queue until one is answered
            self._poller.register(self.sock, 0)

    def _settled(self, later: Later) -> None:
        """Any thread: a pending result is settled; wake the main loop."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # the pipe is full (it is readable, which is all the loop needs) or closed

    def _flush(self) -> None:
        """Send every reply at the head of the queue that is ready."""
        try:
            while os.read(self._wake_r, 4096):
                pass
        except OSError:
            pass
        waiting, ready = self._waiting, []
        while waiting:
            head = waiting[0]
            if head.encoded is None:
                later = head.later
                if later is None or not later.settled:
                    break
                head.encoded = self._settled_reply(head, later)
            ready.append(head.encoded)
            waiting.popleft()
        if ready:  # one ZeroMQ message for every reply one commit released: one wake-up in the kernel
            self.sock.send_multipart(ready)
        if self._paused and len(waiting) < self.window:
            self._paused = False
            self._poller.register(self.sock, zmq.POLLIN)

    def _settled_reply(self, head: _Waiting, later: Later) -> bytes:
        value, error = later.outcome()
        if error is None:
            try:
                return _reply_bytes(head.call_id, value)
            except Exception as err:  # noqa: BLE001 - a result msgpack cannot carry
                error = err
        self.driver.counters["errors"] += 1
        if isinstance(error, CloveError):
            return _error_bytes(head.call_id, error)
        log.error("operation %s failed after it returned: %s: %s", head.op, type(error).__name__, error)
        return _error_bytes(head.call_id, self._bug(head.op, error))

    def _abandon(self) -> None:
        """The host is stopping with results still unsettled: their outcome is unknown, so they
        are answered as failed (never as done)."""
        ready = []
        while self._waiting:
            head = self._waiting.popleft()
            if head.encoded is None:
                why = DeviceBroken(f"{type(self.driver).__name__}.{head.op}: the host stopped before its result was settled; its outcome is unknown")
                head.encoded = _error_bytes(head.call_id, why)
            ready.append(head.encoded)
        if ready:
            self.sock.send_multipart(ready)

    def _filter(self, message: dict[str, Any]) -> None:
        """Apply a stream filter, then acknowledge it. A filter the driver refuses leaves the
        stream unfiltered (never narrower than asked): the acknowledgement carries the error."""
        reply: dict[str, Any] = {"t": "filtered", "id": message.get("id")}
        try:
            self.driver.set_stream_filter(message.get("spec"))
        except CloveError as err:
            log.warning("stream filter refused, delivering everything: %s", err.message)
            reply["error"] = to_wire(err)
            try:
                self.driver.set_stream_filter(None)
            except CloveError as again:
                log.warning("clearing the stream filter failed too: %s", again.message)
        self.sock.send(pack(reply))

    # ---- the stream -----------------------------------------------------------------------------

    def _data(self, data: Any) -> bytes:
        return pack({"t": "data", "bytes": data} if self.driver.stream == "bytes" else {"t": "data", "items": data})

    def _read_ready(self) -> None:
        try:
            data = self.driver.read(0)
        except DeviceError as err:
            self._broken(err)
            return
        if len(data):
            self.sock.send(self._data(data))

    def _start_reader(self) -> zmq.Socket[bytes]:
        pump: zmq.Socket[bytes] = self.ctx.socket(zmq.PAIR)
        pump.bind("inproc://stream")
        feeder: zmq.Socket[bytes] = self.ctx.socket(zmq.PAIR)
        feeder.connect("inproc://stream")

        def read_loop() -> None:
            try:
                while not self.driver.closed:
                    try:
                        data = self.driver.read(0.2)
                    except DeviceError as err:
                        if not self.driver.closed:
                            feeder.send_multipart([b"broken", pack({"t": "broken", "error": to_wire(err)})])
                        return
                    if len(data):
                        feeder.send_multipart([b"data", self._data(data)])
            finally:
                feeder.close(linger=0)

        self._reader = threading.Thread(target=read_loop, name="clove-stream", daemon=True)
        self._reader.start()
        return pump

    def _forward(self) -> None:
        assert self._pump is not None  # noqa: S101
        while True:
            try:
                kind, raw = self._pump.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return
            self.sock.send(raw)
            if kind == b"broken":
                self.stopping, self.exit_code = True, EXIT_BROKEN
                return

    def _broken(self, err: DeviceError) -> None:
        self.send({"t": "broken", "error": to_wire(err)})
        self.stopping, self.exit_code = True, EXIT_BROKEN


def _build_driver(spec: dict[str, Any]) -> Driver:
    registry = load_drivers([str(spec["plugin"])])
    cls = registry.get(str(spec["driver"]))
    try:
        config = cls.parse_config(spec.get("config") or {})
    except FieldError as err:
        raise ConfigError(f"[devices.{spec['device']}].{err.key}: {err.message}") from None
    return cls(config)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = read_spec(int(args[0]), "clove driver host")
    harden(EXIT_STOPPED)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s host[{spec.get('device')}] %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(EXIT_STOPPED))  # before the driver exists
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.ROUTING_ID, f"{spec['device']}#{spec['incarnation']}".encode())
    sock.connect(str(spec["endpoint"]))
    sock.send(pack({"t": "hello", "pid": os.getpid(), "incarnation": spec["incarnation"]}))
    try:
        driver = _build_driver(spec)
        driver.state_dir = spec.get("state_dir")
        driver.open()
    except CloveError as err:
        sock.send(pack({"t": "failed", "error": to_wire(err)}))
        sock.close()
        ctx.term()
        return EXIT_OPEN_FAILED
    except Exception as err:  # noqa: BLE001 - a broken plugin is reported, not a traceback
        log.exception("driver failed to start")
        failure = InternalError(f"driver {spec.get('driver')!r} failed to start: {type(err).__name__}: {err}")
        sock.send(pack({"t": "failed", "error": to_wire(failure)}))
        sock.close()
        ctx.term()
        return EXIT_OPEN_FAILED
    host = Host(spec, driver, sock, ctx)
    signal.signal(signal.SIGTERM, lambda *_: setattr(host, "stopping", True))
    sock.send(pack({"t": "opened", "status": host._status()}))
    code = host.run()
    sock.close(linger=1000)  # the last replies and data still go out
    ctx.destroy(linger=0)
    return code


if __name__ == "__main__":
    sys.exit(main())
