"""Keys from the terminal, one poll at a time, on the one thread ``clove top`` has.

:func:`decode` (pure) turns the bytes a terminal sends into key names: printable characters
as themselves, and ``up``, ``down``, ``enter``, ``esc``, ``backspace`` for the few control
keys the view uses. :class:`KeyReader` puts the terminal in cbreak mode (keys arrive at once,
unechoed; Ctrl-C still interrupts) and restores it on exit, whatever happens.
"""

from __future__ import annotations

import os
import select
import termios
import tty
from typing import Any, Final

_SEQUENCES: Final = {
    b"\x1b[A": "up", b"\x1bOA": "up", b"\x1b[B": "down", b"\x1bOB": "down",
    b"\x1b[5~": "pageup", b"\x1b[6~": "pagedown", b"\x1b[C": "right", b"\x1b[D": "left",
}  # fmt: skip
_CONTROL: Final = {b"\r": "enter", b"\n": "enter", b"\x7f": "backspace", b"\x08": "backspace", b"\x1b": "esc"}


def decode(data: bytes) -> list[str]:
    """Key names in ``data``; unknown escape sequences and control bytes are dropped."""
    keys: list[str] = []
    i = 0
    while i < len(data):
        if data[i : i + 1] == b"\x1b":
            for seq, name in _SEQUENCES.items():
                if data.startswith(seq, i):
                    keys.append(name)
                    i += len(seq)
                    break
            else:
                if data[i + 1 : i + 2] in (b"[", b"O"):  # an unknown sequence: skip to its final byte
                    j = i + 2
                    while j < len(data) and not 0x40 <= data[j] <= 0x7E:
                        j += 1
                    i = j + 1
                else:
                    keys.append("esc")
                    i += 1
            continue
        byte = data[i : i + 1]
        if byte in _CONTROL:
            keys.append(_CONTROL[byte])
        elif byte >= b" ":
            # A multi-byte UTF-8 character arrives whole in one read: keep it together.
            width = 1 if byte < b"\x80" else 2 if byte < b"\xe0" else 3 if byte < b"\xf0" else 4
            keys.append(data[i : i + width].decode("utf-8", "replace"))
            i += width
            continue
        i += 1
    return keys


class KeyReader:
    """The terminal on ``fd`` in cbreak mode while in a ``with`` block."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: list[Any] | None = None

    def __enter__(self) -> KeyReader:
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def read(self, timeout: float) -> list[str]:
        """Keys typed within ``timeout`` seconds (an empty list when none were)."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return []
        data = os.read(self.fd, 1024)
        if not data:
            raise EOFError("the terminal closed")
        return decode(data)
