"""The devices' readiness as the supervisor asks about it before starting an agent (the
:class:`~clove.kernel.supervision.devicewait.DeviceGate` the broker hands it): which of an
agent's devices are not ``ready``, and a call back once they all are, or at a timeout."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clove.kernel.core.loop import Loop
    from clove.kernel.services.devices.runtime import DeviceRuntime
    from clove.kernel.supervision.devicewait import ReadyCallback


class Readiness:
    def __init__(self, devices: dict[str, DeviceRuntime], loop: Loop) -> None:
        self.devices = devices
        self.loop = loop

    def not_ready(self, names: Sequence[str]) -> dict[str, str]:
        """Each named device that is not ``ready`` → ``"starting"``, ``"down: open failed: ..."``.
        A name that is not configured is skipped: there is nothing to wait for."""
        out: dict[str, str] = {}
        for name in names:
            runtime = self.devices.get(name)
            if runtime is not None and runtime.state != "ready":
                out[name] = f"{runtime.state}: {runtime.last_error}" if runtime.last_error else runtime.state
        return out

    def when_ready(self, names: Sequence[str], timeout: float, done: ReadyCallback) -> Callable[[], None]:
        """Call ``done({})`` once every named device is ready, else ``done(not ready)`` after
        ``timeout`` seconds. Returns a cancel."""
        return _Wait(self, list(names), timeout, done).cancel


class _Wait:
    """One start waiting: a check on every ``up`` of its devices, and a timer."""

    def __init__(self, readiness: Readiness, names: list[str], timeout: float, done: ReadyCallback) -> None:
        self.readiness = readiness
        self.names = names
        self.done: ReadyCallback | None = done
        self.runtimes = [r for n in names if (r := readiness.devices.get(n)) is not None]
        self.timer = readiness.loop.call_later(timeout, self._expire)
        for runtime in self.runtimes:
            runtime.on_up.append(self._check)

    def _check(self) -> None:
        if not self.readiness.not_ready(self.names):
            self._finish({})

    def _expire(self) -> None:
        self._finish(self.readiness.not_ready(self.names))

    def _finish(self, missing: dict[str, str]) -> None:
        done = self.done
        self.cancel()
        if done is not None:
            done(missing)

    def cancel(self) -> None:
        if self.done is None:
            return
        self.done = None
        self.timer.cancel()
        for runtime in self.runtimes:
            runtime.on_up.remove(self._check)
