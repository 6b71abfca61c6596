"""CAN frames on the wire: the ``send`` arguments, the stream item, and receive filters.

A received frame is one msgpack-able dict (the ``recv`` stream's item)::

    {"id": 0x123, "data": b"\\x01\\x02", "ext": False, "rtr": False, "err": False,
     "fd": False, "brs": False, "dlc": 2, "ts": 1718000000.123}

``err`` marks python-can error frames. Pure: the kernel imports this module to parse ``send``
arguments and compile agents' filters, so python-can is not imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clove.drivers import invalid
from clove.errors import InvalidArguments

__all__ = ["MAX_EXT_ID", "MAX_STD_ID", "SendArgs", "compile_filter", "frame_from_message"]

MAX_STD_ID = 0x7FF  # 11-bit identifiers
MAX_EXT_ID = 0x1FFFFFFF  # 29-bit identifiers
_MAX_FILTER_VALUE = 0xFFFFFFFF  # python-can filters are plain ints; allow 32 bits (flag bits)
_FILTER_KEYS = frozenset({"can_id", "can_mask", "extended"})


@dataclass(frozen=True, slots=True, kw_only=True)
class SendArgs:
    """The arguments of ``send``: one frame.

    :param id: the arbitration id (11-bit, or 29-bit when extended).
    :param data: the payload: at most 8 bytes, or 64 for a CAN FD frame.
    :param ext: an extended (29-bit) id; ``None`` picks extended iff ``id > 0x7FF``.
    :param rtr: a remote frame (no data; ``dlc`` is the length asked for).
    :param fd: a CAN FD frame (the device needs ``fd = true``).
    :param brs: switch to the data bitrate (CAN FD only).
    :param dlc: a remote frame's requested length (0-8); data frames take it from ``data``.
    """

    id: int
    data: bytes = b""
    ext: bool | None = None
    rtr: bool = False
    fd: bool = False
    brs: bool = False
    dlc: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.id <= MAX_EXT_ID:
            raise invalid("id", f"must be between 0 and 0x{MAX_EXT_ID:X}, got {self.id}")
        if self.ext is False and self.id > MAX_STD_ID:
            raise invalid(
                "id", f"0x{self.id:X} does not fit a standard 11-bit id (ext = false allows up to 0x7FF)"
            )
        limit = 64 if self.fd else 8
        if len(self.data) > limit:
            kind = "a CAN FD" if self.fd else "a classic CAN"
            raise invalid("data", f"{len(self.data)} bytes is more than {kind} frame carries ({limit})")
        if self.brs and not self.fd:
            raise invalid("brs", "bit rate switching exists only for CAN FD frames (fd = true)")
        if self.rtr:
            if self.fd:
                raise invalid("rtr", "CAN FD has no remote frames")
            if self.data:
                raise invalid("data", "a remote frame carries no data (ask for a length with dlc)")
            if self.dlc is not None and not 0 <= self.dlc <= 8:
                raise invalid("dlc", f"must be between 0 and 8, got {self.dlc}")
        elif self.dlc is not None and self.dlc != len(self.data):
            raise invalid(
                "dlc",
                f"a data frame's dlc is the length of its data ({len(self.data)}); give dlc only with rtr",
            )

    @property
    def extended(self) -> bool:
        """Whether the frame goes out with a 29-bit id."""
        return self.id > MAX_STD_ID if self.ext is None else self.ext


def frame_from_message(msg: Any) -> dict[str, Any]:
    """The stream item for a ``can.Message`` (duck-typed, so python-can stays unimported)."""
    return {
        "id": int(msg.arbitration_id),
        "data": bytes(msg.data),
        "ext": bool(msg.is_extended_id),
        "rtr": bool(msg.is_remote_frame),
        "err": bool(msg.is_error_frame),
        "fd": bool(msg.is_fd),
        "brs": bool(msg.bitrate_switch),
        "dlc": int(msg.dlc),
        "ts": float(msg.timestamp),
    }


def compile_filter(filters: list[Any]) -> Callable[[Any], bool]:
    """An agent's receive filters as a predicate over frame items, with python-can's meaning
    (``BusABC._matches_filters``): a frame passes when any filter has
    ``frame_id & can_mask == can_id & can_mask`` and, if the filter sets ``extended``, the
    frame's ``ext`` equals it. No filters pass everything.

    :param filters: ``[{"can_id": 0x180, "can_mask": 0x7F0, "extended": False}, ...]``.
    :raises InvalidArguments: naming the filter and what is wrong with it.
    """
    if not isinstance(filters, (list, tuple)):
        raise InvalidArguments(
            f"CAN filters must be a list of {{can_id, can_mask}} tables, got {type(filters).__name__}"
        )
    compiled: list[tuple[int, int, bool | None]] = []
    for index, spec in enumerate(filters):
        compiled.append(_parse_filter(index, spec))
    if not compiled:
        return _accept_all
    rules = tuple(compiled)

    def matches(item: Any) -> bool:
        ident = item.get("id")
        if not isinstance(ident, int):
            return False
        ext = item.get("ext")
        for can_id, can_mask, extended in rules:
            if extended is not None and extended != ext:
                continue
            if (can_id ^ ident) & can_mask == 0:
                return True
        return False

    return matches


def _parse_filter(index: int, spec: Any) -> tuple[int, int, bool | None]:
    where = f"CAN filter {index}"

    def bad(message: str) -> InvalidArguments:
        return InvalidArguments(f"{where}: {message}", details={"argument": "filters", "index": index})

    if not isinstance(spec, Mapping):
        raise bad(f"expected a table like {{can_id = 0x180, can_mask = 0x7F0}}, got {type(spec).__name__}")
    unknown = sorted(str(k) for k in spec if k not in _FILTER_KEYS)
    if unknown:
        raise bad(f"unknown key {unknown[0]!r} (known: can_id, can_mask, extended)")
    values: list[int] = []
    for key in ("can_id", "can_mask"):
        if key not in spec:
            raise bad(f"{key} is required")
        value = spec[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad(f"{key} must be an int, got {value!r}")
        if not 0 <= value <= _MAX_FILTER_VALUE:
            raise bad(f"{key} must be between 0 and 0x{_MAX_FILTER_VALUE:X}, got {value}")
        values.append(value)
    extended = spec.get("extended")
    if extended is not None and not isinstance(extended, bool):
        raise bad(f"extended must be true or false, got {extended!r}")
    return values[0], values[1], extended


def _accept_all(item: Any) -> bool:
    return True
