"""The kernel's pool of prepared spares: agent trees the zygote has made ahead of time, in fresh
cgroups, as far as they can go without knowing the agent (:mod:`clove.sandbox.sparechild`: the
cgroup attach, the work dir's image and mount, the namespaces). A sandboxed spawn claims the
oldest made one; the pool follows recent demand (:mod:`.sparepolicy`).

The kernel's part is small and never waits: a cgroup directory per spare (with a pids limit
until a spawn writes the agent's own limits), a ``prepare`` message to the zygote, its
``spare_ready`` and ``spare_gone`` events, a ``drop_spare`` and the cgroup's removal when the
pool shrinks. At most :data:`STEP` spares are made or dropped per
call, so a burst spreads that work over the loop's turns; the zygote and the spares themselves
do the rest. A spare being made when its claim comes is simply finished first (the spawn waits
for it, never longer than a fresh fork would take).

Each spare's image is a file in ``<state_dir>/spares``, which the claim moves to the agent's dir;
whatever a dropped or dead spare left there is removed (:meth:`Spares.sweep`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from clove.config import KernelConfig, SandboxSection
from clove.errors import SandboxError
from clove.kernel.supervision.sparepolicy import Demand, PoolBounds, mem_available, memory_room, pool_target
from clove.sandbox import workdir
from clove.sandbox.cgroups import AgentCgroup, CgroupBackend
from clove.sandbox.launcher import ZygoteLauncher
from clove.sandbox.limits import Limits
from clove.sandbox.spec import StagedImage

log = logging.getLogger(__name__)

#: The most spares made, or dropped, per call: the rest at the next turn of the loop.
STEP: Final = 2
#: The most spares being made at once. Made in parallel on a small board they only slow each
#: other down (and the spawns running beside them); a claim prefers a made one.
MAKING: Final = 2
#: What an unclaimed spare may use: its two processes and mkfs. A claim writes the agent's own
#: limits. No memory limit here: cgroup v1 refuses to raise ``memory.limit_in_bytes`` above the
#: ``memsw`` limit it would have, and the pool's memory is bounded by its size (:mod:`.sparepolicy`).
SPARE_LIMITS: Final = Limits(pids=8)
#: How often MemAvailable is read, and leftovers swept, at most.
MEMORY_EVERY_S: Final = 1.0
SWEEP_EVERY_S: Final = 10.0
#: A claimed spare's image may still be moved this long after the claim; left later, it is litter.
CLAIM_GRACE_S: Final = 60.0


@dataclass
class Spare:
    """One spare: its cgroup, its slot (the zygote's name for it), and whether it is made."""

    cgroup: AgentCgroup
    slot: str
    ready: bool = False


class Spares:
    """The pool (see the module docstring). ``discard`` kills and removes a cgroup (retrying
    later if it is still busy).

    :param settings: the ``[sandbox]`` table (``spares_max``, ``spares_min``, ``spares_per_agent``).
    :param agent_bytes: the default memory limit of an agent (what each spare's agent may need).
    :param image_bytes: the default work dir image size, which spares make ahead; ``None``: none.
    :param spares_dir: where spares keep their images (emptied now); ``None``: no images.
    """

    def __init__(
        self,
        backend: CgroupBackend | None,
        launcher: ZygoteLauncher,
        discard: Callable[[AgentCgroup], None],
        *,
        settings: SandboxSection | None = None,
        agent_bytes: int = 256 << 20,
        image_bytes: int | None = None,
        spares_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        available: Callable[[], int | None] = mem_available,
    ) -> None:
        settings = settings or SandboxSection()
        self.backend = backend
        self.launcher = launcher
        self.discard = discard
        self.bounds = PoolBounds(settings.spares_min, settings.spares_max)
        self.demand = Demand(per_agent=settings.spares_per_agent, clock=clock)
        self.agent_bytes = agent_bytes
        self.clock = clock
        self.available = available
        self.stopped = False
        self.pool: list[Spare] = []  # oldest first
        self.counts = {"prepared": 0, "claimed": 0, "served": 0, "fresh": 0, "dropped": 0, "died": 0}
        self._seq = itertools.count(1)
        self._room = (-MEMORY_EVERY_S, 0)
        self._swept = clock()
        self._claimed: dict[str, float] = {}
        self.dir = spares_dir
        self.image_bytes = image_bytes if spares_dir is not None else None
        if spares_dir is not None:
            shutil.rmtree(spares_dir, ignore_errors=True)  # a dead kernel's; no spare of ours yet
            (spares_dir / "stage").mkdir(mode=0o700, parents=True)

    @classmethod
    def from_config(
        cls, config: KernelConfig, backend: CgroupBackend | None, launcher: ZygoteLauncher, discard: Callable[[AgentCgroup], None], spares_dir: Path
    ) -> Spares:
        """The pool the kernel's config asks for: spares stage images of the default work dir
        size where work dirs are bounded (:func:`clove.sandbox.workdir.unsupported`)."""
        defaults = config.limits.defaults
        return cls(
            backend,
            launcher,
            discard,
            settings=config.sandbox,
            agent_bytes=defaults.memory_bytes,
            image_bytes=defaults.workdir_bytes if workdir.unsupported() is None else None,
            spares_dir=spares_dir,
        )

    # ---- sizing ------------------------------------------------------------------------------

    def demanded(self, agent: int | None) -> None:
        """A spawn was asked for (by ``agent``; ``None``: an operator or the config)."""
        self.demand.record(agent)

    def target(self) -> int:
        """How many spares the pool should hold now."""
        if self.backend is None or self.stopped:
            return 0
        now = self.clock()
        if now - self._room[0] >= MEMORY_EVERY_S:
            self._room = (now, memory_room(self.available(), self.agent_bytes))
        return pool_target(self.demand.rate(), self.bounds, self._room[1])

    # ---- the pool ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Make spares up to the target, at most :data:`STEP` now and :data:`MAKING` at once
        (no-op without cgroups or a zygote, or when stopping)."""
        if self.launcher.sock is None:
            return
        making = sum(1 for spare in self.pool if not spare.ready)
        missing = min(STEP, MAKING - making, self.target() - len(self.pool))
        for _ in range(missing):
            if not self._prepare_one():
                return

    def _prepare_one(self) -> bool:
        assert self.backend is not None  # noqa: S101 - target() is 0 without one
        slot = f"slot-{next(self._seq)}"
        try:
            cgroup = self.backend.create(slot, SPARE_LIMITS)
        except SandboxError as err:
            log.warning("no spare: %s", err.message)
            return False
        try:
            self.launcher.prepare(slot, cgroup.attach_paths, self._stage(slot))
        except SandboxError as err:
            log.warning("no spare: %s", err.message)
            self.discard(cgroup)
            self._remove_files(slot)
            return False
        self.pool.append(Spare(cgroup, slot))
        self.counts["prepared"] += 1
        return True

    def _stage(self, slot: str) -> StagedImage | None:
        if self.dir is None or not self.image_bytes:
            return None
        template = str(self.dir / f"template-{self.image_bytes}.img")
        return StagedImage(path=str(self.dir / f"{slot}.img"), size=self.image_bytes, mount=str(self.dir / "stage"), template=template)

    def take(self, limits: Limits) -> tuple[AgentCgroup, str] | None:
        """The oldest made spare's cgroup (now with ``limits``) and slot name; the oldest one
        being made when none is (it is done sooner than a fresh fork); None to spawn anew.
        Only a sandboxed agent may take one (a spare has its namespaces already)."""
        if not self.pool or self.backend is None:
            return None
        spare = next((s for s in self.pool if s.ready), self.pool[0])
        self.pool.remove(spare)
        cgroup, slot = spare.cgroup, spare.slot
        try:
            self.backend.apply_limits(cgroup, limits)
        except SandboxError as err:  # e.g. the spare already uses more than the memory limit
            log.warning("spare %s unusable: %s", slot, err.message)
            self._drop(cgroup, slot)
            return None
        self.counts["claimed"] += 1
        self._claimed[slot] = self.clock()
        return cgroup, slot

    def forked(self, spare: bool) -> None:
        """The zygote reported a tree: made from a spare, or forked anew."""
        self.counts["served" if spare else "fresh"] += 1

    def reported(self, event: str, slot: str) -> None:
        """The zygote's word on a spare: ``spare_ready`` (made) or ``spare_gone`` (it died
        unused: its cgroup and files go, and another is made in its place)."""
        spare = next((s for s in self.pool if s.slot == slot), None)
        if spare is None:
            return
        if event == "spare_ready":
            spare.ready = True
        elif event == "spare_gone":
            self.pool.remove(spare)
            self.discard(spare.cgroup)
            self._remove_files(slot)
            self.counts["died"] += 1
        self.prepare()

    def tick(self) -> None:
        """Housekeeping: shrink towards the target (at most :data:`STEP` now), refill, sweep."""
        if self.stopped:
            return
        extra = min(STEP, len(self.pool) - self.target())
        for _ in range(extra):
            spare = self.pool.pop()  # the newest: the oldest are the readiest
            self._drop(spare.cgroup, spare.slot)
        self.prepare()
        if self.clock() - self._swept >= SWEEP_EVERY_S:
            self.sweep()

    def sweep(self) -> None:
        """Remove images no spare will use: a dropped or dead spare's, a claim's that failed."""
        self._swept = now = self.clock()
        if self.dir is None:
            return
        pooled = {spare.slot for spare in self.pool}
        self._claimed = {s: t for s, t in self._claimed.items() if now - t < CLAIM_GRACE_S}
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        for name in names:
            slot = name.split(".", 1)[0]
            if slot.startswith("slot-") and slot not in pooled and slot not in self._claimed:
                with contextlib.suppress(OSError):
                    os.unlink(self.dir / name)
            elif slot.startswith("template-") and not name.endswith(".img"):  # a maker killed mid-mkfs
                with contextlib.suppress(OSError):
                    if time.time() - os.stat(self.dir / name).st_mtime > CLAIM_GRACE_S:
                        os.unlink(self.dir / name)

    def lost(self) -> None:
        """The zygote died, and the spares with it."""
        while self.pool:
            spare = self.pool.pop()
            self.discard(spare.cgroup)
            self._remove_files(spare.slot)

    def stop(self) -> None:
        """Shutdown: drop every spare, and the spares dir with the templates."""
        self.stopped = True
        while self.pool:
            spare = self.pool.pop()
            self._drop(spare.cgroup, spare.slot)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _drop(self, cgroup: AgentCgroup, slot: str) -> None:
        with contextlib.suppress(SandboxError):
            self.launcher.drop_spare(slot)
        self.discard(cgroup)
        self._remove_files(slot)
        self.counts["dropped"] += 1

    def _remove_files(self, slot: str) -> None:
        stage = self._stage(slot)
        if stage is not None:
            stage.discard()

    def info(self) -> dict[str, Any]:
        """For ``kernel.info``: the pool now, its bounds, and what became of spares so far
        (``served``: spawns a spare became; ``fresh``: spawns forked anew)."""
        return {
            "pool": len(self.pool),
            "ready": sum(1 for spare in self.pool if spare.ready),
            "target": self.target(),
            "min": self.bounds.minimum,
            "max": self.bounds.maximum,
            "demand": round(self.demand.rate(), 2),
            "slots": [spare.slot for spare in self.pool],
            **self.counts,
        }
