"""Cutting a byte stream into FIX messages, and the checks a FIX engine makes before it parses
one: the frame starts at ``8=FIX``, BodyLength(9) is second and lands on a ``10=nnn`` trailer,
and CheckSum(10) is right.

simplefix's parser checks neither BodyLength nor CheckSum. A FIX engine must: a garbled message
is dropped without consuming a sequence number, and the sender repairs the gap by resend. So
:class:`Framer` verifies each frame and only then is it handed to
:func:`~clove_driver_exchange.fix.codec.parse`.
"""

from __future__ import annotations

from dataclasses import dataclass

from clove_driver_exchange.fix.dictionary import MAX_MESSAGE, SOH

__all__ = ["Frame", "Framer"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One message cut from the stream: ``error`` is ``None`` when it is sound."""

    raw: bytes
    error: str | None = None


class Framer:
    """Cut a byte stream into FIX messages, checking BodyLength and CheckSum.

    Bytes before a ``8=FIX`` are skipped. A frame whose checksum is wrong is returned with an
    ``error`` (the receiver ignores it, as the standard says); a BodyLength that does not land
    on a ``10=nnn`` trailer means the stream lost sync, and the framer resumes at the next
    ``8=FIX`` after the bad one (also reported as an error frame).
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        buf = self._buf
        pos = 0
        while True:
            start = buf.find(b"8=FIX", pos)
            while start > 0 and buf[start - 1] != 1:  # inside a value, not a message start
                start = buf.find(b"8=FIX", start + 1)
            if start < 0:
                pos = max(pos, len(buf) - 4)  # keep what could be the start of "8=FIX"
                break
            head_end = buf.find(SOH, start)
            if head_end < 0 or len(buf) < head_end + 3:
                pos = start
                break
            if buf[head_end + 1 : head_end + 3] != b"9=":
                frames.append(Frame(bytes(buf[start : head_end + 1]), "BodyLength(9) is not second"))
                pos = start + 1
                continue
            len_end = buf.find(SOH, head_end + 3)
            if len_end < 0:
                if len(buf) - head_end > 12:
                    frames.append(Frame(bytes(buf[start:]), "BodyLength(9) is not a number"))
                    pos = start + 1
                    continue
                pos = start
                break
            digits = bytes(buf[head_end + 3 : len_end])
            if not digits.isdigit() or int(digits) > MAX_MESSAGE:
                frames.append(Frame(bytes(buf[start : len_end + 1]), f"bad BodyLength(9) {digits!r}"))
                pos = start + 1
                continue
            body_end = len_end + 1 + int(digits)
            end = body_end + 7  # "10=nnn\x01"
            if len(buf) < end:
                pos = start
                break
            trailer = bytes(buf[body_end:end])
            if trailer[:3] != b"10=" or trailer[6] != 1 or not trailer[3:6].isdigit():
                frames.append(Frame(bytes(buf[start:end]), "BodyLength(9) does not end at CheckSum(10)"))
                pos = start + 1
                continue
            raw = bytes(buf[start:end])
            checksum = sum(memoryview(buf)[start:body_end]) % 256
            if checksum != int(trailer[3:6]):
                frames.append(Frame(raw, f"CheckSum(10) is {trailer[3:6].decode()}, computed {checksum:03d}"))
            else:
                frames.append(Frame(raw))
            pos = end
        del buf[:pos]
        return frames
