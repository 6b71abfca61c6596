"""Starting an agent after its devices, like systemd's ``After=`` and ``Requires=``.

An agent that holds grants on devices is started (first start and every restart) once all of
those devices are ``ready``, or when its ``device_timeout`` expires; then its ``device_wait``
policy decides: ``start`` anyway (its device calls get ``device.unavailable`` until the device
is up), or ``fail`` the start with the devices and their states as the reason. The agent stays
``starting`` meanwhile; nothing blocks the loop: the device broker calls back.

Supervision sits below the services, so it does not know the broker: the broker hands it a
:class:`DeviceGate` at attach. Without one (no ``[devices]``) agents start at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from clove.kernel.core.agents import Agent, AgentState

if TYPE_CHECKING:
    from clove.kernel.supervision.supervisor import Supervisor

S = AgentState

#: Called with the devices still not ready (name → state and last error); empty: all ready.
ReadyCallback = Callable[[dict[str, str]], None]


class DeviceGate(Protocol):
    """What the supervisor asks of the device broker about readiness."""

    def not_ready(self, names: Sequence[str]) -> dict[str, str]:
        """Each named device that is not ``ready`` now → its state (and last error)."""

    def when_ready(self, names: Sequence[str], timeout: float, done: ReadyCallback) -> Callable[[], None]:
        """Call ``done({})`` once every named device is ready, or ``done(not_ready)`` after
        ``timeout`` seconds; never before returning. Returns a cancel (``done`` is not called)."""


class DeviceWait:
    """Holds each start of an agent until its devices are ready, for the :class:`~.supervisor.Supervisor`."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.gate: DeviceGate | None = None

    def start(self, agent: Agent) -> None:
        """Start the agent's next incarnation now, or once its devices are ready."""
        sup = self.sup
        names = sorted(agent.spec.devices)
        missing = self.gate.not_ready(names) if self.gate is not None and names else {}
        if self.gate is None or not missing:
            sup.starter.start(agent)
            return
        spec = agent.spec
        since = time.monotonic()
        sup.event("agent.waiting_for_devices", agent, devices=missing, timeout=spec.device_timeout, then=spec.device_wait)
        sup.runtimes[agent.id].device_wait = self.gate.when_ready(names, spec.device_timeout, lambda left: self._done(agent, left, since))

    def waiting(self, agent: Agent) -> bool:
        rt = self.sup.runtimes.get(agent.id)
        return rt is not None and rt.device_wait is not None

    def cancel(self, agent: Agent) -> None:
        """Stop waiting (the agent is being stopped); its start will not happen."""
        rt = self.sup.runtimes.get(agent.id)
        if rt is not None and rt.device_wait is not None:
            cancel, rt.device_wait = rt.device_wait, None
            cancel()

    def _done(self, agent: Agent, missing: dict[str, str], since: float) -> None:
        sup = self.sup
        rt = sup.runtimes.get(agent.id)
        if rt is None or rt.device_wait is None or agent.state is not S.STARTING:
            return
        rt.device_wait = None
        waited = round(time.monotonic() - since, 3)
        if not missing:
            sup.event("agent.devices_ready", agent, waited_s=waited)
            sup.starter.start(agent)
            return
        policy = agent.spec.device_wait
        sup.event("agent.devices_not_ready", agent, devices=missing, waited_s=waited, then=policy)
        if policy == "start":
            sup.starter.start(agent)
            return
        states = ", ".join(f"{name} ({state})" for name, state in sorted(missing.items()))
        sup.starter.fail(agent, f"devices not ready after {agent.spec.device_timeout:g} s: {states}")
