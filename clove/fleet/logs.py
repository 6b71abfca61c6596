"""``logs``, the fleet command that reads an agent's log on a board (docs/fleet.md, "top and logs").

A board carries it out as the operator syscall ``clove logs`` uses, ``agent.logs`` (journaled
like any operator request, the command itself with the key's id), and answers with a bounded
piece of the log, as text:

* without ``offset``: the last ``lines`` lines (default :data:`DEFAULT_LINES`, at most
  :data:`MAX_LINES`) of the newest :data:`MAX_ANSWER_BYTES` bytes of the log;
* with ``offset`` (a position an earlier answer gave): what the agent wrote since, at most
  :data:`MAX_ANSWER_BYTES` bytes of it; the answer's ``offset`` is where to ask next
  (``clove fleet logs --follow``).

The answer says when it was cut (``cut``: why, for the operator) and how much is still to come
(``pending`` bytes). Its size is bounded well under NATS's default ``max_payload`` (1 MiB):
:data:`MAX_ANSWER_BYTES` of log text, each byte at most 6 once JSON-escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["DEFAULT_LINES", "MAX_ANSWER_BYTES", "MAX_LINES", "MAX_OFFSET", "log_answer", "log_call"]

#: Lines an answer shows when the operator does not say.
DEFAULT_LINES: Final = 100
#: The most lines one answer shows.
MAX_LINES: Final = 10_000
#: The most log bytes one answer carries (as JSON at most 6× this: under 1 MiB).
MAX_ANSWER_BYTES: Final = 64 << 10
#: Offsets are file positions; anything past this is not one (and JSON keeps it exact).
MAX_OFFSET: Final = 1 << 53


def log_call(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The syscall a checked ``logs`` command makes: ``(agent.logs, body)``."""
    offset = args.get("offset")
    return "agent.logs", {
        "name": args["agent"],
        "offset": -MAX_ANSWER_BYTES if offset is None else int(offset),
        "max_bytes": MAX_ANSWER_BYTES,
    }


def log_answer(args: Mapping[str, Any], value: Any) -> dict[str, Any]:
    """What the operator gets of ``agent.logs``'s result ``value`` (``{data, offset, size,
    state}``): ``{text, offset, size, pending, lines, state, cut}`` (``cut``: ``None``, or why
    the text is not the whole log)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("data"), bytes | bytearray):
        return {"text": "", "offset": None, "size": None, "pending": 0, "lines": 0, "state": None, "cut": "the board's answer held no log"}
    data = bytes(value["data"])
    end, size = int(value.get("offset") or 0), int(value.get("size") or 0)
    start = end - len(data)
    cut: list[str] = []
    following = args.get("offset") is not None
    if len(data) > MAX_ANSWER_BYTES:  # more than was asked for: keep the bound all the same
        if following:
            end, data = end - (len(data) - MAX_ANSWER_BYTES), data[:MAX_ANSWER_BYTES]
        else:
            start, data = end - MAX_ANSWER_BYTES, data[-MAX_ANSWER_BYTES:]
    if following:
        if start < int(args["offset"]):
            cut.append("the log was rotated: reading from the start of the new file")
        if len(data) == MAX_ANSWER_BYTES and not data.endswith(b"\n") and b"\n" in data:
            keep = data.rindex(b"\n") + 1
            end -= len(data) - keep  # a whole last line (and whole characters) next time
            data = data[:keep]
    else:
        if start > 0:
            cut.append(f"the log is {size} bytes: only its last {len(data)} were read")
            newline = data.find(b"\n")
            data = data[newline + 1 :] if newline >= 0 else data  # the first line read is partial
        *whole, tail = data.split(b"\n")
        lines = [line + b"\n" for line in whole] + ([tail] if tail else [])
        limit = int(args.get("lines") or DEFAULT_LINES)
        if len(lines) > limit:
            cut.insert(0, f"showing the last {limit} of {len(lines)} lines read")
            data = b"".join(lines[-limit:])
    text = data.decode("utf-8", "replace")
    return {
        "text": text,
        "offset": end,
        "size": size,
        "pending": max(0, size - end),
        "lines": text.count("\n") + (0 if not text or text.endswith("\n") else 1),
        "state": value.get("state"),
        "cut": "; ".join(cut) or None,
    }
