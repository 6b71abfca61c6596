"""Agent output on an operator's terminal is shown, not obeyed (clove.cli.terminal)."""

from __future__ import annotations

import io

import pytest

from clove.cli.terminal import LogWriter, inert

# What a hostile agent might print: set the clipboard (OSC 52), retitle the window, clear the
# screen, move the cursor up to overwrite a line, an 8-bit CSI, a bell and a backspace.
HOSTILE = "ok\n\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b]0;root@prod\x07\x1b[2J\x1b[1A\x9b31m\x08done\n"


class Terminal(io.BytesIO):
    def isatty(self) -> bool:
        return True


def test_control_characters_are_shown_and_lines_and_tabs_kept() -> None:
    shown = inert(HOSTILE)
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown and "\x08" not in shown
    assert shown == "ok\n^[]52;c;ZWNobyBwd25lZA==^G^[]0;root@prod^G^[[2J^[[1A\\x9b31m^Hdone\n"
    assert inert("a\tb\r\nc\rd\x7f") == "a\tb\nc^Md^?"
    assert inert("température: 21 °C ✓") == "température: 21 °C ✓"  # printable text is untouched


def test_a_terminal_gets_inert_text_and_a_pipe_the_bytes() -> None:
    tty, pipe = Terminal(), io.BytesIO()
    LogWriter(tty).write(HOSTILE.encode())
    LogWriter(pipe).write(HOSTILE.encode())
    assert b"\x1b" not in tty.getvalue() and tty.getvalue().startswith(b"ok\n^[]52;")
    assert pipe.getvalue() == HOSTILE.encode()
    raw = Terminal()
    LogWriter(raw, raw=True).write(HOSTILE)  # --raw: as the agent wrote it, even on a terminal
    assert raw.getvalue() == HOSTILE.encode()


@pytest.mark.parametrize("cut", range(1, 8))
def test_characters_and_crlf_split_between_reads_come_out_whole(cut: int) -> None:
    data = "é✓\r\nx\ry".encode()
    tty = Terminal()
    writer = LogWriter(tty)
    writer.write(data[:cut])
    writer.write(data[cut:])
    assert tty.getvalue().decode() == "é✓\nx^My"


def test_invalid_utf8_shows_as_replacement_characters() -> None:
    tty = Terminal()
    LogWriter(tty).write(b"a\xff\xfeb\x1b")
    assert tty.getvalue().decode() == "a\ufffd\ufffdb^["
