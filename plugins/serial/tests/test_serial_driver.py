"""The serial driver on real ports: a pty pair (os.openpty), pyserial's loop://, and socket://
against a TCP server run by the test."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from clove.errors import DeviceBroken, DeviceBusy, DeviceClosed, DeviceTimeout, DeviceUnavailable
from clove.testing.drivers import check_driver
from clove.testing.kernel import poll_for
from clove_driver_serial import SerialConfig, SerialDriver


class Pty:
    """A pty pair: the driver opens the slave by name; the test plays the device on the master."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.name = os.ttyname(self.slave)
        self._open = {self.master, self.slave}

    def send(self, data: bytes) -> None:
        """Bytes from the device to the driver."""
        os.write(self.master, data)

    def close_master(self) -> None:
        """Unplug the device: the slave then reads EIO / readable-but-empty forever."""
        if self.master in self._open:
            self._open.discard(self.master)
            os.close(self.master)

    def read_master(self, size: int, timeout: float = 3.0) -> bytes:
        got = b""
        deadline = time.monotonic() + timeout
        while (
            len(got) < size and select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))[0]
        ):
            got += os.read(self.master, size - len(got))
        return got

    def close(self) -> None:
        for fd in self._open:
            os.close(fd)
        self._open.clear()


@pytest.fixture
def pty() -> Iterator[Pty]:
    pair = Pty()
    yield pair
    pair.close()


class TcpPeer:
    """A TCP server on 127.0.0.1 playing the far end of socket://: echoes what it receives,
    can push bytes, and can be unplugged (every connection dropped, new ones refused)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._unplugged = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._unplugged:
                    conn.close()
                    continue
                self.conns.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(4096):
                conn.sendall(data)
        except OSError:
            pass

    def push(self, data: bytes) -> None:
        """Send ``data`` on the only connection (waiting for it to be accepted)."""
        poll_for(lambda: self.conns, 3.0, message="a connection to the test server")
        with self._lock:
            assert len(self.conns) == 1, "push is for tests with one client"
            self.conns[0].sendall(data)

    def unplug(self) -> None:
        """Drop every connection, including one still waiting to be accepted."""
        with self._lock:
            self._unplugged = True
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self.conns.clear()

    def close(self) -> None:
        self._listener.close()
        self.unplug()


@pytest.fixture
def peer() -> Iterator[TcpPeer]:
    server = TcpPeer()
    yield server
    server.close()


def _read_until(driver: SerialDriver, size: int, timeout: float = 3.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < size and time.monotonic() < deadline:
        got += driver.read(0.1)
    return got


# ---- conformance ----------------------------------------------------------------------------


def test_conformance_on_a_pty(pty: Pty) -> None:
    check_driver(
        lambda: SerialDriver(SerialConfig(port=pty.name)),
        feed=lambda driver: pty.send(b"$GPGGA,1\r\n"),
        probe=("write", {"data": b"x"}),
        break_device=lambda driver: pty.close_master(),
    )


def test_conformance_on_loop() -> None:
    check_driver(
        lambda: SerialDriver(SerialConfig(port="loop://")),
        feed=lambda driver: driver.call("write", {"data": b"ping"}),
        probe=("set_modem", {"rts": True}),
    )


def test_conformance_on_a_socket(peer: TcpPeer) -> None:
    check_driver(
        lambda: SerialDriver(SerialConfig(port=f"socket://127.0.0.1:{peer.port}")),
        feed=lambda driver: driver.call("write", {"data": b"echoed by the peer"}),
        probe=("write", {"data": b"x"}),
        break_device=lambda driver: peer.unplug(),
    )


# ---- the stream -------------------------------------------------------------------------------


def test_pty_reads_what_the_device_sends_in_chunks_of_read_chunk(pty: Pty) -> None:
    with SerialDriver(SerialConfig(port=pty.name, read_chunk=4)) as driver:
        assert driver.fileno() >= 0
        os.write(pty.master, b"abcdefghij")
        chunks: list[bytes] = []
        while sum(len(chunk) for chunk in chunks) < 10:
            chunk = driver.read(1.0)
            assert chunk, "the rest of the bytes did not arrive"
            chunks.append(chunk)
        assert b"".join(chunks) == b"abcdefghij"
        assert max(len(chunk) for chunk in chunks) == 4
        assert driver.counters["bytes_in"] == 10


def test_fileno_is_readable_exactly_when_read_has_data(pty: Pty) -> None:
    with SerialDriver(SerialConfig(port=pty.name)) as driver:
        fd = driver.fileno()
        assert select.select([fd], [], [], 0)[0] == []
        os.write(pty.master, b"ok")
        assert select.select([fd], [], [], 3.0)[0] == [fd]
        assert driver.read(0) == b"ok"
        assert select.select([fd], [], [], 0)[0] == []


def test_urls_report_no_fileno(peer: TcpPeer) -> None:
    for port in ("loop://", f"socket://127.0.0.1:{peer.port}"):
        with SerialDriver(SerialConfig(port=port)) as driver:
            assert driver.fileno() == -1


def test_write_reaches_the_device(pty: Pty) -> None:
    with SerialDriver(SerialConfig(port=pty.name)) as driver:
        assert driver.call("write", {"data": b"AT\r\n"}) == {"written": 4}
        assert pty.read_master(4) == b"AT\r\n"


def test_loop_echoes_and_socket_round_trips(peer: TcpPeer) -> None:
    with SerialDriver(SerialConfig(port="loop://")) as driver:
        driver.call("write", {"data": b"loop"})
        assert _read_until(driver, 4) == b"loop"
    with SerialDriver(SerialConfig(port=f"socket://127.0.0.1:{peer.port}")) as driver:
        driver.call("write", {"data": b"echo me"})
        assert _read_until(driver, 7) == b"echo me"


@pytest.mark.parametrize("kind", ["pty", "loop", "socket"])
def test_close_ends_a_read_waiting_forever(kind: str, pty: Pty, peer: TcpPeer) -> None:
    port = {"pty": pty.name, "loop": "loop://", "socket": f"socket://127.0.0.1:{peer.port}"}[kind]
    driver = SerialDriver(SerialConfig(port=port))
    driver.open()
    outcome: list[object] = []
    reader = threading.Thread(target=lambda: outcome.append(_capture(lambda: driver.read(None))), daemon=True)
    reader.start()
    reader.join(0.1)
    assert reader.is_alive(), "read(None) returned with nothing sent"
    started = time.monotonic()
    driver.close()
    reader.join(2.0)
    took = time.monotonic() - started
    assert not reader.is_alive(), f"read(None) on {kind} still blocked after close()"
    assert isinstance(outcome[0], DeviceClosed)
    assert took < 1.0  # socket:// close itself sleeps 0.3 s inside pyserial


def _capture(action: object) -> object:
    try:
        return action()  # type: ignore[operator]
    except Exception as err:  # noqa: BLE001 - the test judges it
        return err


def test_unplugged_pty_raises_device_broken_instead_of_spinning(pty: Pty) -> None:
    with SerialDriver(SerialConfig(port=pty.name)) as driver:
        pty.close_master()
        assert select.select([driver.fileno()], [], [], 1.0)[0], "a dead pty should poll readable"
        with pytest.raises(DeviceBroken, match="disconnected|no data|Input/output"):
            driver.read(0)
        started = time.monotonic()
        with pytest.raises(DeviceBroken):
            driver.read(5.0)
        assert time.monotonic() - started < 1.0


def test_socket_reads_what_the_peer_sends(peer: TcpPeer) -> None:
    with SerialDriver(SerialConfig(port=f"socket://127.0.0.1:{peer.port}")) as driver:
        peer.push(b"$GPRMC,hello\r\n")
        assert _read_until(driver, 14) == b"$GPRMC,hello\r\n"


def test_dropped_socket_raises_device_broken(peer: TcpPeer) -> None:
    with SerialDriver(SerialConfig(port=f"socket://127.0.0.1:{peer.port}")) as driver:
        peer.unplug()
        with pytest.raises(DeviceBroken, match="disconnected"):
            driver.read(3.0)


# ---- operations -------------------------------------------------------------------------------


def test_pty_has_no_modem_lines(pty: Pty) -> None:
    with SerialDriver(SerialConfig(port=pty.name)) as driver:
        with pytest.raises(DeviceUnavailable, match="no modem lines"):
            driver.call("get_modem")
        with pytest.raises(DeviceUnavailable, match="no modem lines"):
            driver.call("set_modem", {"rts": False})
        # the port still works afterwards
        driver.call("write", {"data": b"k"})
        assert pty.read_master(1) == b"k"


def test_modem_lines_on_loop() -> None:
    # loop:// wires RTS to CTS and DTR to DSR.
    with SerialDriver(SerialConfig(port="loop://")) as driver:
        assert driver.call("set_modem", {"rts": False, "dtr": True}) == {
            "rts": False,
            "dtr": True,
            "brk": False,
        }
        lines = driver.call("get_modem")
        assert lines == {"cts": False, "dsr": True, "ri": False, "cd": True, "rts": False, "dtr": True}
        assert driver.call("set_modem", {"rts": True, "brk": True}) == {"rts": True, "dtr": True, "brk": True}
        assert driver.call("get_modem")["cts"] is True


def test_reset_input_discards_received_bytes(pty: Pty) -> None:
    with SerialDriver(SerialConfig(port=pty.name)) as driver:
        os.write(pty.master, b"stale")
        assert select.select([driver.fileno()], [], [], 3.0)[0]
        assert driver.call("reset_input") == {"reset": True}
        assert driver.read(0) == b""
        os.write(pty.master, b"fresh")
        assert _read_until(driver, 5) == b"fresh"


def test_flush_returns_once_written(pty: Pty) -> None:
    with SerialDriver(SerialConfig(port=pty.name)) as driver:
        driver.call("write", {"data": b"0123456789"})
        assert driver.call("flush") == {"flushed": True}
        assert pty.read_master(10) == b"0123456789"


def test_write_to_a_stalled_device_times_out(pty: Pty) -> None:
    # Nobody reads the master: the pty's buffer fills and a write must give up, not hang.
    with SerialDriver(SerialConfig(port=pty.name, write_timeout=0.2)) as driver:
        for _ in range(1000):  # a pty buffers a few KiB before it stalls
            try:
                driver.call("write", {"data": b"x" * 4096})
            except DeviceTimeout:
                break
            started = time.monotonic()
        else:
            pytest.fail("writes to a stalled pty never timed out")
        assert 0.15 <= time.monotonic() - started < 2.0  # about write_timeout


# ---- opening ----------------------------------------------------------------------------------


def test_second_opener_of_an_exclusive_port_is_busy(pty: Pty) -> None:
    with SerialDriver(SerialConfig(port=pty.name)):
        with pytest.raises(DeviceBusy, match="could not open port"):
            SerialDriver(SerialConfig(port=pty.name)).open()
        # exclusive=False takes no lock, so it does not look at the holder's either.
        with SerialDriver(SerialConfig(port=pty.name, exclusive=False)) as shared:
            assert shared.is_open


@pytest.mark.parametrize("port", ["/dev/ttyCLOVE-NO-SUCH-PORT", "socket://127.0.0.1:1", "nosuchscheme://x"])
def test_missing_port_is_unavailable(port: str) -> None:
    driver = SerialDriver(SerialConfig(port=port))
    with pytest.raises(DeviceUnavailable, match="could not open port"):
        driver.open()
    assert not driver.is_open


def test_serial_settings_reach_the_tty(pty: Pty) -> None:
    import termios

    # A Linux pty keeps the baud rate, stop bits, PARODD and flow control it is given, but forces
    # CS8 and clears PARENB, so those are the settings a pty can show.
    config = SerialConfig(port=pty.name, baudrate=115200, stopbits=2, parity="O", xonxoff=True, rtscts=True)
    with SerialDriver(config):
        iflag, _oflag, cflag, _lflag, ispeed, ospeed, _cc = termios.tcgetattr(pty.slave)
        assert ispeed == ospeed == termios.B115200
        assert cflag & termios.CSTOPB
        assert cflag & termios.PARODD
        assert cflag & termios.CRTSCTS
        assert iflag & termios.IXON
    with SerialDriver(SerialConfig(port=pty.name)):
        iflag, _oflag, cflag, _lflag, ispeed, _ospeed, _cc = termios.tcgetattr(pty.slave)
        assert ispeed == termios.B9600
        assert not (cflag & (termios.CSTOPB | termios.PARODD | termios.CRTSCTS))
        assert not (iflag & termios.IXON)
