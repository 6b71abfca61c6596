"""clove.kernel.services.devices.readiness: what the supervisor waits on before starting an agent
with device grants: a call back once every device is up, or the laggards at the timeout."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from clove.kernel.services.devices.readiness import Readiness
from clove.kernel.services.devices.runtime import DeviceRuntime


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """``call_later`` only; the test moves time and fires what is due."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in [t for t in self.timers if t.when <= self.now and not t.cancelled]:
            timer.cancelled = True
            timer.callback()


class FakeBroker:
    def __init__(self, loop: FakeLoop) -> None:
        self.loop, self.stopping = loop, False

    def record(self, *args: Any, **kwargs: Any) -> None:
        pass

    def emit(self, *args: Any, **kwargs: Any) -> None:
        pass


def devices(*names: str) -> tuple[FakeLoop, dict[str, DeviceRuntime]]:
    loop = FakeLoop()
    broker = FakeBroker(loop)
    out = {n: DeviceRuntime(SimpleNamespace(name=n), broker) for n in names}  # type: ignore[arg-type]
    for runtime in out.values():
        runtime.state = "starting"
    return loop, out


def test_not_ready_names_state_and_last_error_and_skips_unknown_names() -> None:
    loop, devs = devices("a", "b")
    devs["b"].state, devs["b"].last_error = "down", "open failed: no such port"
    gate = Readiness(devs, loop)  # type: ignore[arg-type]
    assert gate.not_ready(["a", "b", "nope"]) == {"a": "starting", "b": "down: open failed: no such port"}
    devs["a"]._up()
    assert gate.not_ready(["a"]) == {}


def test_done_once_the_last_device_is_up_and_every_hook_removed() -> None:
    loop, devs = devices("a", "b")
    gate = Readiness(devs, loop)  # type: ignore[arg-type]
    calls: list[dict[str, str]] = []
    other: list[str] = []
    gate.when_ready(["a", "b"], 10.0, calls.append)
    devs["b"].on_up.append(lambda: other.append("b up"))  # a hook after ours, which removes itself
    devs["a"]._up()
    assert calls == []
    devs["b"]._up()
    assert calls == [{}] and other == ["b up"]
    assert devs["a"].on_up == [] and len(devs["b"].on_up) == 1
    assert loop.timers[0].cancelled
    loop.advance(20)
    assert calls == [{}]  # once only


def test_timeout_reports_what_is_not_ready_and_cancel_calls_nothing() -> None:
    loop, devs = devices("a", "b")
    gate = Readiness(devs, loop)  # type: ignore[arg-type]
    calls: list[dict[str, str]] = []
    gate.when_ready(["a", "b"], 5.0, calls.append)
    devs["a"]._up()
    loop.advance(5)
    assert calls == [{"b": "starting"}]
    assert devs["a"].on_up == devs["b"].on_up == []

    cancel = gate.when_ready(["b"], 5.0, calls.append)
    cancel()
    devs["b"]._up()
    loop.advance(10)
    assert calls == [{"b": "starting"}] and devs["b"].on_up == []
