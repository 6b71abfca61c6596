"""Receive ids as (id, mask) acceptance filters: the cover is exact (every granted id passes, no
other id does) under python-can's and SocketCAN's matching rules, and short."""

from __future__ import annotations

import functools
import random
import struct

import pytest

from clove.errors import InvalidArguments
from clove_driver_can.filters import (
    MAX_FILTERS,
    accepts,
    id_mask_cover,
    merge_ranges,
    parse_receive_filter,
    receive_filter,
    within_limit,
)

EXT = 0x1FFFFFFF
CAN_EFF_FLAG, CAN_RTR_FLAG = 0x80000000, 0x40000000


def python_can_matches(pairs: list[tuple[int, int]], ident: int) -> bool:
    """python-can's ``BusABC._matches_filters`` for filters without ``extended``."""
    return any((can_id ^ ident) & can_mask == 0 for can_id, can_mask in pairs)


def socketcan_matches(pairs: list[tuple[int, int]], can_id: int) -> bool:
    """The Linux CAN_RAW filter test on a received ``can_id`` (flags included), after python-can's
    ``pack_filters`` (which leaves a filter without ``extended`` as it is)."""
    return any(can_id & can_mask == fid & can_mask for fid, can_mask in pairs)


def in_ranges(ranges: list[tuple[int, int]], ident: int) -> bool:
    return any(lo <= ident <= hi for lo, hi in ranges)


def random_ranges(rng: random.Random, top: int, count: int, width: int) -> list[tuple[int, int]]:
    out = []
    for _ in range(count):
        lo = rng.randrange(top + 1)
        out.append((lo, min(top, lo + rng.randrange(width))))
    return out


def probes(ranges: list[tuple[int, int]], rng: random.Random, bits: int = 29) -> set[int]:
    """Ids worth checking in a 29-bit space: each range's ends and neighbours, each end with
    one bit flipped (where a wrong mask would leak), and random ids."""
    top = (1 << bits) - 1
    ids = {0, top, *(rng.randrange(top + 1) for _ in range(2000))}
    for lo, hi in ranges:
        for edge in (lo, hi):
            ids.update(edge + d for d in (-2, -1, 0, 1, 2))
            ids.update(edge ^ (1 << b) for b in range(bits))
        ids.update(rng.randint(lo, hi) for _ in range(20))
    return {i for i in ids if 0 <= i <= top}


# ---- exact cover ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_every_11_bit_id_passes_iff_it_is_in_a_range(seed: int) -> None:
    rng = random.Random(seed)
    ranges = random_ranges(rng, 0x7FF, rng.randint(1, 6), rng.choice([1, 4, 40, 300]))
    pairs = id_mask_cover(ranges)
    accept = accepts(pairs)
    for ident in range(0x800):
        want = in_ranges(ranges, ident)
        assert python_can_matches(pairs, ident) is want, (hex(ident), ranges, pairs)
        assert accept(ident) is want
        # SocketCAN: the standard frame, the extended frame with the same number, a remote frame
        assert socketcan_matches(pairs, ident) is want
        assert socketcan_matches(pairs, ident | CAN_EFF_FLAG) is want
        assert socketcan_matches(pairs, ident | CAN_RTR_FLAG) is want


@pytest.mark.parametrize("seed", range(40))
def test_sampled_29_bit_ids_pass_iff_they_are_in_a_range(seed: int) -> None:
    rng = random.Random(1000 + seed)
    width = rng.choice([1, 16, 5000, 1 << 20, 1 << 27])
    ranges = random_ranges(rng, EXT, rng.randint(1, 8), width)
    pairs = id_mask_cover(ranges)
    accept = accepts(pairs)
    for ident in probes(ranges, rng):
        want = in_ranges(ranges, ident)
        assert python_can_matches(pairs, ident) is want, (hex(ident), ranges, pairs)
        assert accept(ident) is want
        assert socketcan_matches(pairs, ident | CAN_EFF_FLAG) is want


def test_every_interval_and_pair_of_intervals_of_a_small_space_is_covered_exactly() -> None:
    bits, top = 5, 31
    intervals = [(lo, hi) for lo in range(32) for hi in range(lo, 32)]
    rng = random.Random(7)
    cases = [[iv] for iv in intervals] + [rng.sample(intervals, 2) for _ in range(3000)]
    for ranges in cases:
        pairs = id_mask_cover(ranges, bits=bits)
        passed = {i for i in range(top + 1) if python_can_matches(pairs, i)}
        assert passed == {i for i in range(top + 1) if in_ranges(ranges, i)}, (ranges, pairs)
        assert all(m & ~top == 0 and i & ~m == 0 for i, m in pairs)  # ids within their masks


@pytest.mark.parametrize("seed", range(20))
def test_pairs_never_overlap(seed: int) -> None:
    rng = random.Random(2000 + seed)
    pairs = id_mask_cover(random_ranges(rng, 0x7FF, 8, 200))
    for ident in range(0x800):
        assert sum((i ^ ident) & m == 0 for i, m in pairs) <= 1


# ---- short -----------------------------------------------------------------------------------------


@functools.cache
def fewest_blocks(lo: int, hi: int) -> int:
    """The fewest aligned power-of-two blocks that make up exactly ``lo..hi`` (a search over
    every choice of first block, independent of the greedy cut)."""
    if lo > hi:
        return 0
    best = hi - lo + 1
    size = 1
    while lo % size == 0 and lo + size - 1 <= hi:
        best = min(best, 1 + fewest_blocks(lo + size, hi))
        size *= 2
    return best


def test_the_cover_is_never_longer_than_the_fewest_aligned_blocks() -> None:
    bits = 7
    rng = random.Random(3)
    for _ in range(3000):
        ranges = merge_ranges(random_ranges(rng, 127, rng.randint(1, 4), rng.choice([1, 8, 60])), bits=bits)
        assert len(id_mask_cover(ranges, bits=bits)) <= sum(fewest_blocks(lo, hi) for lo, hi in ranges)
    for lo in range(128):  # and for one interval, exactly that many (no two blocks join)
        for hi in range(lo, 128):
            assert len(id_mask_cover([(lo, hi)], bits=bits)) == fewest_blocks(lo, hi)


def test_known_covers() -> None:
    assert id_mask_cover([]) == []
    assert id_mask_cover([(0x100, 0x10F)]) == [(0x100, 0x1FFFFFF0)]
    assert id_mask_cover([(0x7DF, 0x7DF)]) == [(0x7DF, EXT)]
    assert id_mask_cover([(0, 0x7FF)]) == [(0, 0x1FFFF800)]  # every standard id (and those extended)
    assert id_mask_cover([(0, EXT)]) == [(0, 0)]
    assert id_mask_cover([(0x101, 0x102)]) == [(0x101, EXT), (0x102, EXT)]
    assert len(id_mask_cover([(1, 0x1FFFFFFE)])) == 2 * 29 - 2  # the worst case for one range
    # equal blocks one bit apart join: two PDO ranges, and the even ids
    assert id_mask_cover([(0x100, 0x10F), (0x180, 0x18F)]) == [(0x100, 0x1FFFFF70)]
    assert id_mask_cover([(0x100, 0x10F), (0x300, 0x30F)]) == [(0x100, 0x1FFFFDF0)]
    assert id_mask_cover([(i, i) for i in range(0, 0x800, 2)]) == [(0, 0x1FFFF801)]
    # overlapping and adjacent ranges merge first
    assert id_mask_cover([(0x100, 0x107), (0x108, 0x10F), (0x104, 0x10A)]) == [(0x100, 0x1FFFFFF0)]


def test_bad_ranges_are_refused() -> None:
    for bad in ([(5, 4)], [(0, EXT + 1)], [(-1, 3)]):
        with pytest.raises(ValueError, match="0 <= low <= high"):
            id_mask_cover(bad)


# ---- the host's filter -----------------------------------------------------------------------------


def test_a_cover_over_the_limit_widens_and_never_loses_an_id() -> None:
    scattered = [(i * 5, i * 5) for i in range(300)]  # 300 lone ids
    exact = id_mask_cover(scattered)
    assert len(exact) > 20
    wide = within_limit(scattered, 20)
    assert wide is not None and len(wide) <= 20
    assert all(python_can_matches(wide, lo) for lo, _ in scattered)
    assert within_limit(scattered, MAX_FILTERS) == exact  # fits: exact
    assert within_limit([(1, 0x1FFFFFFE)], 10) is None  # one range that needs 56 pairs


def test_receive_filter_is_the_union_of_the_scopes_as_python_can_tables() -> None:
    scopes = [((0x180, 0x18F),), ((0x100, 0x10F), (0x7DF, 0x7DF)), ()]
    assert receive_filter(scopes) == [
        {"can_id": 0x100, "can_mask": 0x1FFFFF70},
        {"can_id": 0x7DF, "can_mask": EXT},
    ]
    assert receive_filter([]) == []  # nobody listens: nothing
    assert receive_filter([()]) == []  # a grant without recv_ids: nothing either


def test_parse_receive_filter_checks_what_the_host_is_sent() -> None:
    spec = receive_filter([((0x180, 0x18F),)])
    assert parse_receive_filter(spec) == ((0x180, 0x1FFFFFF0),)
    assert parse_receive_filter([]) == ()
    for bad in ({"can_id": 1}, [{"can_id": 1}], [{"can_id": 1, "can_mask": 2, "extended": True}],
                [{"can_id": -1, "can_mask": 0}], [{"can_id": 1, "can_mask": 1 << 29}], [{"can_id": True, "can_mask": 1}]):  # fmt: skip
        with pytest.raises(InvalidArguments):
            parse_receive_filter(bad)


def test_python_can_packs_the_tables_unchanged_for_can_raw_filter() -> None:
    from can.interfaces.socketcan.utils import pack_filters

    from clove_driver_can.driver import _NOTHING

    tables = receive_filter([((0x180, 0x18F), (0x12345, 0x12345))])
    assert tables is not None
    packed = struct.unpack(f"={2 * len(tables)}I", pack_filters(tables))  # type: ignore[arg-type]
    assert list(zip(packed[::2], packed[1::2], strict=True)) == [(0x180, 0x1FFFFFF0), (0x12345, EXT)]
    # "nothing": a standard frame with bit 11 set, which no standard frame has
    can_id, can_mask = struct.unpack("=2I", pack_filters([_NOTHING]))  # type: ignore[list-item]
    assert (can_id, can_mask) == (0x800, CAN_EFF_FLAG | 0x800)
    assert not any(socketcan_matches([(can_id, can_mask)], i) for i in range(0x800))
    assert not socketcan_matches([(can_id, can_mask)], 0x800 | CAN_EFF_FLAG)
