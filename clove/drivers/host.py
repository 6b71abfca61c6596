"""A driver host: the process that owns one device. ``python -m clove.drivers.host FD``.

The kernel starts it with one inherited pipe ``FD``; the host blocks reading it until EOF, so
nothing of the driver runs before the kernel has moved the process into its cgroup. The pipe
carries the start spec (msgpack): device name, driver kind and plugin, the driver's config
table, the kernel's endpoint, the incarnation and the heartbeat interval.

Then, on a DEALER connected to the kernel (messages are msgpack maps with a ``t`` key)::

    host → kernel   hello {pid, incarnation}       once connected
                    opened {status} | failed {error}   then exits 3
                    reply {id, result} | reply {id, error}
                    data {items} | data {bytes}    the incoming stream, in batches
                    hb {counters, status}          every interval, from the main loop
                    broken {error}                 the stream failed; then exits 4
                    filtered {id} | filtered {id, error}   the stream filter is in place
    kernel → host   call {id, op, args}            run one operation
                    filter {id, spec}              narrow the stream (Driver.set_stream_filter)
                    stop {}                        close the device and exit 0

Operations run in the main thread, one at a time; the stream is pumped by polling the driver's
``fileno()`` or, without one, by a reader thread that hands batches over an inproc socket. A
call that hangs stops the heartbeats, and the kernel restarts the host.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import msgpack
import zmq

from clove.drivers.base import Caller, Driver
from clove.drivers.registry import load_drivers
from clove.drivers.schema import FieldError
from clove.errors import CloveError, ConfigError, DeviceBroken, DeviceError, InternalError, to_wire
from clove.helperproc import harden, read_spec

log = logging.getLogger("clove.drivers.host")

EXIT_STOPPED, EXIT_OPEN_FAILED, EXIT_BROKEN = 0, 3, 4
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)  # plain ints: no enum object per check


def pack(message: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(message, use_bin_type=True))


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


class Host:
    def __init__(self, spec: dict[str, Any], driver: Driver, sock: zmq.Socket[bytes], ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        self.spec = spec
        self.driver = driver
        self.sock = sock
        self.ctx = ctx
        self.interval = float(spec.get("heartbeat", 0.5))
        self.stopping = False
        self.exit_code = EXIT_STOPPED
        self._pump: zmq.Socket[bytes] | None = None
        self._reader: threading.Thread | None = None

    def send(self, message: dict[str, Any]) -> None:
        self.sock.send(pack(message))

    def run(self) -> int:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        fd = -1
        if self.driver.stream is not None:
            fd = self.driver.fileno()
            if fd >= 0:
                poller.register(fd, zmq.POLLIN)
            else:
                self._pump = self._start_reader()
                poller.register(self._pump, zmq.POLLIN)
        next_beat = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            if now >= next_beat:
                self.send({"t": "hb", "counters": dict(self.driver.counters), "status": self._status()})
                next_beat = now + self.interval
            for source, _ in poller.poll(max(0, int((next_beat - now) * 1000)) + 1):
                if source is self.sock:
                    self._serve()
                elif source is self._pump:
                    self._forward()
                elif source == fd:
                    self._read_ready()
                if self.stopping:
                    break
        self.driver.close()
        if self._reader is not None:
            self._reader.join(2.0)
        if self._pump is not None:
            self._pump.close(linger=0)  # an open socket would keep ctx.term() waiting
        return self.exit_code

    def _status(self) -> dict[str, Any]:
        try:
            return dict(self.driver.status())
        except Exception as err:  # noqa: BLE001 - a status failure must not stop the heartbeat
            return {"status_error": f"{type(err).__name__}: {err}"}

    # ---- operations -----------------------------------------------------------------------------

    def _serve(self) -> None:
        while int(self.sock.get(_EVENTS)) & _POLLIN:  # cheaper than raising zmq.Again per wake-up
            raw = self.sock.recv(zmq.NOBLOCK)
            message = unpack(raw)
            kind = message.get("t")
            if kind == "call":
                self._call(message)
            elif kind == "filter":
                self._filter(message)
            elif kind == "stop":
                self.stopping = True
                return

    def _call(self, message: dict[str, Any]) -> None:
        call_id = message.get("id")
        try:
            result = self.driver.call(str(message.get("op")), message.get("args") or {}, Caller.from_wire(message.get("caller")))
            reply: dict[str, Any] = {"t": "reply", "id": call_id, "result": result}
            encoded = pack(reply)
        except CloveError as err:
            encoded = pack({"t": "reply", "id": call_id, "error": to_wire(err)})
        except Exception as err:  # noqa: BLE001 - a driver bug becomes a structured reply
            log.exception("operation %s failed", message.get("op"))
            bug = DeviceBroken(f"{type(self.driver).__name__}.{message.get('op')} failed: {type(err).__name__}: {err}")
            encoded = pack({"t": "reply", "id": call_id, "error": to_wire(bug)})
        self.sock.send(encoded)

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
                kind, raw = self._pump.recv_multipart(zmq.NOBLOCK)
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
