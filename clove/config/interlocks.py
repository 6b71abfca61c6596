"""``[interlocks.NAME]`` tables, parsed at config load into :class:`InterlockSpec` (schema in
docs/interlocks.md)::

    [interlocks.estop]
    trigger = { device = "estop", match = { line = "estop", edge = "falling" } }
    actions = [
      { device = "motor_bus", op = "send", args = { id = 0x101, data = "hex:00000000" } },
      { restrict = "motor_bus", ops = ["recv"] },
      { pause = ["navigator"] },
    ]

Each trigger and action is checked against the configured devices: a device operation must
exist in its driver and its ``args`` must parse. The kernel performs them
(:mod:`clove.kernel.services.interlocks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clove.config.devices import DeviceSpec
from clove.errors import ConfigError, InvalidArguments

__all__ = ["Action", "InterlockSpec", "parse_interlocks"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    kind: str  # "call", "restrict", "pause", "kill"
    device: str | None = None
    op: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    ops: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "call":
            return f"{self.device}.{self.op}"
        if self.kind == "restrict":
            return f"restrict {self.device} to {list(self.ops)}"
        return f"{self.kind} {', '.join(self.agents)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class InterlockSpec:
    name: str
    trigger_device: str | None = None
    match: dict[str, Any] = field(default_factory=dict)
    trigger_event: str | None = None
    trigger_device_lost: str | None = None
    actions: tuple[Action, ...] = ()


def _value(text: Any) -> Any:
    """Config values for device operations: ``"hex:00ff"`` is bytes (TOML has no bytes type)."""
    if isinstance(text, str) and text.startswith("hex:"):
        try:
            return bytes.fromhex(text[4:])
        except ValueError:
            raise ValueError(f"bad hex bytes {text!r}") from None
    if isinstance(text, dict):
        return {k: _value(v) for k, v in text.items()}
    return text


def parse_interlocks(source: str, raw: dict[str, Any], devices: dict[str, DeviceSpec]) -> tuple[InterlockSpec, ...]:
    """``[interlocks.NAME]`` tables.

    :raises ConfigError: naming the file, table and key.
    """
    tables = raw.get("interlocks", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: [interlocks]: expected a table of interlock tables")
    return tuple(_interlock(source, name, data, devices) for name, data in tables.items())


def _interlock(source: str, name: str, data: Any, devices: dict[str, DeviceSpec]) -> InterlockSpec:
    where = f"interlocks.{name}"

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: [{where}]{'.' + key if key else ''}: {message}", details={"table": where, "key": key})

    if not isinstance(data, dict):
        raise fail("", "expected a table")
    unknown = sorted(set(data) - {"trigger", "actions"})
    if unknown:
        raise fail(unknown[0], "unknown key (known: actions, trigger)")
    trigger = data.get("trigger")
    if not isinstance(trigger, dict) or len(set(trigger) & {"device", "event", "device_lost"}) != 1:
        raise fail("trigger", 'expected one of { device = "...", match = {...} }, { event = "..." }, { device_lost = "..." }')
    spec: dict[str, Any] = {"name": name}
    if "device" in trigger:
        device = trigger["device"]
        if device not in devices:
            raise fail("trigger.device", f"no device {device!r} is configured")
        if devices[device].driver_class.stream is None:
            raise fail("trigger.device", f"device {device!r} has no stream to watch")
        match = trigger.get("match", {})
        if not isinstance(match, dict) or not match:
            raise fail("trigger.match", "expected a table of item fields to match, e.g. { line = \"estop\", edge = \"falling\" }")
        extra = sorted(set(trigger) - {"device", "match"})
        if extra:
            raise fail(f"trigger.{extra[0]}", "unknown key (known: device, match)")
        spec.update(trigger_device=device, match=dict(match))
    elif "event" in trigger:
        if not isinstance(trigger["event"], str) or len(trigger) != 1:
            raise fail("trigger.event", "expected { event = \"EVENT_TYPE\" }")
        spec["trigger_event"] = trigger["event"]
    else:
        lost = trigger["device_lost"]
        if lost not in devices or len(trigger) != 1:
            raise fail("trigger.device_lost", f"no device {lost!r} is configured")
        spec["trigger_device_lost"] = lost
    actions = data.get("actions", [])
    if not isinstance(actions, list) or not actions:
        raise fail("actions", "expected a non-empty array of action tables")
    spec["actions"] = tuple(_action(fail, i, a, devices) for i, a in enumerate(actions))
    return InterlockSpec(**spec)


def _action(fail: Any, i: int, data: Any, devices: dict[str, DeviceSpec]) -> Action:
    key = f"actions[{i}]"
    if not isinstance(data, dict):
        raise fail(key, "expected a table")
    if "op" in data:
        device, op = data.get("device"), data["op"]
        if device not in devices:
            raise fail(f"{key}.device", f"no device {device!r} is configured")
        cls = devices[device].driver_class
        spec = cls.operations().get(op)
        if spec is None:
            raise fail(f"{key}.op", f"driver {devices[device].driver!r} has no operation {op!r}")
        args = data.get("args", {})
        extra = sorted(set(data) - {"device", "op", "args"})
        if extra:
            raise fail(f"{key}.{extra[0]}", "unknown key (known: args, device, op)")
        try:
            converted = _value(args)
            cls.parse_args(spec, converted)
        except (ValueError, InvalidArguments) as err:
            raise fail(f"{key}.args", str(err)) from None
        return Action(kind="call", device=device, op=op, args=converted)
    if "restrict" in data:
        device, ops = data["restrict"], data.get("ops", [])
        if device not in devices:
            raise fail(f"{key}.restrict", f"no device {device!r} is configured")
        if not isinstance(ops, list) or not all(o in devices[device].driver_class.grant_ops() for o in ops):
            raise fail(f"{key}.ops", f"expected operations of {device!r}: {', '.join(devices[device].driver_class.grant_ops())}")
        return Action(kind="restrict", device=device, ops=tuple(ops))
    for kind in ("pause", "kill"):
        if kind in data:
            names = data[kind]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(data) != 1:
                raise fail(f"{key}.{kind}", "expected an array of agent names")
            return Action(kind=kind, agents=tuple(names))
    raise fail(key, "expected an action: { device, op, args }, { restrict, ops }, { pause = [...] } or { kill = [...] }")
