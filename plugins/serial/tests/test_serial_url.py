"""pyserial's ``clove://`` URL handler against a fake client whose device records every call and
serves queued bytes the way ``device.recv`` does (wait up to ``timeout`` for the first byte).
The same handler against a real kernel is an integration test elsewhere."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import serial
import serial.threaded

import clove_sdk.pyserial
from clove.errors import DeviceBroken, DeviceTimeout, DeviceUnavailable, NotFound, PermissionDenied
from clove.testing.kernel import poll_for
from clove_sdk.serial_handlers import protocol_clove


class FakeDevice:
    """A byte-stream device: ``feed`` queues what the device 'received'."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.reads: list[tuple[int, float | None]] = []
        self.subscribes: list[int | None] = []
        self.unsubscribed = 0
        self.errors: dict[str, Exception] = {}  # op (or "read", "subscribe") -> what it raises
        self.lines = {
            "cts": True,
            "dsr": False,
            "ri": False,
            "cd": True,
            "rts": True,
            "dtr": True,
            "brk": False,
        }
        self._queue = bytearray()
        self._cond = threading.Condition()

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._queue += data
            self._cond.notify_all()

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def call(self, op: str, /, reply_timeout: float | None = None, **args: Any) -> Any:
        self.calls.append((op, args))
        if op in self.errors:
            raise self.errors[op]
        if op == "write":
            return {"written": len(args["data"])}
        if op == "set_modem":
            self.lines.update({k: v for k, v in args.items() if v is not None})
            return {k: self.lines[k] for k in ("rts", "dtr", "brk")}
        if op == "get_modem":
            return {k: v for k, v in self.lines.items() if k != "brk"}
        if op == "flush":
            return {"flushed": True}
        raise AssertionError(f"unexpected op {op}")

    def read(self, size: int = 4096, timeout: float | None = None) -> bytes:
        self.reads.append((size, timeout))
        if "read" in self.errors:
            raise self.errors["read"]
        with self._cond:
            if timeout:
                self._cond.wait_for(lambda: self._queue, timeout)
            data = bytes(self._queue[:size])
            del self._queue[:size]
            return data

    def subscribe(self, filters: list[Any] | None = None, queue: int | None = None) -> dict[str, Any]:
        self.subscribes.append(queue)
        if "subscribe" in self.errors:
            raise self.errors["subscribe"]
        return {"success": True, "queue": queue or 65536, "dropped": 0}

    def unsubscribe(self) -> dict[str, Any]:
        self.unsubscribed += 1
        return {"success": True, "dropped": 0}


class FakeClient:
    def __init__(self, options: dict[str, str]) -> None:
        self.options = options
        self.devices: dict[str, FakeDevice] = {}
        self.closed = False

    def device(self, name: str) -> FakeDevice:
        return self.devices.setdefault(name, FakeDevice())

    def close(self) -> None:
        self.closed = True


class Fakes:
    """Every client the handler made, and the one device tests mostly talk to."""

    def __init__(self) -> None:
        self.clients: list[FakeClient] = []
        self.device = FakeDevice()

    def factory(self, options: dict[str, str]) -> FakeClient:
        client = FakeClient(options)
        client.devices["gps"] = self.device
        self.clients.append(client)
        return client


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    made = Fakes()
    monkeypatch.setattr(protocol_clove, "client_factory", made.factory)
    return made


@pytest.fixture
def port(fakes: Fakes) -> Iterator[serial.SerialBase]:
    ser = serial.serial_for_url("clove://gps", timeout=1)
    yield ser
    ser.close()


def _timed(action: Any) -> tuple[Any, float]:
    started = time.monotonic()
    return action(), time.monotonic() - started


# ---- registration and opening -----------------------------------------------------------------


def test_importing_clove_sdk_pyserial_makes_clove_urls_known() -> None:
    code = (
        "import serial\n"
        "try:\n"
        "    serial.serial_for_url('clove://gps?bogus=1')\n"
        "except ValueError as err:\n"
        "    assert 'not known' in str(err), err\n"
        "import clove_sdk.pyserial\n"
        "try:\n"
        "    serial.serial_for_url('clove://gps?bogus=1')\n"
        "except serial.SerialException as err:\n"
        "    assert 'unknown option' in str(err), err\n"
        "    print('reached the handler')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reached the handler"


def test_register_is_idempotent() -> None:
    clove_sdk.pyserial.register()
    clove_sdk.pyserial.register()
    assert serial.protocol_handler_packages.count("clove_sdk.serial_handlers") == 1


def test_serial_for_url_opens_the_named_device_and_subscribes(fakes: Fakes, port: serial.SerialBase) -> None:
    assert isinstance(port, protocol_clove.Serial)
    assert port.is_open
    assert port.timeout == 1
    assert fakes.clients[0].options == {}
    assert fakes.device.subscribes == [None]  # queueing starts at open, so no reply is lost
    port.close()
    port.close()
    assert fakes.device.unsubscribed == 1
    assert fakes.clients[0].closed
    with pytest.raises(serial.PortNotOpenError):
        port.read(1)


def test_url_options_reach_the_client_and_the_subscription(fakes: Fakes) -> None:
    with serial.serial_for_url("clove://gps?socket=/run/clove.sock&timeout=5&queue=100") as ser:
        assert ser.is_open
    assert fakes.clients[0].options == {"socket": "/run/clove.sock", "timeout": "5", "queue": "100"}
    assert fakes.device.subscribes == [100]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("clove://", "expected clove://DEVICE"),
        ("clove://gps/extra", "expected clove://DEVICE"),
        ("clove://gps?baud=9600", "unknown option 'baud'"),
        ("clove://gps?timeout=-1", "timeout must be positive"),
        ("clove://gps?queue=lots", "invalid literal"),
    ],
)
def test_bad_urls_are_refused(fakes: Fakes, url: str, words: str) -> None:
    with pytest.raises(serial.SerialException, match=words):
        serial.serial_for_url(url)
    assert fakes.clients == []


def test_a_missing_device_fails_open_and_releases_the_client(fakes: Fakes) -> None:
    fakes.device.errors["subscribe"] = NotFound("no device named 'gps'")
    with pytest.raises(
        serial.SerialException, match="could not open port clove://gps: no device named 'gps'"
    ) as caught:
        serial.serial_for_url("clove://gps")
    assert isinstance(caught.value.__cause__, NotFound)
    assert fakes.clients[0].closed


def test_a_write_only_grant_opens_and_reads_report_the_refusal(fakes: Fakes) -> None:
    fakes.device.errors["subscribe"] = PermissionDenied("agent bot may not read gps")
    fakes.device.errors["read"] = PermissionDenied("agent bot may not read gps")
    with serial.serial_for_url("clove://gps", timeout=0) as ser:
        assert ser.write(b"$PMTK\r\n") == 7
        with pytest.raises(serial.SerialException, match="^agent bot may not read gps$") as caught:
            ser.read(1)
        assert isinstance(caught.value.__cause__, PermissionDenied)


def test_baud_rate_changes_are_accepted_and_touch_nothing(fakes: Fakes, port: serial.SerialBase) -> None:
    port.baudrate = 115200
    port.timeout = 0.5
    assert port.baudrate == 115200
    assert port.timeout == 0.5
    assert fakes.device.calls == []


# ---- reading ----------------------------------------------------------------------------------


def test_timeout_zero_never_waits(fakes: Fakes, port: serial.SerialBase) -> None:
    port.timeout = 0
    data, took = _timed(lambda: port.read(10))
    assert data == b""
    assert took < 0.1
    assert fakes.device.reads[-1][1] == 0
    fakes.device.feed(b"abc")
    assert port.read(10) == b"abc"


def test_timeout_returns_what_arrived_once_it_passes(fakes: Fakes, port: serial.SerialBase) -> None:
    port.timeout = 0.3
    fakes.device.feed(b"abc")
    data, took = _timed(lambda: port.read(10))
    assert data == b"abc"
    assert 0.25 <= took < 1.0
    fakes.device.feed(b"0123456789")
    data, took = _timed(lambda: port.read(10))
    assert data == b"0123456789"
    assert took < 0.2
    data, took = _timed(lambda: port.read(1))
    assert data == b""
    assert 0.25 <= took < 1.0


def test_timeout_none_waits_for_every_byte_in_short_slices(fakes: Fakes, port: serial.SerialBase) -> None:
    port.timeout = None
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(port.read(5)), daemon=True)
    reader.start()
    fakes.device.feed(b"ab")
    poll_for(lambda: fakes.device.queued() == 0, 3.0, message="the first bytes taken")
    reader.join(0.4)
    assert reader.is_alive(), "read(5) returned before 5 bytes arrived"
    fakes.device.feed(b"cde")
    reader.join(3.0)
    assert got == [b"abcde"]
    assert all(
        timeout is not None and timeout <= protocol_clove.READ_SLICE for _, timeout in fakes.device.reads
    )


def test_small_reads_are_served_from_one_pull(fakes: Fakes, port: serial.SerialBase) -> None:
    fakes.device.feed(b"wxyz")
    assert [port.read(1) for _ in range(4)] == [b"w", b"x", b"y", b"z"]
    assert len(fakes.device.reads) == 1
    assert fakes.device.reads[0][0] >= protocol_clove.PULL_SIZE


def test_readline_and_read_until(fakes: Fakes, port: serial.SerialBase) -> None:
    port.timeout = 0.2
    fakes.device.feed(b"$GPGGA,1*5B\r\n$GPRMC,2*4A\r\n$GPV")
    assert port.readline() == b"$GPGGA,1*5B\r\n"
    assert port.read_until(b"\r\n") == b"$GPRMC,2*4A\r\n"
    partial, took = _timed(port.readline)
    assert partial == b"$GPV"
    assert took >= 0.15
    fakes.device.feed(b"line one\nline two\n")
    text = io.TextIOWrapper(io.BufferedRWPair(port, port), newline="\n")  # type: ignore[type-var]
    assert text.readline() == "line one\n"


def test_in_waiting_pulls_without_waiting(fakes: Fakes, port: serial.SerialBase) -> None:
    assert port.in_waiting == 0
    fakes.device.feed(b"12345")
    assert port.in_waiting == 5
    assert all(timeout == 0 for _, timeout in fakes.device.reads)
    assert port.read(5) == b"12345"


def test_reset_input_buffer_discards_buffered_and_queued_bytes(fakes: Fakes, port: serial.SerialBase) -> None:
    fakes.device.feed(b"old bytes")
    assert port.read(1) == b"o"  # the rest sits in the local buffer
    fakes.device.feed(b" and more")
    port.reset_input_buffer()
    assert fakes.device.queued() == 0
    port.timeout = 0
    assert port.read(100) == b""
    fakes.device.feed(b"new")
    assert port.read(100) == b"new"


def test_read_errors_become_serial_exceptions(fakes: Fakes, port: serial.SerialBase) -> None:
    fakes.device.errors["read"] = DeviceBroken(
        "serial: /dev/ttyUSB0: device reports readiness to read but returned no data"
    )
    with pytest.raises(
        serial.SerialException, match="clove://gps: read: serial: /dev/ttyUSB0: device reports"
    ) as caught:
        port.read(1)
    assert isinstance(caught.value.__cause__, DeviceBroken)


# ---- writing and the other operations ---------------------------------------------------------


def test_write_calls_the_driver_operation(fakes: Fakes, port: serial.SerialBase) -> None:
    assert port.write(b"$PMTK220,1000*1F\r\n") == 18
    assert port.write(bytearray(b"ab")) == 2
    assert port.write(memoryview(b"cd")) == 2
    assert fakes.device.calls == [
        ("write", {"data": b"$PMTK220,1000*1F\r\n"}),
        ("write", {"data": b"ab"}),
        ("write", {"data": b"cd"}),
    ]
    assert all(type(args["data"]) is bytes for _, args in fakes.device.calls)
    assert port.out_waiting == 0
    with pytest.raises(TypeError):
        port.write("text")


def test_a_denied_write_keeps_the_grant_message(fakes: Fakes, port: serial.SerialBase) -> None:
    denial = PermissionDenied(
        "write of 9 bytes exceeds this grant's max_write_bytes of 8", details={"size": 9, "limit": 8}
    )
    fakes.device.errors["write"] = denial
    with pytest.raises(serial.SerialException) as caught:
        port.write(b"123456789")
    assert str(caught.value) == "write of 9 bytes exceeds this grant's max_write_bytes of 8"
    assert caught.value.__cause__ is denial


def test_a_timed_out_write_is_a_serial_timeout(fakes: Fakes, port: serial.SerialBase) -> None:
    fakes.device.errors["write"] = DeviceTimeout("serial: /dev/ttyS0: Write timeout")
    with pytest.raises(serial.SerialTimeoutException, match="Write timeout"):
        port.write(b"x")


def test_flush_drains_at_the_device(fakes: Fakes, port: serial.SerialBase) -> None:
    port.flush()
    port.reset_output_buffer()
    assert fakes.device.calls == [("flush", {})]


def test_modem_lines_are_driver_operations(fakes: Fakes, port: serial.SerialBase) -> None:
    port.rts = False
    port.dtr = True
    port.break_condition = True
    port.break_condition = False
    assert fakes.device.calls == [
        ("set_modem", {"rts": False}),
        ("set_modem", {"dtr": True}),
        ("set_modem", {"brk": True}),
        ("set_modem", {"brk": False}),
    ]
    fakes.device.lines.update(cts=False, dsr=True, ri=True, cd=False)
    assert (port.cts, port.dsr, port.ri, port.cd) == (False, True, True, False)
    assert fakes.device.calls[-1] == ("get_modem", {})


def test_a_port_without_modem_lines_says_so(fakes: Fakes, port: serial.SerialBase) -> None:
    fakes.device.errors["get_modem"] = DeviceUnavailable(
        "serial: /dev/pts/3: this port has no modem lines (get_modem: Inappropriate ioctl for device)"
    )
    fakes.device.errors["set_modem"] = fakes.device.errors["get_modem"]
    with pytest.raises(serial.SerialException, match="no modem lines"):
        port.cts  # noqa: B018 - the property is the call
    with pytest.raises(serial.SerialException, match="no modem lines"):
        port.rts = False


# ---- threads ----------------------------------------------------------------------------------


def test_a_write_is_not_stuck_behind_a_blocked_read(fakes: Fakes, port: serial.SerialBase) -> None:
    port.timeout = None
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(port.read(3)), daemon=True)
    reader.start()
    poll_for(lambda: fakes.device.reads, 3.0, message="the reader waiting")
    written: list[int] = []
    writer = threading.Thread(target=lambda: written.append(port.write(b"ping")), daemon=True)
    writer.start()
    writer.join(protocol_clove.READ_SLICE + 0.5)
    stuck = writer.is_alive()
    fakes.device.feed(b"pong")  # lets the reader finish either way
    reader.join(3.0)
    assert not stuck, "the write waited for the blocked read to finish"
    assert written == [4]
    assert got == [b"pon"]


def test_cancel_read_and_close_end_a_blocked_read(fakes: Fakes, port: serial.SerialBase) -> None:
    port.timeout = None
    for stop in (port.cancel_read, port.close):
        got: list[bytes] = []
        reader = threading.Thread(target=lambda out=got: out.append(port.read(10)), daemon=True)
        reader.start()
        poll_for(lambda: fakes.device.reads, 3.0, message="the reader waiting")
        stop()
        reader.join(protocol_clove.READ_SLICE + 1.0)
        assert not reader.is_alive(), f"{stop.__name__} left the read blocked"
        assert got == [b""]
        fakes.device.reads.clear()


def test_pyserial_reader_thread_gets_lines_and_stops(fakes: Fakes, port: serial.SerialBase) -> None:
    lines: list[str] = []

    class Lines(serial.threaded.LineReader):  # type: ignore[misc]
        TERMINATOR = b"\r\n"

        def handle_line(self, line: str) -> None:
            lines.append(line)

    with serial.threaded.ReaderThread(port, Lines) as protocol:
        fakes.device.feed(b"$GPGGA,1\r\n$GPGGA,2\r\n")
        poll_for(lambda: len(lines) == 2, 3.0, message="two lines")
        protocol.write_line("$PMTK")
        poll_for(lambda: ("write", {"data": b"$PMTK\r\n"}) in fakes.device.calls, 3.0, message="the write")
    assert lines == ["$GPGGA,1", "$GPGGA,2"]
    assert not port.is_open
