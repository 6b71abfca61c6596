"""The simulated serial devices on real ptys: NMEA sentences, baud pacing, faults, unplugging,
the command device, and no leaked fds."""

from __future__ import annotations

import errno
import os
import select
import threading
import time

import pytest
import serial

from clove.testing.kernel import poll_for
from hil.gps import CommandDevice, NmeaError, NmeaGps, nmea_checksum, nmea_sentence, parse_nmea
from hil.world import World


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Reader:
    """A plain reader of a port path (os.open + select + os.read), collecting whole lines with
    their arrival times and what ended it (an OSError, or EOF)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.lines: list[tuple[float, bytes]] = []
        self.partial = b""
        self.ended: OSError | str | None = None

    def pump(self, timeout: float = 0.05) -> None:
        if self.ended is not None:
            return
        if not select.select([self.fd], [], [], timeout)[0]:
            return
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError as err:
            self.ended = err
            return
        if not data:
            self.ended = "eof"
            return
        now = time.monotonic()
        self.partial += data
        *done, self.partial = self.partial.split(b"\n")
        self.lines.extend((now, line + b"\n") for line in done)

    def until(self, condition: object, timeout: float, message: str) -> None:
        def check() -> bool:
            self.pump()
            return bool(condition()) if callable(condition) else False

        poll_for(check, timeout, interval=0, message=message)

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def world() -> World:
    w = World(lat=48.137154, lon=11.576124)
    w.place(120.0, -45.0, heading=0.0)
    return w


def test_checksum_helpers() -> None:
    # The classic example from the NMEA reference.
    body = "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
    assert nmea_checksum(body) == "47"
    assert nmea_sentence(body) == f"${body}*47\r\n".encode()
    assert parse_nmea(nmea_sentence(body))[0] == "GPGGA"
    with pytest.raises(NmeaError, match="bad checksum"):
        parse_nmea(nmea_sentence(body, corrupt=True))
    with pytest.raises(NmeaError):
        parse_nmea(b"\xff$GPGGA*00\r\n")


def test_sentences_parse_at_the_rate(world: World) -> None:
    with NmeaGps(world, rate_hz=10, baudrate=115200) as gps:
        assert os.path.islink(gps.port) and os.readlink(gps.port) == gps.slave_name
        port = serial.Serial(gps.port, 115200, timeout=1.0)  # pyserial, as a driver would
        try:
            port.readline()  # possibly the tail of a sentence sent before we opened
            got: list[tuple[float, str, list[str]]] = []
            while sum(1 for _, kind, _ in got if kind == "GPGGA") < 12:
                line = port.readline()
                assert line.endswith(b"\r\n"), line
                talker, fields = parse_nmea(line)  # raises on a bad checksum
                got.append((time.monotonic(), talker, fields))
        finally:
            port.close()
    kinds = [kind for _, kind, _ in got]
    assert set(kinds) == {"GPGGA", "GPRMC"}
    gga = [(t, f) for t, kind, f in got if kind == "GPGGA"]
    # About the rate: 10 intervals of 100 ms from the second to the last (arrival jitter allowed).
    span = gga[-1][0] - gga[1][0]
    assert 0.8 < span < 1.25, span
    # The position is the world's, to the sentence's resolution (1e-5 minutes).
    lat, lon = world.to_latlon()
    fields = gga[-1][1]
    parsed_lat = int(fields[1][:2]) + float(fields[1][2:]) / 60
    parsed_lon = int(fields[3][:3]) + float(fields[3][3:]) / 60
    assert fields[2] == "N" and fields[4] == "E" and fields[5] == "1"
    assert abs(parsed_lat - lat) < 1e-6 and abs(parsed_lon - lon) < 1e-6
    rmc = next(f for _, kind, f in got if kind == "GPRMC")
    assert rmc[1] == "A" and float(rmc[6]) == 0.0 and float(rmc[7]) == 90.0  # heading east


def test_baud_rate_pacing(world: World) -> None:
    """9600 baud: 960 bytes/s. One fix (GGA + RMC, ~150 bytes) takes ~156 ms to arrive."""
    with NmeaGps(world, rate_hz=2, baudrate=9600) as gps:
        reader = Reader(gps.port)
        try:
            reader.until(lambda: len(reader.lines) >= 5, 5.0, "five lines")
        finally:
            reader.close()
    pairs = [
        (reader.lines[i], reader.lines[i + 1])
        for i in range(1, len(reader.lines) - 1)
        if reader.lines[i][1].startswith(b"$GPGGA") and reader.lines[i + 1][1].startswith(b"$GPRMC")
    ]
    assert pairs, reader.lines
    (t_gga, gga), (t_rmc, rmc) = pairs[0]
    # The RMC line finished arriving len(rmc) byte-times after the GGA line finished.
    expected = len(rmc) / 960
    assert 0.6 * expected < t_rmc - t_gga < expected + 0.05, (t_rmc - t_gga, expected)


def test_garbage_and_corrupt_sentences(world: World) -> None:
    with NmeaGps(world, rate_hz=20, baudrate=115200, seed=7) as gps:
        reader = Reader(gps.port)
        try:
            reader.until(lambda: len(reader.lines) >= 2, 3.0, "the first sentences")
            garbage = gps.inject_garbage(48)
            assert len(garbage) == 48 and b"\n" not in garbage
            reader.until(lambda: any(garbage in line for _, line in reader.lines), 3.0, "the garbage")
            dirty = next(line for _, line in reader.lines if garbage in line)
            with pytest.raises(NmeaError):
                parse_nmea(dirty)
            assert gps.garbage_sent == 48

            mark = len(reader.lines)
            gps.corrupt_next(3)

            def bad_checksums() -> int:
                bad = 0
                for _, line in reader.lines[mark:]:
                    try:
                        parse_nmea(line)
                    except NmeaError as err:
                        assert "bad checksum" in str(err)  # noqa: PT017 - counting, not expecting one
                        bad += 1
                return bad

            reader.until(
                lambda: bad_checksums() >= 3 and len(reader.lines) >= mark + 8, 3.0, "3 corrupt sentences"
            )
            assert bad_checksums() == 3
            assert gps.corrupted_sent == 3
            parse_nmea(reader.lines[-1][1])  # good again afterwards
        finally:
            reader.close()


def test_disconnect_and_reconnect_through_the_same_path(world: World) -> None:
    before = open_fds()
    gps = NmeaGps(world, rate_hz=20, baudrate=115200)
    try:
        port = gps.port
        first_name = gps.slave_name
        reader = Reader(port)
        reader.until(lambda: len(reader.lines) >= 2, 3.0, "sentences")
        gps.disconnect()
        assert not gps.connected and not os.path.lexists(port)  # unplugged: the node is gone
        reader.until(lambda: reader.ended is not None, 3.0, "the reader to see the hang-up")
        ended = reader.ended
        assert ended == "eof" or (isinstance(ended, OSError) and ended.errno == errno.EIO), ended
        reader.close()
        with pytest.raises(FileNotFoundError):
            os.open(port, os.O_RDWR | os.O_NOCTTY)
        gps.disconnect()  # a no-op

        gps.reconnect()
        assert gps.connected and os.readlink(port) == gps.slave_name
        assert gps.connects == 2
        again = Reader(port)  # the same path as before
        try:
            again.until(lambda: len(again.lines) >= 3, 3.0, "sentences after the reconnect")
            parse_nmea(again.lines[-1][1])
        finally:
            again.close()
        assert first_name  # (the pts number may or may not be reused)
    finally:
        gps.stop()
        gps.stop()  # idempotent
    assert not os.path.lexists(gps.port)
    assert open_fds() == before
    assert not any(t.name == "hil-nmea-gps" for t in threading.enumerate())


def test_writes_never_fail_while_nobody_reads(world: World, tmp_path: os.PathLike[str]) -> None:
    link = os.path.join(str(tmp_path), "gps0")
    with NmeaGps(world, rate_hz=50, baudrate=1_000_000, link=link) as gps:
        assert gps.port == link
        poll_for(lambda: gps.fixes >= 20, 3.0, message="20 fixes with no reader")
        assert gps.running
        # A reader arriving late gets data (pyserial flushes what piled up while it was away).
        port = serial.Serial(link, timeout=1.0)
        try:
            port.readline()
            parse_nmea(port.readline())
        finally:
            port.close()
        assert gps.running
    assert not os.path.lexists(link)


def test_command_device_answers(tmp_path: os.PathLike[str]) -> None:
    before = open_fds()
    link = os.path.join(str(tmp_path), "cmd0")
    dev = CommandDevice(link=link)
    try:
        port = serial.Serial(link, 115200, timeout=2.0)
        try:
            port.write(b"PING\n")
            assert port.readline() == b"PONG\n"
            port.write(b"STATUS?\n")
            status = port.readline()
            assert status.startswith(b"OK ") and status.endswith(b"\n")
            assert float(status[3:]) >= 0
            port.write(b"HELLO\r\n")
            assert port.readline() == b"ERR\n"
            # Two requests in one write, and one split across writes.
            port.write(b"PING\nPI")
            assert port.readline() == b"PONG\n"
            port.write(b"NG\n")
            assert port.readline() == b"PONG\n"
        finally:
            port.close()
        assert dev.requests == ["PING", "STATUS?", "HELLO", "PING", "PING"]

        dev.disconnect()
        dev.reconnect()
        port = serial.Serial(link, 115200, timeout=2.0)
        try:
            port.write(b"PING\n")
            assert port.readline() == b"PONG\n"
        finally:
            port.close()
    finally:
        dev.stop()
    assert open_fds() == before
    assert not os.path.lexists(link)


def test_refuses_to_replace_a_regular_file(world: World, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(str(tmp_path), "not-a-link")
    with open(path, "w") as f:
        f.write("keep me")
    before = open_fds()
    with pytest.raises(FileExistsError):
        NmeaGps(world, link=path)
    assert open_fds() == before
