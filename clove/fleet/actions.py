"""What an accepted fleet command does on a board: the operator syscalls it is made of.

A board that accepts a signed command (:mod:`clove.fleet.commands`) runs it as these calls,
each authorized, executed and journaled like an operator's own (docs/fleet.md, "Commands"):

* ``estop`` ``{interlock?, reason?}`` → ``interlock.engage`` of that interlock, or of every one;
* ``estop.release`` ``{interlock?}`` → ``interlock.release`` of that one, or of every engaged one;
* ``kill`` / ``pause`` / ``resume`` ``{agent}`` → ``agent.kill`` / ``agent.pause`` / ``agent.resume``;
* ``trading.halt`` ``{device?, reason?}`` → ``device.call set_state HALTED`` on that device, or
  on every exchange device;
* ``logs`` ``{agent, lines?, offset?}`` → ``agent.logs``, answered with a bounded piece of the
  log (:mod:`clove.fleet.logs`, :func:`answer_value`).

Arguments are checked here, strictly (unknown keys, wrong types and long strings are refused),
because they come from the network: a signature says who sent them, not that they are sane.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from clove.fleet.logs import MAX_LINES, MAX_OFFSET, log_answer, log_call

__all__ = ["MAX_ARG_CHARS", "Call", "answer_value", "plan"]

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
    "logs": (frozenset({"agent"}), frozenset({"lines", "offset"})),
}
#: Arguments that are whole numbers, with their bounds (every other argument is a string).
_INT_ARGS: Final[dict[str, tuple[int, int]]] = {"lines": (1, MAX_LINES), "offset": (0, MAX_OFFSET)}


def _checked(command: str, args: Mapping[str, Any]) -> dict[str, Any]:
    if command == "deploy":  # the right to set the desired state (clove.fleet.deploy), not a command
        raise ValueError("this board does not carry out 'deploy' as a command: a deploy is a desired state in the deploy bucket (clove fleet deploy)")
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
        if key in _INT_ARGS:
            low, high = _INT_ARGS[key]
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"{command}: argument {key!r} must be a whole number from {low} to {high}")
            continue
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
    if command == "logs":
        return [log_call(a)]
    reason = f"fleet trading halt by {operator}: {a.get('reason', 'no reason given')}"
    devices = [a["device"]] if "device" in a else sorted(exchanges)
    return [("device.call", {"device": d, "op": "set_state", "args": {"state": "HALTED", "reason": reason}}) for d in devices]


def answer_value(command: str, args: Mapping[str, Any], value: Any) -> Any:
    """What the operator's answer carries of a successful call's result: the log piece for
    ``logs``, nothing (``None``) for commands whose calls only act."""
    return log_answer(args, value) if command == "logs" else None
