"""A spare process waiting in a fresh cgroup, so a spawn does not pay the cgroup attach.

The first cgroup v1 attach after an idle spell waits for an RCU grace period (~10 ms, most of a
sandboxed spawn). The zygote keeps one process waiting in a fresh, limitless cgroup; a spawn
writes the agent's limits into that cgroup and hands the spare the agent's spec.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

from clove.errors import SandboxError
from clove.sandbox.cgroups import AgentCgroup, CgroupBackend
from clove.sandbox.launcher import ZygoteLauncher
from clove.sandbox.limits import Limits

log = logging.getLogger(__name__)


class Spares:
    """At most one prepared spare. ``discard`` kills and removes a cgroup (retrying later if
    it is still busy)."""

    def __init__(self, backend: CgroupBackend | None, launcher: ZygoteLauncher, discard: Callable[[AgentCgroup], None]) -> None:
        self.backend = backend
        self.launcher = launcher
        self.discard = discard
        self._spare: tuple[AgentCgroup, str] | None = None
        self._seq = itertools.count(1)
        self.stopped = False

    def prepare(self) -> None:
        """Start a spare if there is none (no-op without cgroups, zygote, or when stopping)."""
        if self.backend is None or self._spare is not None or self.stopped or self.launcher.sock is None:
            return
        slot = f"slot-{next(self._seq)}"
        try:
            cgroup = self.backend.create(slot, Limits())
        except SandboxError as err:
            log.warning("no spare: %s", err.message)
            return
        try:
            self.launcher.prepare(slot, cgroup.attach_paths)
        except SandboxError as err:
            log.warning("no spare: %s", err.message)
            self.discard(cgroup)
            return
        self._spare = (cgroup, slot)

    def take(self, limits: Limits) -> tuple[AgentCgroup, str] | None:
        """The spare's cgroup (now with ``limits``) and slot name, or None to spawn anew."""
        if self._spare is None or self.backend is None:
            return None
        cgroup, slot = self._spare
        self._spare = None
        try:
            self.backend.apply_limits(cgroup, limits)
        except SandboxError as err:  # e.g. the spare already uses more than the memory limit
            log.warning("spare %s unusable: %s", slot, err.message)
            self._drop(cgroup, slot)
            return None
        return cgroup, slot

    def lost(self) -> None:
        """The zygote died, and the spare with it."""
        if self._spare is not None:
            self.discard(self._spare[0])
            self._spare = None

    def stop(self) -> None:
        self.stopped = True
        if self._spare is not None:
            self._drop(*self._spare)
            self._spare = None

    def _drop(self, cgroup: AgentCgroup, slot: str) -> None:
        try:
            self.launcher.drop_spare(slot)
        except SandboxError:
            pass
        self.discard(cgroup)
