"""Receive ids as CAN acceptance filters: id ranges → ``(id, mask)`` pairs, exactly.

A pair ``(id, mask)`` accepts a frame whose arbitration id ``a`` has ``a & mask == id & mask``
(python-can's filters; SocketCAN's ``CAN_RAW_FILTER``, which ``set_filters`` installs on a
``socketcan`` bus). Masks here keep to the 29 id bits, so a pair accepts the 11-bit and the
29-bit frame with the same number, and remote frames, as a grant's ``recv_ids`` do; error frames
are not id-filtered (SocketCAN delivers them by ``CAN_RAW_ERR_FILTER`` alone, and the driver's
own filter lets them through).

Pure: the kernel runs :func:`receive_filter` on every subscribe and unsubscribe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from clove.errors import InvalidArguments
from clove_driver_can.frames import MAX_EXT_ID

__all__ = [
    "EXT_BITS",
    "MAX_FILTERS",
    "accepts",
    "id_mask_cover",
    "merge_ranges",
    "parse_receive_filter",
    "receive_filter",
    "within_limit",
]

#: Identifier bits of an extended frame; every mask here lies within them.
EXT_BITS = 29
#: ``CAN_RAW_FILTER_MAX`` (linux/can/raw.h): the most filters one CAN_RAW socket takes.
MAX_FILTERS = 512


def merge_ranges(ranges: Iterable[tuple[int, int]], *, bits: int = EXT_BITS) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-adjacent ``(low, high)`` ranges (both ends included).

    :raises ValueError: a range outside ``0..2**bits - 1`` or with ``low > high``.
    """
    top = (1 << bits) - 1
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if not 0 <= lo <= hi <= top:
            raise ValueError(f"range ({lo:#x}, {hi:#x}) must satisfy 0 <= low <= high <= {top:#x}")
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def id_mask_cover(ranges: Iterable[tuple[int, int]], *, bits: int = EXT_BITS) -> list[tuple[int, int]]:
    """``(id, mask)`` pairs accepting exactly the ids in ``ranges``: every id in a range, and
    no other id of ``0..2**bits - 1``. Sorted by id; ``[]`` for no ranges.

    Each range is first cut into the fewest aligned power-of-two blocks (one pair each: the
    high bits fixed, the low bits free), which is the smallest cover by such blocks (the
    decomposition CIDR uses for address ranges). Then two pairs with the same mask whose ids
    differ in exactly one fixed bit are joined into one pair that frees that bit (their union
    is exactly that pair), until no two can be joined: ``0x100-0x10F`` and ``0x300-0x30F``
    become ``(0x100, 0x1FFFFDF0)``. The result is never longer than the block cover and the
    pairs never overlap. It is not always the shortest cover by arbitrary masks (``1-6`` takes
    4 pairs here and 3 at best, with overlapping pairs); finding that is a minimum-DNF problem,
    not worth solving on every subscribe.

    :raises ValueError: a range outside ``0..2**bits - 1``.
    """
    full = (1 << bits) - 1
    cubes: set[tuple[int, int]] = set()  # (value, free bits); value has its free bits cleared
    for lo, hi in merge_ranges(ranges, bits=bits):
        while lo <= hi:
            align = (lo & -lo).bit_length() - 1 if lo else bits
            size = min(align, (hi - lo + 1).bit_length() - 1)
            cubes.add((lo, (1 << size) - 1))
            lo += 1 << size
    cubes = _join(cubes, bits)
    return sorted((value, full & ~free) for value, free in cubes)


def _join(cubes: set[tuple[int, int]], bits: int) -> set[tuple[int, int]]:
    """Join pairs of equal-shaped blocks that differ in one fixed bit, to a fixpoint. Each join
    replaces two disjoint blocks by their union, so the cover stays exact and disjoint."""
    while True:
        by_free: dict[int, list[int]] = {}
        for value, free in cubes:
            by_free.setdefault(free, []).append(value)
        joined: set[tuple[int, int]] = set()
        changed = False
        for free, values in by_free.items():
            left = set(values)
            for value in sorted(values):
                if value not in left:
                    continue
                left.discard(value)
                for b in range(bits):
                    bit = 1 << b
                    if free & bit or value ^ bit not in left:
                        continue
                    left.discard(value ^ bit)
                    joined.add((value & ~bit, free | bit))
                    changed = True
                    break
                else:
                    joined.add((value, free))
        cubes = joined
        if not changed:
            return cubes


def within_limit(
    ranges: Iterable[tuple[int, int]], limit: int = MAX_FILTERS, *, bits: int = EXT_BITS
) -> list[tuple[int, int]] | None:
    """:func:`id_mask_cover` in at most ``limit`` pairs. When the exact cover is longer, every
    gap between ranges up to some size is filled (a wider filter: more ids pass, none is lost);
    the size is found by bisection over the gaps. ``None`` when even one range from the lowest
    to the highest id needs more than ``limit`` pairs (never, for ``limit >= 2 * bits - 2``)."""
    merged = merge_ranges(ranges, bits=bits)
    pairs = id_mask_cover(merged, bits=bits)
    if len(pairs) <= limit:
        return pairs
    gaps = sorted({merged[i + 1][0] - merged[i][1] for i in range(len(merged) - 1)})
    lo_i, hi_i = 0, len(gaps) - 1  # fill every gap up to gaps[k]: the smallest k that fits
    best: list[tuple[int, int]] | None = None
    while lo_i <= hi_i:
        mid = (lo_i + hi_i) // 2
        filled = id_mask_cover(_fill(merged, gaps[mid]), bits=bits)
        if len(filled) <= limit:
            best, hi_i = filled, mid - 1
        else:
            lo_i = mid + 1
    return best


def _fill(merged: Sequence[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """``merged`` with every gap of at most ``gap`` ids (start-to-end distance) filled."""
    out: list[tuple[int, int]] = []
    for lo, hi in merged:
        if out and lo - out[-1][1] <= gap:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def receive_filter(scopes: Iterable[Iterable[tuple[int, int]]]) -> list[dict[str, int]] | None:
    """The host's filter for listeners whose grants admit ``scopes`` (each a grant's
    ``recv_ids`` ranges): python-can filter tables for their union (``[]``: nothing), or
    ``None`` (no filter) if no cover fits in :data:`MAX_FILTERS` pairs."""
    pairs = within_limit([span for scope in scopes for span in scope])
    if pairs is None:
        return None
    return [{"can_id": can_id, "can_mask": can_mask} for can_id, can_mask in pairs]


def parse_receive_filter(spec: Any) -> tuple[tuple[int, int], ...]:
    """A filter from :func:`receive_filter` as ``(id, mask)`` pairs.

    :raises InvalidArguments: not a list of ``{can_id, can_mask}`` tables with 29-bit values.
    """
    if not isinstance(spec, (list, tuple)):
        raise InvalidArguments(f"a CAN stream filter is a list of {{can_id, can_mask}} tables, got {type(spec).__name__}")
    pairs = []
    for index, entry in enumerate(spec):
        if not isinstance(entry, dict) or set(entry) != {"can_id", "can_mask"}:
            raise InvalidArguments(f"CAN stream filter {index}: expected {{can_id, can_mask}}, got {entry!r}")
        values = entry["can_id"], entry["can_mask"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_EXT_ID for v in values):
            raise InvalidArguments(f"CAN stream filter {index}: can_id and can_mask must be 29-bit ints, got {entry!r}")
        pairs.append((values[0], values[1]))
    return tuple(pairs)


def accepts(pairs: Sequence[tuple[int, int]]) -> Callable[[int], bool]:
    """A predicate over arbitration ids: whether any pair accepts it. Pairs with the same mask
    share one set lookup, so a long cover costs one lookup per distinct mask."""
    by_mask: dict[int, set[int]] = {}
    for can_id, can_mask in pairs:
        by_mask.setdefault(can_mask, set()).add(can_id & can_mask)
    tables = tuple(by_mask.items())

    def accept(ident: int) -> bool:
        for can_mask, ids in tables:  # noqa: SIM110 - per frame: a loop beats any() over a generator
            if ident & can_mask in ids:
                return True
        return False

    return accept
