"""Agent output on an operator's terminal, made inert.

An agent's log is whatever an untrusted program wrote. Copied raw to a terminal, its escape
sequences act there: retitle the window, redraw or hide lines, or (OSC 52) set the operator's
clipboard. :class:`LogWriter` shows control characters instead (``^[`` for ESC, ``\\x9b`` for an
8-bit control) when stdout is a terminal, keeping newlines and tabs (and CRLF as a newline);
a pipe or a file gets the bytes unchanged, as does ``--raw``.
"""

from __future__ import annotations

import codecs
from typing import BinaryIO, Final

__all__ = ["LogWriter", "inert"]

_KEPT: Final = frozenset("\n\t")


def _shown(char: str) -> str:
    code = ord(char)
    if code < 0x20:
        return "^" + chr(code + 0x40)  # caret notation: ESC is ^[
    if code == 0x7F:
        return "^?"
    return f"\\x{code:02x}"  # the C1 controls, 0x80-0x9f


_TABLE: Final = {code: _shown(chr(code)) for code in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if chr(code) not in _KEPT}


def inert(text: str) -> str:
    """``text`` with every control character but newline and tab shown, not obeyed."""
    return text.replace("\r\n", "\n").translate(_TABLE)


class LogWriter:
    """Writes an agent's output to ``out``: raw when ``raw`` (or not a terminal), else
    :func:`inert`, decoding UTF-8 across chunk boundaries (a character split between two reads
    of ``--follow`` is not garbled; invalid bytes show as U+FFFD)."""

    def __init__(self, out: BinaryIO, *, raw: bool | None = None) -> None:
        self.out = out
        self.raw = raw if raw is not None else not out.isatty()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._cr = False  # a CR ending the last chunk, held back: with a LF next it is a CRLF

    def write(self, data: bytes | str) -> None:
        if self.raw:
            self.out.write(data.encode() if isinstance(data, str) else data)
        else:
            text = ("\r" if self._cr else "") + (data if isinstance(data, str) else self._decoder.decode(data))
            self._cr = text.endswith("\r")
            if self._cr:
                text = text[:-1]
            self.out.write(inert(text).encode())
        self.out.flush()
