"""What an agent may do with one device: the grant base class and its building blocks.

A grant is declared per agent and device (``[agents.NAME.devices.DEVICE]``) and checked by the
kernel on every operation, before anything reaches the driver host. The base grant knows the
operations and an overall call rate; a driver's ``Grant`` subclass adds what only it understands
(CAN ids, GPIO lines, write sizes) by overriding :meth:`DeviceGrant.check`,
:meth:`DeviceGrant.admits`, :meth:`DeviceGrant.rates` and :meth:`DeviceGrant.cost`. Grant code
runs inside the kernel: keep it pure and fast (no I/O, no vendor imports).

Grants are frozen, slotted dataclasses; before Python 3.14 a slotted subclass cannot use bare
``super()``, so a subclass's ``__post_init__`` calls ``DeviceGrant.__post_init__(self)``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from clove.drivers.schema import invalid
from clove.errors import PermissionDenied
from clove.ratelimit import TokenBucket as TokenBucket  # part of the driver contract since v1

__all__ = ["DeviceGrant", "IdRanges", "TokenBucket", "deny"]


def deny(message: str, **details: Any) -> PermissionDenied:
    """The error a grant raises: journaled under SECURITY and emitted as SYSCALL_BLOCKED."""
    return PermissionDenied(message, details=details)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceGrant:
    """The part of every grant.

    :param ops: the operations the agent may use (a driver's ops and its stream op).
    :param max_rate_hz: calls per second across all operations (``None``: unlimited).
    """

    ops: tuple[str, ...] = ()
    max_rate_hz: float | None = None

    def __post_init__(self) -> None:
        if self.max_rate_hz is not None and not self.max_rate_hz > 0:
            raise invalid("max_rate_hz", f"must be positive, got {self.max_rate_hz!r}")

    def check(self, op: str, args: Any) -> None:
        """Refuse an operation whose arguments go beyond the grant (``op`` is granted already).

        :raises PermissionDenied: via :func:`deny`, naming what is not granted.
        """

    def stream_scope(self) -> Any | None:
        """What of the device's stream this grant can ever admit, in a form the driver's
        :meth:`~clove.drivers.Driver.stream_filter` understands (CAN: the ``recv_ids`` ranges),
        or ``None``: it cannot say, so the host must deliver everything (the default).

        Only an optimisation: :meth:`admits` still decides every item. A scope must cover
        everything :meth:`admits` can pass; covering more is harmless.

        .. versionadded:: 0.1 (contract version 1, additive)
        """
        return None

    def narrow(self, op: str, args: Any) -> Any:
        """The arguments to forward, after :meth:`check` passed: a grant may narrow a request
        to what it covers (an empty "every line" read becomes the granted lines). Returns
        ``args`` itself, or a new instance of the same dataclass."""
        return args

    def admits(self, item: Any) -> bool:
        """Whether a stream item (a frame, an edge) may reach this agent."""
        return True

    def rates(self) -> dict[str, float]:
        """Token buckets to keep for this agent: name → refill per second."""
        return {"calls": self.max_rate_hz} if self.max_rate_hz is not None else {}

    def cost(self, op: str, args: Any) -> dict[str, float]:
        """What one call takes from each bucket named by :meth:`rates`."""
        return {"calls": 1.0} if self.max_rate_hz is not None else {}


class IdRanges:
    """A set of integer ranges from strings like ``"0x100-0x10F"``, ``"0x7DF"`` or ``"256"``.

    Membership is a binary search: cheap enough for every CAN frame.
    """

    __slots__ = ("_starts", "_ends", "spec")

    def __init__(self, spec: tuple[str, ...], *, key: str, maximum: int = (1 << 29) - 1) -> None:
        pairs: list[tuple[int, int]] = []
        for text in spec:
            lo_text, dash, hi_text = text.partition("-")
            try:
                lo = int(lo_text.strip(), 0)
                hi = int(hi_text.strip(), 0) if dash else lo  # "0x100-" is an error, not 0x100
            except ValueError:
                raise invalid(key, f"expected ids like '0x100-0x10F' or '0x7DF', got {text!r}") from None
            if not 0 <= lo <= hi <= maximum:
                raise invalid(key, f"range {text!r} must satisfy 0 <= low <= high <= {maximum:#x}")
            pairs.append((lo, hi))
        pairs.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in pairs:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        self._starts = [lo for lo, _ in merged]
        self._ends = [hi for _, hi in merged]
        self.spec = spec

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int):
            return False
        i = bisect.bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self._ends[i]

    def __bool__(self) -> bool:
        return bool(self._starts)

    def spans(self) -> tuple[tuple[int, int], ...]:
        """The ranges as sorted, disjoint, non-adjacent ``(low, high)`` pairs, both ends included."""
        return tuple(zip(self._starts, self._ends, strict=True))

    def __repr__(self) -> str:
        return f"IdRanges({list(self.spec)!r})"
