"""Simulated serial devices on pseudo-terminals: an NMEA GPS (:class:`NmeaGps`) and a
command/response device (:class:`CommandDevice`).

Both are built on :class:`~hil.ptydevice.PtyDevice` (the pty behind a stable symlink,
:attr:`PtyDevice.port`, paced to the baud rate); the GPS's sentences come from :mod:`hil.nmea`.
The names of both modules are importable from here as before.

Faults: :meth:`NmeaGps.inject_garbage`, :meth:`NmeaGps.corrupt_next`, and on both devices
:meth:`PtyDevice.disconnect` (the master closes: a reader gets EIO / hang-up, and the symlink
disappears as an unplugged adapter's node would) and :meth:`PtyDevice.reconnect` (a new pty
behind the same symlink).
"""

from __future__ import annotations

import math
import random
import time
from datetime import datetime, timezone
from typing import Final

from hil.nmea import KNOTS_PER_MPS as KNOTS_PER_MPS  # "X as X": public, not in __all__ (as before)
from hil.nmea import NmeaError, gga_body, nmea_checksum, nmea_sentence, parse_nmea, rmc_body
from hil.ptydevice import CHUNK_SECONDS as CHUNK_SECONDS
from hil.ptydevice import PtyDevice
from hil.world import World

__all__ = [
    "CommandDevice",
    "NmeaError",
    "NmeaGps",
    "PtyDevice",
    "gga_body",
    "nmea_checksum",
    "nmea_sentence",
    "parse_nmea",
    "rmc_body",
]

_GARBAGE_BYTES: Final = [b for b in range(256) if b != 0x0A]


class NmeaGps(PtyDevice):
    """A GPS writing ``$GPGGA`` and ``$GPRMC`` from ``world`` at ``rate_hz`` on a pty, paced
    to ``baudrate``. Starts at once (``autostart=False`` to call :meth:`start` yourself).

    If the line is too slow for the rate (``rate_hz`` × about 150 bytes > ``baudrate`` / 10),
    fixes are skipped rather than queued, as a real receiver would.
    """

    thread_name = "hil-nmea-gps"

    def __init__(
        self,
        world: World,
        rate_hz: float = 5,
        baudrate: int = 9600,
        link: str | None = None,
        *,
        autostart: bool = True,
        seed: int | None = None,
    ) -> None:
        if rate_hz <= 0:
            raise ValueError("rate_hz must be positive")
        self.world = world
        self.rate_hz = float(rate_hz)
        self._rng = random.Random(seed)
        self._garbage = bytearray()
        self._corrupt = 0
        self.fixes = 0
        self.sentences_sent = 0
        self.corrupted_sent = 0
        self.garbage_sent = 0
        super().__init__(link, baudrate)
        if autostart:
            self.start()

    def inject_garbage(self, n_bytes: int) -> bytes:
        """Send ``n_bytes`` random bytes (never a newline) before the next fix; returns them."""
        garbage = bytes(self._rng.choice(_GARBAGE_BYTES) for _ in range(n_bytes))
        with self._lock:
            self._garbage += garbage
        return garbage

    def corrupt_next(self, n: int = 1) -> None:
        """Give the next ``n`` sentences a wrong checksum."""
        with self._lock:
            self._corrupt += n

    def sentences(self, when: datetime | None = None) -> list[str]:
        """The bodies of the sentences one fix sends (GGA, RMC) for the world as it is now."""
        when = when or datetime.now(timezone.utc)
        lat, lon = self.world.to_latlon()
        pose = self.world.pose()
        return [
            gga_body(lat, lon, when, self.world.altitude),
            rmc_body(lat, lon, when, pose.speed, pose.course),
        ]

    def _serve(self) -> None:
        period = 1.0 / self.rate_hz
        next_fix = time.monotonic()
        while self._sleep_until(next_fix):
            self._read_available()  # the reader's writes (configuration sentences): drained
            out = bytearray()
            with self._lock:
                if self._garbage:
                    out += self._garbage
                    self.garbage_sent += len(self._garbage)
                    self._garbage.clear()
                for body in self.sentences():
                    corrupt = self._corrupt > 0
                    if corrupt:
                        self._corrupt -= 1
                        self.corrupted_sent += 1
                    out += nmea_sentence(body, corrupt=corrupt)
                    self.sentences_sent += 1
                self.fixes += 1
            if not self._transmit(bytes(out)):
                return
            next_fix += period
            now = time.monotonic()
            if next_fix < now:  # the line is too slow for the rate: skip fixes, never burst
                next_fix += math.ceil((now - next_fix) / period) * period


class CommandDevice(PtyDevice):
    """A command/response device on a pty: ``PING`` → ``PONG``, ``STATUS?`` → ``OK <uptime s>``,
    anything else → ``ERR`` (lines end in ``\\n``; a trailing ``\\r`` is ignored). Starts at once.

    :attr:`requests` lists every line received, in order.
    """

    thread_name = "hil-command-device"

    def __init__(
        self,
        link: str | None = None,
        baudrate: int | None = 115200,
        *,
        response_delay: float = 0.0,
        autostart: bool = True,
    ) -> None:
        self.response_delay = response_delay
        self.requests: list[str] = []
        self.started_at = time.monotonic()
        self._pending = b""
        super().__init__(link, baudrate)
        if autostart:
            self.start()

    def respond(self, line: str) -> str:
        """The answer to one request line (without its newline)."""
        if line == "PING":
            return "PONG"
        if line == "STATUS?":
            return f"OK {time.monotonic() - self.started_at:.1f}"
        return "ERR"

    def _serve(self) -> None:
        generation = -1
        while not self._stop.is_set():
            self._wait_readable(0.2)
            seen, data = self._read_available()
            if seen != generation:  # a new pty: a partial line from the old one is gone
                self._pending, generation = b"", seen
            if not data:
                continue
            self._pending += data
            while b"\n" in self._pending:
                raw, self._pending = self._pending.split(b"\n", 1)
                line = raw.rstrip(b"\r").decode("ascii", "replace")
                self.requests.append(line)
                if self.response_delay and not self._sleep_until(time.monotonic() + self.response_delay):
                    return
                if not self._transmit((self.respond(line) + "\n").encode("ascii")):
                    return
