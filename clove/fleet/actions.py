"""What an accepted fleet command does on a board: the operator syscalls it is made of.

A board that accepts a signed command (:mod:`clove.fleet.commands`) runs it as these calls,
each authorized, executed and journaled like an operator's own (docs/fleet.md, "Commands"):

* ``estop`` ``{interlock?, reason?}`` → ``interlock.engage`` of that interlock, or of every one;
* ``estop.release`` ``{interlock?}`` → ``interlock.release`` of that one, or of every engaged one;
* ``kill`` / ``pause`` / ``resume`` ``{agent}`` → ``agent.kill`` / ``agent.pause`` / ``agent.resume``;
* ``trading.halt`` ``{device?, reason?}`` → ``device.call set_state HALTED`` on that device, or
  on every exchange device.

Arguments are checked here, strictly (unknown keys, wrong types and long strings are refused),
because they come from the network: a signature says who sent them, not that they are sane.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["MAX_ARG_CHARS", "Call", "plan"]

#: The longest name or reason a command may carry.
MAX_ARG_CHARS: Final = 512

#: ``(syscall, body)``.
Call = tuple[str, dict[str, Any]]

_ARGS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {  # command → (required, optional)
    "estop": (frozenset(), frozenset({"interlock", "reason"})),
    "estop.release": (frozenset(), frozenset({"interlock"})),
    "kill": (frozenset({"agent"}), frozenset()),
    "pause": (frozenset({"agent"}), frozenset()),
    "resume": (frozenset({"agent"}), frozenset()),
    "trading.halt": (frozenset(), frozenset({"device", "reason"})),
}


def _checked(command: str, args: Mapping[str, Any]) -> dict[str, str]:
    if command not in _ARGS:
        raise ValueError(f"this board does not carry out {command!r}")
    required, optional = _ARGS[command]
    unknown = sorted(set(args) - required - optional)
    if unknown:
        raise ValueError(f"{command}: unknown argument {unknown[0]!r} (takes: {', '.join(sorted(required | optional)) or 'none'})")
    missing = sorted(required - set(args))
    if missing:
        raise ValueError(f"{command}: argument {missing[0]!r} is required")
    for key, value in args.items():
        if not isinstance(value, str) or not value or len(value) > MAX_ARG_CHARS:
            raise ValueError(f"{command}: argument {key!r} must be a non-empty string of at most {MAX_ARG_CHARS} characters")
    return dict(args)


def plan(command: str, args: Mapping[str, Any], *, operator: str, engaged: Iterable[str], exchanges: Iterable[str]) -> list[Call]:
    """The calls ``command`` makes on a board whose engaged interlocks and exchange devices are
    ``engaged`` and ``exchanges``; ``operator`` names the key in the causes it records.

    :raises ValueError: the arguments are not the command's.
    """
    a = _checked(command, args)
    if command == "estop":
        body: dict[str, Any] = {"reason": f"fleet estop by {operator}: {a.get('reason', 'no reason given')}"}
        if "interlock" in a:
            body["name"] = a["interlock"]
        return [("interlock.engage", body)]
    if command == "estop.release":
        names = [a["interlock"]] if "interlock" in a else sorted(engaged)
        return [("interlock.release", {"name": name}) for name in names]
    if command in ("kill", "pause", "resume"):
        return [(f"agent.{command}", {"name": a["agent"]})]
    reason = f"fleet trading halt by {operator}: {a.get('reason', 'no reason given')}"
    devices = [a["device"]] if "device" in a else sorted(exchanges)
    return [("device.call", {"device": d, "op": "set_state", "args": {"state": "HALTED", "reason": reason}}) for d in devices]
