"""NMEA 0183 sentences: the checksum, framing a body as ``$body*HH\\r\\n``, parsing one back
(:func:`parse_nmea`, which checks the checksum), and the bodies of the two sentences the
simulated GPS (:class:`hil.gps.NmeaGps`) sends, ``GPGGA`` and ``GPRMC``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

__all__ = ["KNOTS_PER_MPS", "NmeaError", "gga_body", "nmea_checksum", "nmea_sentence", "parse_nmea", "rmc_body"]

KNOTS_PER_MPS: Final = 3600.0 / 1852.0


class NmeaError(ValueError):
    """A line that is not a well-formed NMEA sentence with a valid checksum."""


def nmea_checksum(body: str) -> str:
    """The two hex digits of the XOR of every character of ``body`` (between ``$`` and ``*``)."""
    value = 0
    for char in body.encode("ascii"):
        value ^= char
    return f"{value:02X}"


def nmea_sentence(body: str, *, corrupt: bool = False) -> bytes:
    """``$body*HH\\r\\n``; ``corrupt`` gives it a wrong checksum."""
    checksum = nmea_checksum(body)
    if corrupt:
        checksum = f"{int(checksum, 16) ^ 0x5A:02X}"
    return f"${body}*{checksum}\r\n".encode("ascii")


def parse_nmea(line: bytes | str) -> tuple[str, list[str]]:
    """``("GPGGA", [fields...])`` from one sentence (trailing CR/LF allowed).

    :raises NmeaError: not ``$...*HH``, not ASCII, or a wrong checksum.
    """
    try:
        text = line.decode("ascii") if isinstance(line, bytes) else line
    except UnicodeDecodeError:
        raise NmeaError(f"not ASCII: {line!r}") from None
    text = text.rstrip("\r\n")
    if not text.startswith("$") or len(text) < 4 or text[-3] != "*":
        raise NmeaError(f"not an NMEA sentence: {text!r}")
    body, checksum = text[1:-3], text[-2:].upper()
    if nmea_checksum(body) != checksum:
        raise NmeaError(f"bad checksum {checksum} (expected {nmea_checksum(body)}): {text!r}")
    talker, *fields = body.split(",")
    return talker, fields


def _angle(value: float, degree_digits: int) -> str:
    """``ddmm.mmmmm`` / ``dddmm.mmmmm`` of an absolute angle in degrees."""
    total = round(abs(value) * 60.0, 5)  # minutes, rounded once so 59.999996 never prints as 60
    degrees, minutes = divmod(total, 60.0)
    return f"{int(degrees):0{degree_digits}d}{minutes:08.5f}"


def gga_body(
    lat: float, lon: float, when: datetime, altitude: float, satellites: int = 8, hdop: float = 0.9
) -> str:
    """A ``GPGGA`` body (no ``$``, no checksum): a GPS fix with ``satellites`` in view."""
    return ",".join(
        [
            "GPGGA",
            when.strftime("%H%M%S.") + f"{when.microsecond // 10000:02d}",
            _angle(lat, 2),
            "N" if lat >= 0 else "S",
            _angle(lon, 3),
            "E" if lon >= 0 else "W",
            "1",
            f"{satellites:02d}",
            f"{hdop:.1f}",
            f"{altitude:.1f}",
            "M",
            "47.0",
            "M",
            "",
            "",
        ]
    )


def rmc_body(lat: float, lon: float, when: datetime, speed: float, course: float) -> str:
    """``speed`` m/s over ground, ``course`` degrees from true north."""
    return ",".join(
        [
            "GPRMC",
            when.strftime("%H%M%S.") + f"{when.microsecond // 10000:02d}",
            "A",
            _angle(lat, 2),
            "N" if lat >= 0 else "S",
            _angle(lon, 3),
            "E" if lon >= 0 else "W",
            f"{abs(speed) * KNOTS_PER_MPS:.3f}",
            f"{course:.1f}",
            when.strftime("%d%m%y"),
            "",
            "",
            "A",
        ]
    )
