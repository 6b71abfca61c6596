"""A driver host's cgroup goes to the supervisor's discard after the host exits (a busy cgroup
is retried there rather than left behind), and a failure to discard never raises."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from clove.errors import SandboxError
from clove.kernel.services.devices.hostproc import HostProcess


def _host(discard: Any) -> HostProcess:
    spec = SimpleNamespace(name="bus")  # cleanup needs only the device's name
    return HostProcess(spec, 1,  # type: ignore[arg-type]
        endpoint="ipc:///nowhere", heartbeat=1.0, discard=discard)


def test_cleanup_hands_the_cgroup_to_discard_once() -> None:
    discarded: list[object] = []
    host = _host(discarded.append)
    cgroup = object()
    host.cgroup = cgroup  # type: ignore[assignment]
    host.cleanup()
    host.cleanup()
    assert discarded == [cgroup] and host.cgroup is None


def test_a_failing_discard_is_logged_not_raised() -> None:
    def broken(cgroup: object) -> None:
        raise SandboxError("cannot remove cgroup: permission denied")

    host = _host(broken)
    host.cgroup = object()  # type: ignore[assignment]
    host.cleanup()
    assert host.cgroup is None
