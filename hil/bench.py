"""Bench files: which simulated devices stand in for a deployment's devices, the fault plan,
and the assertions. ``load_bench(path)`` validates everything at load and names the file, the
table and the key of the first problem (``hil/benches/rover.toml: [[faults]][2].share: must be
0..1``). The schema is documented in docs/hil.md.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from clove.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Simulator kinds and the keys each takes (beyond ``kind``), with their types and defaults.
SIM_KINDS: Final[dict[str, dict[str, tuple[type | tuple[type, ...], Any]]]] = {
    # interface "simbus" (a hub in the harness, every fault knob) or "socketcan" (a real interface,
    # `channel`, made as a vcan when missing; docs/hil.md "On a Linux board").
    "can_bus": {"wire": (str, None), "record": (bool, True), "log": (str, "bus.asc"), "interface": (str, "simbus"), "channel": (str, None)},
    "motor_controller": {"bus": (str, None)},
    "nmea_gps": {"wire": (str, None), "rate_hz": ((int, float), 5.0), "baudrate": (int, 9600)},
    "command_device": {"wire": (str, None)},
    # backend "userspace" (served on a UNIX socket) or "gpio-sim" (a kernel chip: a real /dev/gpiochipN).
    "gpio_chip": {"wire": (str, None), "lines": (dict, None), "outputs": (list, []), "active_low": (list, []), "backend": (str, "userspace")},
    # A FIX 4.4 venue (hil.exchange): symbols = { ACME = 100.0 }, credentials = { CLOVE = "secret" }.
    "fix_venue": {"wire": (str, None), "symbols": (dict, None), "credentials": (dict, {"CLOVE": "secret"}), "seed": (int, 1), "liquidity": (bool, True)},
}
#: Fault kinds: the simulator kind they act on ("" for the kernel) and their keys.
FAULT_KINDS: Final[dict[str, tuple[str, dict[str, tuple[type | tuple[type, ...], Any]]]]] = {
    "can_drop": ("can_bus", {"share": ((int, float), None), "for": ((int, float), None)}),
    "can_delay": ("can_bus", {"ms": ((int, float), None), "for": ((int, float), None)}),
    "can_error_frames": ("can_bus", {"count": (int, 1)}),
    "can_bus_off": ("can_bus", {"for": ((int, float), None)}),
    # Play a recorded session (a python-can log: .asc, .blf, .log) onto the bus, timestamps kept.
    "can_replay": ("can_bus", {"log": (str, None), "speed": ((int, float), 1.0)}),
    "serial_garbage": ("nmea_gps", {"bytes": (int, 64)}),
    "serial_corrupt": ("nmea_gps", {"count": (int, 3)}),
    "serial_disconnect": ("nmea_gps", {"for": ((int, float), None)}),
    "gpio_press": ("gpio_chip", {"line": (str, None)}),
    "gpio_release": ("gpio_chip", {"line": (str, None)}),
    "gpio_toggle": ("gpio_chip", {"line": (str, None)}),
    "gpio_stuck": ("gpio_chip", {"line": (str, None), "level": (int, None), "for": ((int, float), None)}),
    "venue_reject": ("fix_venue", {"count": (int, 1)}),
    "venue_disconnect": ("fix_venue", {}),
    "venue_latency": ("fix_venue", {"ms": ((int, float), None), "for": ((int, float), None)}),
    "venue_throttle": ("fix_venue", {"rate": ((int, float), None), "for": ((int, float), None)}),
    # The kill switch (an operator's `clove trading halt`); `state` REDUCING or ACTIVE also work.
    "trading_state": ("", {"device": (str, None), "state": (str, "HALTED")}),
    "kill_driver_host": ("", {"device": (str, None)}),
    "kill_agent": ("", {"agent": (str, None)}),
    "release_interlock": ("", {"interlock": (str, None)}),
}
ASSERTION_KINDS: Final[dict[str, dict[str, tuple[type | tuple[type, ...], Any]]]] = {
    # A frame with this id (and data) on the bus within `within_ms` of a named fault.
    "frame_after": {"after": (str, None), "bus": (str, None), "id": (int, None), "data": (str, None), "within_ms": ((int, float), None)},
    # No frame an agent sent (journaled device.call send) outside the ids.
    "frames_within": {"agent": (str, None), "device": (str, None), "ids": (list, None)},
    "restarts": {"agent": (str, None), "min": (int, 0), "max": (int, 1_000_000)},
    "exit_reason": {"agent": (str, None), "reason": (str, None), "min": (int, 1)},
    "denied": {"agent": (str, None), "syscall": (str, None), "device": (str, None), "min": (int, 1)},
    "interlock": {"interlock": (str, None), "engaged": (bool, True), "max_latency_ms": ((int, float), None)},
    "throttled": {"agent": (str, None), "min_periods": (int, 1)},
    "event": {"type": (str, None), "min": (int, 1)},
    "device_restarts": {"device": (str, None), "min": (int, 0), "max": (int, 1_000_000)},
    "state_key": {"key": (str, None), "scope": (str, "global")},
    "journal_verified": {},
    "motor_stopped": {"sim": (str, None), "after": (str, None), "within_ms": ((int, float), None)},
    # An agent's log (stdout and stderr) has a line containing `text`.
    "log_contains": {"agent": (str, None), "text": (str, None)},
    # From the journal: an agent's submit_order calls accepted and refused (risk or grant).
    "trading": {"agent": (str, None), "min_accepted": (int, 0), "min_refused": (int, 0), "max_accepted": (int, None)},
    "venue_open_orders": {"sim": (str, None), "max": (int, 0)},
    # The JSON an agent printed after "REPORT ": every entry's `field` equals `equals`.
    "agent_report": {"agent": (str, None), "field": (str, None), "equals": (str, None)},
    # Each reason (a risk check's name, e.g. "max_position") led at least one journaled refusal.
    "refusal_reasons": {"agent": (str, None), "reasons": (list, None)},
}
_OPTIONAL: Final = {"data", "device", "syscall", "max_latency_ms", "for", "after", "within_ms", "max_accepted", "wire", "channel"}
#: Faults only the simbus hub can make: a real interface has no knob for them.
HUB_FAULTS: Final = frozenset({"can_delay", "can_error_frames", "can_bus_off"})
#: What `time_scale` multiplies: the schedule (duration, ready_timeout, each fault's `at` and
#: `for`) and the assertions' time limits, so a machine N times slower keeps their meaning.
SCALED_FAULT_KEYS: Final = ("for",)
SCALED_ASSERTION_KEYS: Final = ("within_ms", "max_latency_ms")


@dataclass(frozen=True, slots=True)
class SimSpec:
    name: str
    kind: str
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FaultSpec:
    index: int
    at: float
    kind: str
    sim: str | None
    name: str
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AssertionSpec:
    index: int
    kind: str
    name: str
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Bench:
    path: Path
    name: str
    deployment: Path
    duration: float
    ready_timeout: float
    sims: dict[str, SimSpec]
    faults: tuple[FaultSpec, ...]
    assertions: tuple[AssertionSpec, ...]
    devices: dict[str, str] = field(default_factory=dict)  # deployment device → sim wired to it
    time_scale: float = 1.0  # already applied to the times above; kept for the report


def _fail(source: Path, where: str, key: str, message: str) -> ConfigError:
    label = where if where.startswith("[[") else f"[{where}]"  # array items: [[faults]][2]
    return ConfigError(f"{source}: {label}{'.' + key if key else ''}: {message}", details={"table": where, "key": key})


def _typed(source: Path, where: str, data: dict[str, Any], schema: dict[str, tuple[type | tuple[type, ...], Any]], skip: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    unknown = sorted(set(data) - set(schema) - skip)
    if unknown:
        known = ", ".join(sorted(set(schema) | skip))
        raise _fail(source, where, unknown[0], f"unknown key (known: {known})")
    for key, (kind, default) in schema.items():
        if key not in data:
            if default is None and key not in _OPTIONAL:
                raise _fail(source, where, key, "required")
            out[key] = default
            continue
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join({int: "int", float: "number", str: "string", bool: "bool", list: "array", dict: "table"}[k] for k in kinds)
            raise _fail(source, where, key, f"expected {names}, got {type(value).__name__} {value!r}")
        out[key] = value
    return out


def load_bench(path: str | os.PathLike[str], *, time_scale: float | None = None) -> Bench:
    """:param time_scale: overrides the file's ``[bench].time_scale`` (a slower machine's factor).
    :raises ConfigError: naming the file, table and key."""
    source = Path(path)
    try:
        raw = tomllib.loads(source.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: invalid TOML: {err}") from None
    unknown = sorted(set(raw) - {"bench", "sims", "faults", "assertions"})
    if unknown:
        raise ConfigError(f"{source}: [{unknown[0]}]: unknown table (known: assertions, bench, faults, sims)")
    head = raw.get("bench")
    if not isinstance(head, dict):
        raise _fail(source, "bench", "", "required: a [bench] table with deployment and duration")
    b = _typed(source, "bench", head, {"name": (str, source.stem), "deployment": (str, None), "duration": ((int, float), None), "ready_timeout": ((int, float), 30.0), "time_scale": ((int, float), 1.0)}, set())
    deployment = (source.parent / b["deployment"]).resolve()
    if not deployment.is_file():
        raise _fail(source, "bench", "deployment", f"no such file: {deployment}")
    if not b["duration"] > 0:
        raise _fail(source, "bench", "duration", "must be positive")
    scale = float(b["time_scale"] if time_scale is None else time_scale)
    if not scale > 0:
        raise _fail(source, "bench", "time_scale", f"must be positive, got {scale:g}")
    sims = _sims(source, raw.get("sims", {}))
    devices = {s.options["wire"]: s.name for s in sims.values() if s.options.get("wire")}
    faults = _faults(source, raw.get("faults", []), sims, float(b["duration"]))
    assertions = _assertions(source, raw.get("assertions", []), sims, {f.name for f in faults})
    return Bench(
        path=source.resolve(),
        name=str(b["name"]),
        deployment=deployment,
        duration=float(b["duration"]) * scale,
        ready_timeout=float(b["ready_timeout"]) * scale,
        sims=sims,
        faults=tuple(replace(f, at=f.at * scale, options=_scaled(f.options, SCALED_FAULT_KEYS, scale)) for f in faults),
        assertions=tuple(replace(a, options=_scaled(a.options, SCALED_ASSERTION_KEYS, scale)) for a in assertions),
        devices=devices,
        time_scale=scale,
    )


def _scaled(options: dict[str, Any], keys: tuple[str, ...], scale: float) -> dict[str, Any]:
    return {k: v * scale if k in keys and v is not None and scale != 1 else v for k, v in options.items()}


def _sims(source: Path, tables: Any) -> dict[str, SimSpec]:
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: [sims]: expected a table of simulator tables")
    sims: dict[str, SimSpec] = {}
    for name, data in tables.items():
        where = f"sims.{name}"
        if not isinstance(data, dict):
            raise _fail(source, where, "", "expected a table")
        kind = data.get("kind")
        if kind not in SIM_KINDS:
            raise _fail(source, where, "kind", f"expected one of {', '.join(SIM_KINDS)}; got {kind!r}")
        options = _typed(source, where, data, SIM_KINDS[kind], {"kind"})
        if kind == "motor_controller":
            bus = tables.get(options["bus"])
            if not isinstance(bus, dict) or bus.get("kind") != "can_bus":
                raise _fail(source, where, "bus", f"expected the name of a can_bus simulator, got {options['bus']!r}")
        if kind == "gpio_chip" and not all(isinstance(v, int) for v in options["lines"].values()):
            raise _fail(source, where, "lines", "expected a table of line name = offset")
        if kind == "gpio_chip" and options["backend"] not in ("userspace", "gpio-sim"):
            raise _fail(source, where, "backend", f"expected userspace or gpio-sim, got {options['backend']!r}")
        if kind == "can_bus" and options["interface"] not in ("simbus", "socketcan"):
            raise _fail(source, where, "interface", f"expected simbus or socketcan, got {options['interface']!r}")
        if kind == "can_bus" and options["interface"] == "socketcan" and not options["channel"]:
            raise _fail(source, where, "channel", 'required with interface = "socketcan" (e.g. "vcan0")')
        sims[name] = SimSpec(name, kind, options)
    return sims


def _faults(source: Path, items: Any, sims: dict[str, SimSpec], duration: float) -> tuple[FaultSpec, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{source}: [[faults]]: expected an array of tables")
    out = []
    for i, data in enumerate(items):
        where = f"[[faults]][{i}]"
        if not isinstance(data, dict):
            raise _fail(source, where, "", "expected a table")
        kind = data.get("kind")
        if kind not in FAULT_KINDS:
            raise _fail(source, where, "kind", f"expected one of {', '.join(FAULT_KINDS)}; got {kind!r}")
        sim_kind, schema = FAULT_KINDS[kind]
        options = _typed(source, where, data, schema, {"kind", "at", "sim", "name"})
        at = data.get("at")
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not 0 <= at < duration:
            raise _fail(source, where, "at", f"expected seconds within the bench's duration (0..{duration:g}), got {at!r}")
        sim = data.get("sim")
        if sim_kind and (sim not in sims or sims[sim].kind != sim_kind):
            names = [s.name for s in sims.values() if s.kind == sim_kind]
            raise _fail(source, where, "sim", f"expected the name of a {sim_kind} simulator ({', '.join(names) or 'none defined'}), got {sim!r}")
        if kind in HUB_FAULTS and sim in sims and sims[sim].options["interface"] != "simbus":
            raise _fail(source, where, "kind", f"{kind} needs a simbus bus; {sim!r} is a real interface (faults there: can_drop, can_replay)")
        if kind == "can_drop" and not 0 <= options["share"] <= 1:
            raise _fail(source, where, "share", "must be 0..1")
        if kind == "can_replay":
            log = (source.parent / options["log"]).resolve()
            if not log.is_file():
                raise _fail(source, where, "log", f"no such file: {log}")
            if not options["speed"] > 0:
                raise _fail(source, where, "speed", "must be positive")
            options["log"] = str(log)
        if "line" in options and sim is not None and options["line"] not in sims[sim].options["lines"]:
            raise _fail(source, where, "line", f"the chip {sim!r} has no line {options['line']!r}")
        name = data.get("name", f"{kind}#{i}")
        if not isinstance(name, str):
            raise _fail(source, where, "name", "expected a string")
        out.append(FaultSpec(i, float(at), kind, sim, name, options))
    return tuple(sorted(out, key=lambda f: f.at))


def _assertions(source: Path, items: Any, sims: dict[str, SimSpec], faults: set[str]) -> tuple[AssertionSpec, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{source}: [[assertions]]: expected an array of tables")
    out = []
    for i, data in enumerate(items):
        where = f"[[assertions]][{i}]"
        if not isinstance(data, dict):
            raise _fail(source, where, "", "expected a table")
        kind = data.get("kind")
        if kind not in ASSERTION_KINDS:
            raise _fail(source, where, "kind", f"expected one of {', '.join(ASSERTION_KINDS)}; got {kind!r}")
        options = _typed(source, where, data, ASSERTION_KINDS[kind], {"kind", "name"})
        after = options.get("after")
        if after is not None and after not in faults:
            raise _fail(source, where, "after", f"no fault named {after!r} (faults: {', '.join(sorted(faults)) or 'none'})")
        for key in ("bus", "sim"):
            if key in options and options[key] not in sims:
                raise _fail(source, where, key, f"no simulator {options[key]!r}")
        if options.get("data") is not None:
            text = options["data"]
            try:
                options["data"] = bytes.fromhex(text[4:] if text.startswith("hex:") else text)
            except ValueError:
                raise _fail(source, where, "data", f"expected hex bytes like \"hex:00000000\", got {text!r}") from None
        name = data.get("name", f"{kind}#{i}")
        out.append(AssertionSpec(i, kind, str(name), options))
    return tuple(out)
