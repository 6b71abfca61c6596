"""LogCapture: a real pipe drained into a size-capped file in tmp_path."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from clove.kernel.supervision.logs import LogCapture


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[LogCapture]:
    cap = LogCapture(tmp_path / "agent.log", max_bytes=100)
    yield cap
    cap.close()


def test_new_file_is_private_and_empty(capture: LogCapture) -> None:
    assert capture.path.read_bytes() == b""
    assert stat.S_IMODE(capture.path.stat().st_mode) == 0o600
    assert capture.read(0, 100) == (b"", 0, 0)
    assert capture.read_fd is None
    assert capture.drain() is False, "no pipe yet"


def test_reopening_appends(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    path.write_bytes(b"earlier run\n")
    cap = LogCapture(path, max_bytes=100)
    try:
        cap.write(b"now\n")
        assert path.read_bytes() == b"earlier run\nnow\n"
        assert cap.read(0, 100) == (b"earlier run\nnow\n", 16, 16)
    finally:
        cap.close()


def test_drain_copies_the_pipe_and_sees_eof(capture: LogCapture) -> None:
    w = capture.new_pipe()
    assert capture.read_fd is not None
    assert not os.get_blocking(capture.read_fd)
    assert capture.drain() is True, "nothing written yet: still open"
    os.write(w, b"hello ")
    os.write(w, b"world\n")
    assert capture.drain() is True
    assert capture.path.read_bytes() == b"hello world\n"
    os.write(w, b"bye\n")
    os.close(w)
    assert capture.drain() is False, "EOF once every writer is gone"
    assert capture.path.read_bytes() == b"hello world\nbye\n"
    assert capture.read(0, 1000) == (b"hello world\nbye\n", 16, 16)


def test_drain_is_bounded_per_call(tmp_path: Path) -> None:
    cap = LogCapture(tmp_path / "agent.log", max_bytes=1 << 30)
    try:
        w = cap.new_pipe()
        os.set_blocking(w, False)
        written = 0
        try:
            while True:
                written += os.write(w, b"x" * 65536)
        except BlockingIOError:
            pass
        assert cap.drain() is True
        assert cap.path.stat().st_size == written  # a pipe holds far less than 16 chunks
        os.close(w)
        assert cap.drain() is False
    finally:
        cap.close()


def test_new_pipe_drains_and_closes_the_old_one(capture: LogCapture) -> None:
    w1 = capture.new_pipe()
    os.write(w1, b"first\n")
    w2 = capture.new_pipe()
    assert capture.read_fd is not None
    assert capture.path.read_bytes() == b"first\n", "the old pipe was drained before closing"
    with pytest.raises(BrokenPipeError):
        os.write(w1, b"nobody reads this")
    os.close(w1)
    os.write(w2, b"second\n")
    os.close(w2)
    assert capture.drain() is False
    assert capture.path.read_bytes() == b"first\nsecond\n"


def test_close_pipe_drains_first(capture: LogCapture) -> None:
    w = capture.new_pipe()
    os.write(w, b"last words\n")
    capture.close_pipe()
    os.close(w)
    assert capture.read_fd is None
    assert capture.path.read_bytes() == b"last words\n"
    capture.close_pipe()  # twice is harmless


def test_size_cap_rotates_once(capture: LogCapture) -> None:
    rotated = capture.path.with_name("agent.log.1")
    capture.write(b"a" * 60)
    capture.write(b"b" * 40)  # exactly at the cap: no rotation
    assert not rotated.exists()
    capture.write(b"c" * 10)
    assert rotated.read_bytes() == b"a" * 60 + b"b" * 40
    assert capture.path.read_bytes() == b"c" * 10
    assert stat.S_IMODE(capture.path.stat().st_mode) == 0o600
    assert capture.read(0, 1000) == (b"c" * 10, 10, 10)
    capture.write(b"d" * 95)
    assert rotated.read_bytes() == b"c" * 10, "only one old generation is kept"
    assert capture.path.read_bytes() == b"d" * 95


def test_rotation_through_the_pipe(capture: LogCapture) -> None:
    w = capture.new_pipe()
    os.write(w, b"1" * 80)
    capture.drain()
    os.write(w, b"2" * 30)
    os.close(w)
    assert capture.drain() is False
    assert capture.path.with_name("agent.log.1").read_bytes() == b"1" * 80
    assert capture.path.read_bytes() == b"2" * 30


def test_read_from_an_offset(capture: LogCapture) -> None:
    capture.write(b"0123456789")
    assert capture.read(0, 4) == (b"0123", 4, 10)
    assert capture.read(4, 4) == (b"4567", 8, 10)
    assert capture.read(8, 4) == (b"89", 10, 10)
    assert capture.read(10, 4) == (b"", 10, 10), "at the end: nothing new yet"


def test_read_negative_offset_is_the_tail(capture: LogCapture) -> None:
    capture.write(b"0123456789")
    assert capture.read(-3, 100) == (b"789", 10, 10)
    assert capture.read(-3, 2) == (b"78", 9, 10)
    assert capture.read(-1000, 100) == (b"0123456789", 10, 10), "a tail longer than the file is the file"


def test_read_past_the_end_restarts_at_zero(capture: LogCapture) -> None:
    capture.write(b"x" * 90)
    follow = capture.read(0, 1000)[1]
    assert follow == 90
    capture.write(b"y" * 20)  # rotates: the follower's offset is now past the end
    assert capture.read(follow, 1000) == (b"y" * 20, 20, 20)


def test_write_error_is_logged_not_raised(capture: LogCapture, caplog: pytest.LogCaptureFixture) -> None:
    capture._file.close()
    capture._file = open(os.devnull, "rb", buffering=0)  # noqa: SIM115 - not writable: write() raises an OSError
    capture.write(b"lost")
    assert "cannot write" in caplog.text
    assert capture.read(0, 100) == (b"", 0, 0), "the size only counts bytes that were written"
