"""The recording format: JSON that round-trips msgpack values, the entry kinds, and loading a
recording back from a file, a directory or exported text (docs/recording.md).

Why a codec rather than plain ``json.dumps``: bodies and results are msgpack values (bytes,
maps with bytes keys) and a recording must survive JSON (JSONL files, the SDK's export string)
and still compare *exactly* with what an agent sends when it is replayed, and give it back the
very values it got. Bytes become ``{"__bytes__": base64}``; a map whose keys are not all
strings, or that uses one of the two reserved keys itself, becomes ``{"__map__": [[k, v], ...]}``.
Comparison is on the canonical JSON text, so ``1``, ``1.0`` and ``true`` stay different.

Entry kinds, one JSON object per line, ordered by ``seq``:

* ``recording``: ``{seq: 0, kind, id, started_at, options}``, first in every file;
* ``spawn``: ``{seq, kind, agent_id, agent_name, t, from_incarnation, spec}``: how the agent was
  started, and its first incarnation recorded from its start;
* ``syscall``: ``{seq, kind, agent_id, agent_name, incarnation, i, t, dur, call, body, ok,
  result | error}``: ``i`` counts the incarnation's requests in arrival order, ``t`` is seconds
  since the recording started, ``dur`` the seconds until the reply; an operator session's carry
  ``session_id`` instead of ``agent_id, agent_name, incarnation``;
* ``exit``: ``{seq, kind, agent_id, agent_name, incarnation, t, exit}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from clove.errors import InvalidArguments, NotFound

__all__ = [
    "AgentRecording",
    "FORMAT_VERSION",
    "canonical",
    "checked_entries",
    "decode",
    "dumps",
    "encode",
    "load_entries",
    "parse_entries",
    "select_agents",
]

FORMAT_VERSION: Final = 1
BYTES: Final = "__bytes__"
MAP: Final = "__map__"
#: A post-mortem bundle directory holds its agent's recording under this name.
BUNDLE_FILE: Final = "recording.jsonl"


def encode(value: Any) -> Any:
    """A msgpack value → JSON-safe data that :func:`decode` turns back into the same value."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is dict:
        if all(type(k) is str for k in value) and BYTES not in value and MAP not in value:
            return {k: encode(v) for k, v in value.items()}
        return {MAP: [[encode(k), encode(v)] for k, v in value.items()]}
    if kind is list or kind is tuple:
        return [encode(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    # Subclasses (str enums, IntEnum, OrderedDict...): msgpack sends them as their base type.
    if isinstance(value, str):
        return str.__str__(value)  # str() would call an enum's __str__ ("Color.RED")
    for base in (bool, int, float):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, dict):
        return encode(dict(value))
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return repr(value)  # msgpack could not have carried it either; keep something readable


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`.

    :raises ValueError: a ``__bytes__`` value that is not base64.
    """
    kind = type(value)
    if kind is dict:
        if len(value) == 1:
            if BYTES in value and isinstance(value[BYTES], str):
                try:
                    return base64.b64decode(value[BYTES], validate=True)
                except binascii.Error as err:
                    raise ValueError(f"bad {BYTES} value: {err}") from None
            if MAP in value and isinstance(value[MAP], list):
                return {_hashable(decode(k)): decode(v) for k, v in value[MAP]}
        return {k: decode(v) for k, v in value.items()}
    if kind is list:
        return [decode(v) for v in value]
    return value


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def dumps(entry: dict[str, Any]) -> str:
    """One JSONL line (ASCII, so its length is its size in bytes)."""
    return json.dumps(entry, separators=(",", ":"), check_circular=False)


def canonical(value: Any) -> str:
    """The text two encoded values are compared by: key order and number types matter where
    msgpack keeps them (map order does not, number kinds do)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ---- loading ------------------------------------------------------------------------------------


def parse_entries(text: str, source: str = "recording") -> list[dict[str, Any]]:
    """Entries from a JSON array (the SDK's export) or JSONL (the files), deduplicated (every
    file segment repeats the ``recording`` and ``spawn`` lines) and ordered by ``seq``.

    :raises InvalidArguments: not JSON, or not a list of entry objects.
    """
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            raw = json.loads(stripped)
        else:
            raw = [json.loads(line) for line in stripped.splitlines() if line.strip()]
    except ValueError as err:
        raise InvalidArguments(f"{source}: not a recording (JSON array or JSONL expected): {err}") from None
    return checked_entries(raw, source)


def checked_entries(raw: Any, source: str = "recording") -> list[dict[str, Any]]:
    """Decoded entries checked, deduplicated and ordered by ``seq``.

    :raises InvalidArguments: not a list of entry objects.
    """
    if not isinstance(raw, list):
        raise InvalidArguments(f"{source}: a recording is a list of entries, got {type(raw).__name__}")
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for n, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int) or not isinstance(entry.get("kind"), str):
            raise InvalidArguments(f"{source}: entry {n} is not a recording entry (needs int seq and kind)")
        seen.setdefault((entry["kind"], entry["seq"]), entry)
    return sorted(seen.values(), key=lambda e: (e["seq"], e["kind"] != "recording"))


def _segment_order(path: Path) -> tuple[str, int]:
    """``a.jsonl.3`` (oldest) before ``a.jsonl.1`` before ``a.jsonl``; seq sorts them anyway."""
    stem, _, suffix = path.name.partition(".jsonl")
    return stem, -int(suffix[1:]) if suffix[1:].isdigit() else 0


def load_entries(source: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """A recording from a file (JSON export or JSONL), a recording directory
    (``<state_dir>/recordings/<id>/``, every agent's segments) or a post-mortem bundle directory
    (its ``recording.jsonl``).

    :raises NotFound: no such file, or a directory without a recording.
    :raises InvalidArguments: the file is not a recording.
    """
    path = Path(source)
    if path.is_dir():
        bundle = path / BUNDLE_FILE
        files = [bundle] if bundle.is_file() else sorted((p for p in path.iterdir() if ".jsonl" in p.name and p.is_file()), key=_segment_order)
        if not files:
            raise NotFound(f"{path}: no recording here (expected {BUNDLE_FILE} or <agent>.jsonl files)", details={"path": str(path)})
    elif path.is_file():
        files = [path]
    else:
        raise NotFound(f"{path}: no such recording file or directory", details={"path": str(path)})
    entries: list[dict[str, Any]] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InvalidArguments(f"{file}: cannot read: {err}") from None
        entries.extend(parse_entries(text, str(file)))
    return checked_entries(entries, str(path))


# ---- one agent's part ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentRecording:
    """What replaying one agent needs: how it was started, the syscalls of its first incarnation
    recorded from its start (in request order) and how that incarnation ended."""

    name: str
    agent_id: int
    incarnation: int
    spec: dict[str, Any]
    calls: tuple[dict[str, Any], ...]
    exit: dict[str, Any] | None
    #: Seconds from its spawn to its exit in the recording (None: it had not exited).
    elapsed: float | None
    options: dict[str, Any]
    #: Seconds it lived on after its last recorded reply (or its spawn) before that exit.
    tail: float | None = None


def select_agents(entries: list[dict[str, Any]], agent: str | None = None) -> list[AgentRecording]:
    """The agents of a recording that can be replayed: ``agent`` (a name), or every one.

    :raises NotFound: no agent of that name was recorded.
    :raises InvalidArguments: the agent was not recorded from the start of an incarnation, or
        entries of that incarnation are missing (rotated out of the files or the ring).
    """
    meta = next((e for e in entries if e["kind"] == "recording"), {})
    options = meta.get("options") if isinstance(meta.get("options"), dict) else {}
    headers = [e for e in entries if e["kind"] == "spawn" and (agent is None or e.get("agent_name") == agent)]
    if not headers:
        names = sorted({str(e.get("agent_name")) for e in entries if e["kind"] == "spawn"})
        wanted = f"no agent named {agent!r}" if agent else "no agents"
        raise NotFound(f"the recording holds {wanted} (recorded: {', '.join(names) or 'none'})", details={"agents": names})
    chosen: dict[str, dict[str, Any]] = {}
    for header in headers:  # a name reused by a later agent: its first agent
        chosen.setdefault(str(header["agent_name"]), header)
    return [_agent_part(entries, header, options or {}) for header in chosen.values()]


def _agent_part(entries: list[dict[str, Any]], header: dict[str, Any], options: dict[str, Any]) -> AgentRecording:
    agent_id, name = header.get("agent_id"), str(header.get("agent_name"))
    spec = header.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("script"), str):
        raise InvalidArguments(f"the recording's spawn entry for {name} has no script")
    mine = [e for e in entries if e.get("agent_id") == agent_id and e["kind"] in ("syscall", "exit")]
    incarnations = sorted({int(e.get("incarnation", 0)) for e in mine})
    first = int(header.get("from_incarnation", 1))
    candidates = [n for n in incarnations if n >= first]
    if not candidates:
        if first > 1:
            raise InvalidArguments(
                f"{name} was already running when recording started; no incarnation of it was recorded from its start",
                details={"agent": name},
            )
        candidates = [first]  # spawned while recording, and has made no syscall yet
    incarnation = candidates[0]
    calls = sorted((e for e in mine if e["kind"] == "syscall" and e.get("incarnation") == incarnation), key=lambda e: int(e.get("i", 0)))
    missing = [n for n, e in enumerate(calls) if e.get("i") != n]
    if missing:
        raise InvalidArguments(
            f"the recording of {name} is incomplete: syscall {missing[0]} and later are out of order or missing "
            "(rotated out of the files or evicted from the ring; raise max_bytes or max_entries)",
            details={"agent": name, "first_missing": missing[0]},
        )
    ended = next((e for e in mine if e["kind"] == "exit" and e.get("incarnation") == incarnation), None)
    # From its spawn when that is the incarnation replayed, else from its first syscall.
    began = float(header.get("t", 0.0)) if incarnation == first == 1 else float(calls[0]["t"]) if calls else None
    elapsed = round(float(ended["t"]) - began, 6) if ended is not None and began is not None else None
    last = max((float(c.get("t") or 0.0) + float(c.get("dur") or 0.0) for c in calls), default=began)
    tail = round(max(0.0, float(ended["t"]) - last), 6) if ended is not None and last is not None else None
    return AgentRecording(
        name=name, agent_id=int(agent_id) if isinstance(agent_id, int) else -1, incarnation=incarnation, spec=spec,
        calls=tuple(calls), exit=ended.get("exit") if ended is not None else None, elapsed=elapsed, options=options,
        tail=tail,
    )  # fmt: skip
