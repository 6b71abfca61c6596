"""Safety interlocks: a trigger puts actuators in a safe state, performed by the kernel itself.

An interlock is declared in config (``[interlocks.NAME]``, schema in docs/interlocks.md, parsed
by :mod:`clove.config.interlocks`)::

    [interlocks.estop]
    trigger = { device = "estop", match = { line = "estop", edge = "falling" } }
    actions = [
      { device = "motor_bus", op = "send", args = { id = 0x101, data = "hex:00000000" } },
      { restrict = "motor_bus", ops = ["recv"] },
      { pause = ["navigator"] },
    ]

Triggers: an item on a device's stream whose fields equal ``match`` (a GPIO edge, a CAN id);
an event on the bus (``{ event = "OBSTACLE" }``); a device's host lost (``{ device_lost =
"motor_bus" }``); and always the operator (``clove estop``). Actions: a device operation run by
the kernel (no agent grant applies to it), restricting every agent's grant on a device to the
listed operations, pausing or killing agents by name. An engaged interlock stays engaged, across
kernel restarts, until an operator releases it (``clove estop --release``). No agent can delay
it: the kernel performs it in its own loop, and a paused or hung agent is simply not consulted.
Each engagement is journaled with its measured latency: from the trigger (the stream item's own
timestamp, when it carries one) to each action's completion (the driver host's acknowledgement).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clove.config.interlocks import Action, InterlockSpec
from clove.errors import CloveError, Conflict, NotFound
from clove.kernel.audit.journal import Category
from clove.kernel.core.deferred import Deferred

if TYPE_CHECKING:
    from clove.kernel.services.devices.broker import DeviceBroker
    from clove.kernel.services.host import ServiceHost, ServiceRegistry

log = logging.getLogger(__name__)


class Interlocks:
    """The kernel's interlocks: watch triggers, engage, persist, release."""

    def __init__(self, kernel: ServiceHost, specs: tuple[InterlockSpec, ...], *, devices: DeviceBroker) -> None:
        self.kernel = kernel
        self.devices = devices
        self.specs = {s.name: s for s in specs}
        self.engaged: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self._path = Path(kernel.state_dir) / "interlocks.json"

    def start(self) -> None:
        broker = self.devices
        for spec in self.specs.values():
            if spec.trigger_device is not None:
                broker.runtime(spec.trigger_device).watchers.append(functools.partial(self._on_items, spec))
            if spec.trigger_device_lost is not None:
                broker.runtime(spec.trigger_device_lost).on_down.append(functools.partial(self._device_lost, spec))
            for device in {a.device for a in spec.actions if a.kind == "call" and a.device}:
                broker.runtime(device).on_up.append(functools.partial(self._device_up, spec, device))
        if self.specs:
            self.kernel.events.watchers.append(self._on_event)
        for name, record in self._load().items():  # engaged before a restart: still engaged
            if name in self.specs:
                self.engage(name, cause=f"still engaged from before the kernel restarted ({record.get('cause')})")

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({n: {"cause": r["cause"], "engaged_at": r["engaged_at"]} for n, r in self.engaged.items()}))
        tmp.replace(self._path)

    def _device_lost(self, spec: InterlockSpec, reason: str) -> None:
        self.engage(spec.name, cause=f"device {spec.trigger_device_lost} lost: {reason}")

    def _on_items(self, spec: InterlockSpec, items: list[Any]) -> None:
        if spec.name in self.engaged:
            return
        for item in items:
            if isinstance(item, dict) and all(item.get(k) == v for k, v in spec.match.items()):
                ts = item.get("ts")
                self.engage(spec.name, cause=f"{spec.trigger_device}: {spec.match}", trigger_ts=ts if isinstance(ts, float) else None)
                return

    def _on_event(self, event: dict[str, Any]) -> None:
        for spec in self.specs.values():
            if spec.trigger_event == event.get("type") and spec.name not in self.engaged:
                self.engage(spec.name, cause=f"event {spec.trigger_event}", trigger_ts=event.get("timestamp"))

    def engage(self, name: str, *, cause: str, trigger_ts: float | None = None, operator: bool = False) -> dict[str, Any]:
        """Perform the interlock's actions now (idempotent while engaged).

        :raises NotFound: no such interlock.
        """
        spec = self.specs.get(name)
        if spec is None:
            raise NotFound(f"no interlock {name!r} is configured", details={"interlock": name, "interlocks": sorted(self.specs)})
        if name in self.engaged:
            return self.engaged[name]
        now = time.time()
        record: dict[str, Any] = {
            "name": name,
            "cause": cause,
            "operator": operator,
            "trigger_ts": trigger_ts if trigger_ts is not None else now,
            "engaged_at": now,
            "actions": [],
        }
        self.engaged[name] = record
        for action in spec.actions:
            record["actions"].append(self._perform(record, action))
        self._save()
        self.kernel.events.emit("INTERLOCK_ENGAGED", {"interlock": name, "cause": cause})
        self._journal("interlock.engaged", record)
        log.warning("interlock %s engaged: %s", name, cause)
        return record

    def _perform(self, record: dict[str, Any], action: Action) -> dict[str, Any]:
        done: dict[str, Any] = {"action": action.describe(), "status": "pending"}
        broker = self.devices
        try:
            if action.kind == "call":
                assert action.device is not None and action.op is not None  # noqa: S101 - parsed so
                deferred = Deferred()
                deferred.bind(lambda result, error: self._acked(record, done, error))
                broker.runtime(action.device).call(action.op, action.args, deferred)
            elif action.kind == "restrict":
                assert action.device is not None  # noqa: S101
                broker.runtime(action.device).restrictions[record["name"]] = frozenset(action.ops)
                self._finish(record, done, None)
            else:
                supervisor = self.kernel.supervisor
                for agent in supervisor.table:
                    if agent.name in action.agents and agent.state.value == "running":
                        if action.kind == "pause":
                            supervisor.pause(agent)
                        else:
                            supervisor.kill(agent, operator=False)
                self._finish(record, done, None)
        except CloveError as err:
            self._finish(record, done, err)
        return done

    def _device_up(self, spec: InterlockSpec, device: str) -> None:
        """A device came (back) up while the interlock holds: put it in the safe state again,
        since a restarted driver knows nothing of the last command."""
        record = self.engaged.get(spec.name)
        if record is None:
            return
        for action in spec.actions:
            if action.kind == "call" and action.device == device:
                record["actions"].append(self._perform(record, action))
        self._journal("interlock.reapplied", {"name": spec.name, "device": device})

    def _acked(self, record: dict[str, Any], done: dict[str, Any], error: CloveError | None) -> None:
        self._finish(record, done, error)
        if all(a["status"] != "pending" for a in record["actions"]):
            self._journal("interlock.completed", record)

    def _finish(self, record: dict[str, Any], done: dict[str, Any], error: CloveError | None) -> None:
        done["status"] = "failed" if error is not None else "done"
        if error is not None:
            done["error"] = error.message
            log.error("interlock %s: %s failed: %s", record["name"], done["action"], error.message)
        done["latency_ms"] = round((time.time() - record["trigger_ts"]) * 1000, 3)

    def release(self, name: str) -> dict[str, Any]:
        """:raises NotFound: no such interlock. :raises Conflict: it is not engaged."""
        if name not in self.specs:
            raise NotFound(f"no interlock {name!r} is configured", details={"interlock": name})
        record = self.engaged.pop(name, None)
        if record is None:
            raise Conflict(f"interlock {name!r} is not engaged", details={"interlock": name})
        for runtime in self.devices.devices.values():
            runtime.restrictions.pop(name, None)
        self._save()
        record = {**record, "released_at": time.time()}
        self.history.append(record)
        self.kernel.events.emit("INTERLOCK_RELEASED", {"interlock": name})
        self._journal("interlock.released", record)
        return record

    def _journal(self, event: str, record: dict[str, Any]) -> None:
        self.kernel.journal.append(Category.SECURITY, event, decision="n/a", details=record)

    def views(self) -> list[dict[str, Any]]:
        out = []
        for spec in self.specs.values():
            trigger = (
                {"device": spec.trigger_device, "match": spec.match}
                if spec.trigger_device
                else {"event": spec.trigger_event} if spec.trigger_event else {"device_lost": spec.trigger_device_lost}
            )
            out.append({"name": spec.name, "engaged": spec.name in self.engaged, "state": self.engaged.get(spec.name), "trigger": trigger, "actions": [a.describe() for a in spec.actions]})
        return out


def attach(kernel: ServiceRegistry) -> None:
    interlocks = Interlocks(kernel, kernel.config.interlocks, devices=kernel.devices)
    kernel.interlocks = interlocks
    interlocks.start()
