"""The kernel hands its free C heap back once a minute (clove.kernel.services.memtrim)."""

from __future__ import annotations

import platform
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from clove.kernel.services import memtrim


class FakeLoop:
    def __init__(self) -> None:
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.timers.append((delay, callback))


glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


@glibc
def test_malloc_trim_is_found_and_callable() -> None:
    trim = memtrim.malloc_trim()
    assert trim is not None
    assert trim(0) in (0, 1)


@glibc
def test_the_kernel_trims_every_interval_and_keeps_ticking() -> None:
    real = memtrim.malloc_trim()
    assert real is not None
    calls: list[int] = []
    loop = FakeLoop()
    memtrim.attach(SimpleNamespace(loop=loop), trim=lambda pad: calls.append(pad) or real(pad))  # type: ignore[arg-type]
    assert [delay for delay, _ in loop.timers] == [memtrim.INTERVAL_S]
    for turn in range(3):
        _, tick = loop.timers.pop()
        tick()
        assert calls == [0] * (turn + 1)
        assert [delay for delay, _ in loop.timers] == [memtrim.INTERVAL_S]  # re-armed


def test_a_failing_trim_does_not_end_the_ticks() -> None:
    loop = FakeLoop()

    def broken(pad: int) -> int:
        raise OSError("trim failed")

    memtrim.attach(SimpleNamespace(loop=loop), trim=broken)  # type: ignore[arg-type]
    _, tick = loop.timers.pop()
    with pytest.raises(OSError, match="trim failed"):
        tick()
    assert len(loop.timers) == 1
