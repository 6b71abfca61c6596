"""``clove devices``, ``clove device`` and ``clove run``: the device half of the control plane."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from clove.cli import render
from clove.errors import CloveError, ConfigError


def devices_table(devices: list[dict[str, Any]]) -> str:
    rows = []
    for d in devices:
        c = d.get("counters", {})
        traffic = f"{c.get('items_in', 0)} items" if d.get("stream") == "items" else f"{render.human_bytes(c.get('bytes_in', 0))}"
        rows.append(
            [
                d["name"],
                d["driver"],
                d["state"],
                d.get("host_pid"),
                d.get("restarts", 0),
                d.get("subscribers", 0),
                c.get("calls", 0),
                traffic if d.get("stream") else "-",
                c.get("delivered", 0),
                c.get("dropped", 0),
                c.get("denied", 0),
                c.get("errors", 0),
                (d.get("last_error") or "")[:60] if d["state"] != "ready" else "",
            ]
        )
    headers = ["NAME", "DRIVER", "STATE", "HOST PID", "RESTARTS", "SUBS", "CALLS", "IN", "DELIVERED", "DROPPED", "DENIED", "ERRORS", "LAST ERROR"]
    return render.table(headers, rows)


def parse_value(text: str) -> Any:
    """An argument value from the command line: ``0x101`` and ``17`` are ints, ``hex:0a0b`` and
    ``b:text`` are bytes, JSON (``true``, ``[1,2]``, ``{"a":1}``) is JSON, anything else a string."""
    if text.startswith("hex:"):
        return bytes.fromhex(text[4:])
    if text.startswith("b:"):
        return text[2:].encode()
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def call_args(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs → arguments.

    :raises ValueError: a pair without ``=`` or a bad ``hex:`` value.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {pair!r}")
        try:
            out[key] = parse_value(value)
        except ValueError:
            raise ValueError(f"{key}: bad hex bytes {value!r}") from None
    return out


def describe_driver(kind: str) -> dict[str, Any]:
    """A driver's config keys, grant keys, operations and stream, from its plugin (no kernel).

    :raises ConfigError: the plugin is not installed or does not provide ``kind``.
    """
    from clove.drivers.registry import load_drivers
    from clove.drivers.schema import fields_doc

    registry = load_drivers([kind])
    if kind not in registry:
        raise ConfigError(f"plugin {kind!r} provides {', '.join(registry.kinds())}, not {kind!r}")
    cls = registry.get(kind)
    return {
        "driver": kind,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "config": fields_doc(cls.Config),
        "grant": fields_doc(cls.Grant),
        "ops": {name: {"doc": spec.doc, "args": fields_doc(spec.args)} for name, spec in cls.operations().items()},
        "stream": cls.stream,
        "stream_op": cls.stream_op,
        "detected": cls.detect(),
    }


def describe_text(d: dict[str, Any]) -> str:
    def fields(rows: list[dict[str, Any]]) -> list[str]:
        return [f"    {f['name']}: {f['type']}" + (" (required)" if f["required"] else f" = {f['default']!r}") for f in rows]

    lines = [f"driver {d['driver']} ({d['class']})", "  config keys ([devices.NAME]):", *fields(d["config"]), "  grant keys ([agents.A.devices.NAME]):", *fields(d["grant"]), "  operations:"]
    for name, op in d["ops"].items():
        args = ", ".join(f["name"] for f in op["args"])
        lines.append(f"    {name}({args}): {op['doc']}")
    if d["stream"]:
        lines.append(f"  stream: {d['stream']}, received with device.recv; grant op {d['stream_op']!r}")
    if d["detected"]:
        lines.append(f"  present on this machine: {d['detected']}")
    return "\n".join(lines)


def cmd_devices(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any], emit: Callable[..., None], error: type[Exception]) -> int:
    if args.describe:
        try:
            described = describe_driver(args.describe)
        except ConfigError as err:
            raise error(err.message) from None
        emit(args, described, lambda: describe_text(described))
        return 0
    with client(args) as c:
        if args.restart:
            result = c.call("device.restart", device=args.restart)
            emit(args, result, lambda: f"killed host {result['killed_pid']} of {args.restart}; it restarts with backoff")
            return 0
        devices = c.list_devices()
    emit(args, devices, lambda: devices_table(devices) if devices else "no devices configured")
    return 0


def cmd_device(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any], emit: Callable[..., None], error: type[Exception]) -> int:
    try:
        body = call_args(args.args)
    except ValueError as err:
        raise error(f"device: {err}") from None
    with client(args) as c:
        dev = c.device(args.name)
        if args.op in ("recv", "read", "watch", "stream"):
            result: Any = c.call("device.recv", device=args.name, timeout=float(body.pop("timeout", 1.0)), **body)
        else:
            result = dev.call(args.op, **body)
    emit(args, result, lambda: json.dumps(result, indent=2, default=_jsonable))
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex() if any(b < 32 and b not in (9, 10, 13) for b in value) else value.decode("utf-8", "replace")
    raise TypeError(type(value).__name__)


def cmd_run(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any], emit: Callable[..., None], error: type[Exception]) -> int:
    """Start a kernel with the config in the foreground, or, when one is running at the socket,
    start the config's agents there (its devices must already be configured there)."""
    from clove.config import load_config
    from clove_sdk.client import default_endpoint, kernel_listening

    try:
        config = load_config(args.config)
    except ConfigError as err:
        raise error(err.message) from None
    socket_path = args.socket or os.environ.get("CLOVE_SOCKET") or config.kernel.socket
    path = default_endpoint(socket_path)[len("ipc://") :]
    if not kernel_listening(path):
        from clove.kernel.main import run_kernel

        return run_kernel(config_path=args.config, socket_path=args.socket, state_dir=args.state_dir, log_level=args.log_level)
    args.socket = path
    with client(args) as c:
        running = {d["name"]: d["driver"] for d in c.list_devices()}
        for device in config.devices:
            if running.get(device.name) != device.driver:
                raise error(
                    f"{args.config}: [devices.{device.name}]: the running kernel at {path} has no {device.driver} device by that name;"
                    " stop it or start this config on another socket"
                )
        started = []
        for agent in config.agents:
            body: dict[str, Any] = {
                "name": agent.name,
                "script": agent.script,
                "args": list(agent.args),
                "env": dict(agent.env),
                "sandboxed": agent.sandboxed,
                "network": agent.network,
                "restart_policy": agent.restart,
                "max_restarts": agent.max_restarts,
                "restart_window": agent.restart_window,
                "level": agent.level,
                "permissions": dict(agent.permissions),
                "devices": {name: _grant_table(grant) for name, grant in agent.devices.items()},
                "device_wait": agent.device_wait,
                "device_timeout": agent.device_timeout,
                "limits": {k: v for k, v in (("memory", agent.memory_bytes), ("cpu_quota", agent.cpu_quota_us), ("pids", agent.pids)) if v is not None},
            }
            if agent.interpreter:
                body["interpreter"] = agent.interpreter
            if agent.working_dir:
                body["working_dir"] = agent.working_dir
            # The reply comes once the agent runs, which may be after its devices are up.
            wait = c.timeout + (agent.device_timeout if agent.devices else 0.0)
            try:
                started.append(c.call("agent.spawn", reply_timeout=wait, **body))
            except CloveError as err:
                raise error(f"{args.config}: [agents.{agent.name}]: {err.message}") from None
    emit(args, started, lambda: "\n".join(f"started {a['name']} (id {a['id']}, pid {a['pid']})" for a in started) or "no agents in the config")
    return 0


def _grant_table(grant: Any) -> dict[str, Any]:
    import dataclasses

    return {f.name: list(v) if isinstance(v := getattr(grant, f.name), tuple) else v for f in dataclasses.fields(grant) if f.init and getattr(grant, f.name) is not None}


def cmd_estop(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any], emit: Callable[..., None], error: type[Exception]) -> int:
    with client(args) as c:
        if args.list:
            result = c.call("interlock.list")["interlocks"]
            emit(args, result, lambda: interlocks_table(result))
            return 0
        if args.release:
            if not args.name:
                raise error("estop --release: name the interlock to release")
            released = c.call("interlock.release", name=args.name)["released"]
            emit(args, released, lambda: f"released {args.name} (engaged {released['released_at'] - released['engaged_at']:.1f} s)")
            return 0
        body = {"name": args.name} if args.name else {}
        engaged = c.call("interlock.engage", reason=args.reason, **body)["engaged"]
    emit(args, engaged, lambda: "\n".join(f"engaged {e['name']}: " + ", ".join(f"{a['action']} {a['status']}" for a in e["actions"]) for e in engaged) or "no interlocks configured")
    return 0


def cmd_trading(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any], emit: Callable[..., None], error: type[Exception]) -> int:
    """halt (kill switch: cancel every open order, block new ones), reduce (only
    position-reducing orders), resume, or status, on an exchange device."""
    with client(args) as c:
        dev = c.device(args.device)
        if args.action == "status":
            result = dev.call("status")
            emit(args, result, lambda: json.dumps(result, indent=2, default=_jsonable))
            return 0
        state = {"halt": "HALTED", "reduce": "REDUCING", "resume": "ACTIVE"}[args.action]
        result = dev.call("set_state", state=state, reason=args.reason)
    emit(args, result, lambda: f"{args.device}: {result.get('state')}" + (f"; cancelling {len(result.get('cancelling', []))} open orders" if result.get("cancelling") else ""))
    return 0


def interlocks_table(interlocks: list[dict[str, Any]]) -> str:
    if not interlocks:
        return "no interlocks configured"
    rows = [[i["name"], "ENGAGED" if i["engaged"] else "armed", json.dumps(i["trigger"]), "; ".join(i["actions"]), (i["state"] or {}).get("cause", "")] for i in interlocks]
    return render.table(["NAME", "STATE", "TRIGGER", "ACTIONS", "CAUSE"], rows)


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], argparse.ArgumentParser], bind: Callable[[Any], Any]) -> None:
    d = common(sub.add_parser("devices", help="list devices: state, driver, host pid, restarts, traffic"))
    d.add_argument("--restart", metavar="NAME", help="kill this device's host; the kernel restarts it")
    d.add_argument("--describe", metavar="DRIVER", help="a driver's config and grant keys, operations and stream (no kernel needed)")
    d.set_defaults(func=bind(cmd_devices))

    one = common(sub.add_parser("device", help="run one operation on a device (operators may use every device)"))
    one.add_argument("name")
    one.add_argument("op", help="an operation of its driver (send, write, get, set, ...), or recv to read the stream")
    one.add_argument("args", nargs="*", metavar="KEY=VALUE", help="0x101 and 17 are ints, hex:0a0b and b:text bytes, JSON is JSON")
    one.set_defaults(func=bind(cmd_device))

    e = common(sub.add_parser("estop", help="engage interlocks (all, or NAME); --release NAME; --list"))
    e.add_argument("name", nargs="?")
    e.add_argument("--release", action="store_true", help="release the named interlock (operators only)")
    e.add_argument("--list", action="store_true", help="show interlocks and their state")
    e.add_argument("--reason", default="clove estop", help="recorded in the journal")
    e.set_defaults(func=bind(cmd_estop))

    t = common(sub.add_parser("trading", help="kill switch and trading state of an exchange device"))
    t.add_argument("action", choices=["halt", "reduce", "resume", "status"])
    t.add_argument("--device", default="exchange", help="the exchange device (default: exchange)")
    t.add_argument("--reason", default="operator", help="recorded in the order journal")
    t.set_defaults(func=bind(cmd_trading))

    r = common(sub.add_parser("run", help="start a deployment: its kernel, devices and agents (or its agents on a running kernel)"))
    r.add_argument("config", help="deployment TOML ([devices], [agents], ...)")
    r.add_argument("--state-dir", help="journal, logs and agent dirs (overrides config)")
    r.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    r.set_defaults(func=bind(cmd_run))
