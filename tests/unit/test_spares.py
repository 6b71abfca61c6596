"""The spare pool's sizing (demand, bounds, memory) and bookkeeping, with fakes and virtual time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clove.config import SandboxSection
from clove.errors import SandboxError
from clove.kernel.supervision.sparepolicy import (
    ALPHA,
    SPARE_BYTES,
    WINDOW_S,
    Demand,
    PoolBounds,
    mem_available,
    memory_room,
    pool_target,
)
from clove.kernel.supervision.spares import MAKING, STEP, Spares
from clove.sandbox.limits import Limits

GiB = 1 << 30


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeCgroup:
    def __init__(self, name: str) -> None:
        self.name = name
        self.attach_paths = (f"/fake/{name}/cgroup.procs",)
        self.limits: Limits | None = None


class FakeBackend:
    def __init__(self) -> None:
        self.created: list[FakeCgroup] = []
        self.refuse_limits = False

    def create(self, name: str, limits: Limits) -> FakeCgroup:
        cgroup = FakeCgroup(name)
        cgroup.limits = limits
        self.created.append(cgroup)
        return cgroup

    def apply_limits(self, cgroup: FakeCgroup, limits: Limits) -> None:
        if self.refuse_limits:
            raise SandboxError("the spare already uses more")
        cgroup.limits = limits


class FakeLauncher:
    def __init__(self) -> None:
        self.sock: object | None = object()
        self.prepared: list[str] = []
        self.dropped: list[str] = []

    def prepare(self, slot: str, attach: tuple[str, ...], stage: object = None) -> None:
        self.prepared.append(slot)

    def drop_spare(self, slot: str) -> None:
        self.dropped.append(slot)


def make_pool(*, maximum: int = 8, minimum: int = 1, per_agent: int = 2, available: int | None = 64 * GiB, spares_dir: Path | None = None):
    clock = Clock()
    backend, launcher, discarded = FakeBackend(), FakeLauncher(), []
    settings = SandboxSection(spares_max=maximum, spares_min=minimum, spares_per_agent=per_agent)
    pool = Spares(
        backend,  # type: ignore[arg-type]
        launcher,  # type: ignore[arg-type]
        discarded.append,
        settings=settings,
        clock=clock,
        available=lambda: available,
        spares_dir=spares_dir,
        image_bytes=256 << 20,
    )
    return pool, clock, backend, launcher, discarded


def fill(pool: Spares) -> None:
    """Let the zygote report every spare made, and the pool refill, until it stops growing."""
    for _ in range(100):
        before = len(pool.pool)
        for spare in list(pool.pool):
            if not spare.ready:
                pool.reported("spare_ready", spare.slot)
        pool.prepare()
        if len(pool.pool) == before and all(s.ready for s in pool.pool):
            return


# ---- demand ----------------------------------------------------------------------------------


def test_demand_counts_the_current_window_at_once_and_decays_when_idle() -> None:
    clock = Clock()
    demand = Demand(per_agent=2, clock=clock)
    for _ in range(6):
        assert demand.record(None)
    assert demand.rate() == 6  # a burst raises the rate before its window ends
    clock.advance(WINDOW_S)
    assert demand.rate() == pytest.approx(ALPHA * 6)
    clock.advance(WINDOW_S * 3)
    assert demand.rate() == pytest.approx(ALPHA * 6 * (1 - ALPHA) ** 3)
    clock.advance(3600)  # an hour idle: closed in one step, not window by window
    assert demand.rate() == 0


def test_one_agent_adds_at_most_its_share_to_a_window() -> None:
    clock = Clock()
    demand = Demand(per_agent=2, clock=clock)
    counted = [demand.record(7) for _ in range(50)]
    assert counted.count(True) == 2
    assert demand.record(8) and demand.record(None)  # others still count
    assert demand.rate() == 4
    clock.advance(WINDOW_S)
    assert demand.record(7)  # a new window, a new share


def test_pool_target_follows_demand_within_floor_ceiling_and_memory() -> None:
    bounds = PoolBounds(minimum=1, maximum=8)
    assert pool_target(0.0, bounds, room=100) == 1
    assert pool_target(3.4, bounds, room=100) == 3
    assert pool_target(3.6, bounds, room=100) == 4
    assert pool_target(500.0, bounds, room=100) == 8
    assert pool_target(500.0, bounds, room=2) == 2
    assert pool_target(0.0, bounds, room=0) == 0  # no memory for an agent: not even the floor
    assert pool_target(0.0, PoolBounds(0, 8), room=100) == 0


def test_memory_room_counts_each_spare_with_the_agent_it_becomes() -> None:
    agent = 256 << 20
    assert memory_room(None, agent) > 1000
    assert memory_room(3 * (agent + SPARE_BYTES), agent) == 3
    assert memory_room(agent, agent) == 0


def test_mem_available_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       1000 kB\nMemAvailable:    512 kB\n")
    assert mem_available(str(meminfo)) == 512 * 1024
    assert mem_available(str(tmp_path / "missing")) is None


# ---- the pool --------------------------------------------------------------------------------


def test_an_idle_pool_keeps_its_floor() -> None:
    pool, _, backend, launcher, _ = make_pool()
    pool.prepare()
    fill(pool)
    assert len(pool.pool) == 1 and launcher.prepared == ["slot-1"]
    assert backend.created[0].limits == Limits(pids=8)  # bounded before any agent's limits


def test_a_burst_grows_the_pool_a_few_at_a_time_up_to_the_ceiling() -> None:
    pool, _, _, launcher, _ = make_pool(maximum=5)
    for _ in range(40):
        pool.demanded(None)
    pool.prepare()
    assert len(pool.pool) == min(STEP, MAKING)  # never more than a few made at once
    pool.prepare()
    assert len(pool.pool) == MAKING  # ... nor more being made at once than MAKING
    fill(pool)
    assert len(pool.pool) == 5 and pool.target() == 5
    pool.tick()
    assert len(pool.pool) == 5 and len(launcher.prepared) == 5


def test_a_claim_prefers_a_made_spare_and_writes_the_agents_limits() -> None:
    pool, _, backend, _, _ = make_pool(maximum=3)
    for _ in range(3):
        pool.demanded(None)
    pool.prepare()
    pool.reported("spare_ready", "slot-2")
    taken = pool.take(Limits(memory_bytes=128 << 20, pids=64))
    assert taken is not None
    cgroup, slot = taken
    assert slot == "slot-2" and cgroup.limits == Limits(memory_bytes=128 << 20, pids=64)
    assert pool.take(Limits()) is not None  # none made: the oldest being made
    assert pool.counts["claimed"] == 2


def test_a_spare_that_refuses_the_limits_is_dropped() -> None:
    pool, _, backend, launcher, discarded = make_pool()
    pool.prepare()
    backend.refuse_limits = True
    assert pool.take(Limits(memory_bytes=1 << 20)) is None
    assert launcher.dropped == ["slot-1"] and len(discarded) == 1


def test_the_pool_shrinks_back_to_its_floor_when_demand_falls() -> None:
    pool, clock, _, launcher, discarded = make_pool(maximum=6)
    for _ in range(30):
        pool.demanded(None)
    fill(pool)
    assert len(pool.pool) == 6
    for _ in range(40):
        clock.advance(WINDOW_S)
        pool.tick()
    assert len(pool.pool) == 1
    assert len(launcher.dropped) == 5 and len(discarded) == 5


def test_a_spawn_flood_from_one_agent_does_not_inflate_the_pool() -> None:
    pool, clock, _, _, _ = make_pool(maximum=8, per_agent=2)
    seen = 0
    for _ in range(20):  # ten seconds of an agent spawning as fast as it can
        for _ in range(100):
            pool.demanded(42)
            if pool.pool:
                pool.take(Limits())
            pool.prepare()
            fill(pool)
            seen = max(seen, len(pool.pool), pool.target())
        clock.advance(WINDOW_S)
    assert seen <= 2


def test_operators_are_bounded_by_the_ceiling_only() -> None:
    pool, _, _, _, _ = make_pool(maximum=4)
    for _ in range(1000):
        pool.demanded(None)
    fill(pool)
    assert len(pool.pool) == 4 and pool.target() == 4


def test_no_spare_without_memory_for_the_agent_it_would_become() -> None:
    pool, _, _, launcher, _ = make_pool(available=100 << 20)  # less than one agent's 256 MiB
    pool.demanded(None)
    pool.prepare()
    assert pool.pool == [] and launcher.prepared == []


def test_spares_max_zero_means_no_spares() -> None:
    pool, _, _, launcher, _ = make_pool(maximum=0, minimum=0)
    pool.demanded(None)
    pool.prepare()
    assert launcher.prepared == [] and pool.take(Limits()) is None


def test_a_spare_that_died_is_replaced() -> None:
    pool, _, _, launcher, discarded = make_pool()
    pool.prepare()
    pool.reported("spare_gone", "slot-1")
    assert [s.slot for s in pool.pool] == ["slot-2"] and len(discarded) == 1
    assert pool.counts["died"] == 1
    pool.reported("spare_ready", "slot-99")  # an unknown slot: ignored


def test_a_lost_zygote_takes_every_spare_and_stop_drops_them() -> None:
    pool, _, _, launcher, discarded = make_pool(maximum=3)
    for _ in range(3):
        pool.demanded(None)
    fill(pool)
    pool.lost()
    assert pool.pool == [] and len(discarded) == 3 and launcher.dropped == []
    pool.prepare()
    pool.stop()
    assert pool.pool == [] and pool.stopped
    pool.prepare()
    assert pool.pool == []


def test_no_zygote_no_spares() -> None:
    pool, _, _, launcher, _ = make_pool()
    launcher.sock = None
    pool.prepare()
    assert launcher.prepared == []


def test_the_spares_dir_is_emptied_at_start_and_swept_of_leftovers(tmp_path: Path) -> None:
    spares_dir = tmp_path / "spares"
    spares_dir.mkdir()
    (spares_dir / "slot-3.img").write_text("a dead kernel's")
    pool, clock, _, _, _ = make_pool(spares_dir=spares_dir)
    assert sorted(p.name for p in spares_dir.iterdir()) == ["stage"]
    pool.prepare()
    taken = pool.take(Limits())
    assert taken is not None
    pool.prepare()
    for name in ("slot-1.img", "slot-2.img", "slot-7.img.new", "template-268435456.img", "template-268435456.img.77.new", "template-268435456.img.78"):
        (spares_dir / name).write_text("x")
    os.utime(spares_dir / "template-268435456.img.77.new", (0, 0))  # a maker killed long ago
    pool.sweep()
    left = sorted(p.name for p in spares_dir.iterdir())
    # claimed, pooled, the template, and a template still being made
    assert left == ["slot-1.img", "slot-2.img", "stage", "template-268435456.img", "template-268435456.img.78"]
    clock.advance(3600)
    pool.sweep()
    assert "slot-1.img" not in {p.name for p in spares_dir.iterdir()}  # a claim long done


def test_info_reports_the_pool() -> None:
    pool, _, _, _, _ = make_pool()
    pool.prepare()
    pool.forked(True)
    pool.forked(False)
    info = pool.info()
    assert info["pool"] == 1 and info["ready"] == 0 and info["max"] == 8 and info["min"] == 1
    assert info["served"] == 1 and info["fresh"] == 1 and info["slots"] == ["slot-1"]
