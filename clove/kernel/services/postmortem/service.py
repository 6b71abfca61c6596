"""The post-mortem service: the kernel side of the bundles (``kernel.postmortem``).

Threads: everything here runs on the loop thread except :func:`finish_and_write`, which one
:class:`~clove.kernel.core.workers.WorkerPool` thread runs on a :class:`Work` gathered beforehand: it
cuts the agent's journal slice from a copy of the journal's ring (walking up to the whole ring
is the one step whose cost grows, so it stays off the loop) and writes the bundle. The outcome
comes back through the pool's wake-up pipe and is journaled as ``agent.postmortem``.

A failure to capture or write is logged and journaled, never raised into the supervisor: a
post-mortem must not cause a second death.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from clove import __version__
from clove.config import PostmortemSection
from clove.errors import CloveError
from clove.kernel.audit.journal import Category, Journal
from clove.kernel.core.agents import Agent, AgentState, ExitInfo
from clove.kernel.core.loop import Loop
from clove.kernel.core.workers import WorkerPool
from clove.kernel.services.postmortem import store
from clove.kernel.services.postmortem.bundle import BundleJob, BundleResult, bundle_dir_name, write_bundle
from clove.kernel.services.postmortem.capture import Death, capture, journal_slice, log_tail, summary, trigger

if TYPE_CHECKING:
    from clove.kernel.services.host import ServiceRegistry
    from clove.kernel.supervision.runtime import Runtime

log = logging.getLogger(__name__)

S = AgentState
#: The states an exit settles into once the supervisor has decided what follows it.
_AFTER_EXIT: Final = frozenset({S.BACKOFF, S.EXITED, S.FAILED})
#: Bundles waiting for the writer beyond this are dropped (a crash loop on a slow disk).
MAX_QUEUED: Final = 16
#: How long shutdown waits for bundles still being written.
SHUTDOWN_WAIT: Final = 3.0


@dataclasses.dataclass(frozen=True, slots=True)
class Work:
    """A bundle for the writer thread: everything but the journal slice, and what to cut it
    from. Owned by the writer once submitted."""

    job: BundleJob
    ring: list[dict[str, Any]]
    agent_id: int
    records: int


def finish_and_write(work: Work) -> BundleResult:
    """Writer thread: cut the journal slice, note it in the summary, write the bundle."""
    records, since_start = journal_slice(work.ring, work.agent_id, work.records)
    summary = {
        **work.job.summary,
        "journal": {
            "records": len(records),
            "since_start": since_start,
            "first_id": records[0]["id"] if records else None,
            "last_id": records[-1]["id"] if records else None,
        },
    }
    return write_bundle(dataclasses.replace(work.job, summary=summary, journal=records))


@dataclasses.dataclass(frozen=True, slots=True)
class _Submitted:
    agent_id: int
    name: str
    trigger: str
    reason: str
    dir_name: str
    loop_ns: int


class PostmortemService:
    """Captures abnormal deaths and has their bundles written under ``root``.

    :param settings: the ``[postmortem]`` table.
    :param root: ``<state dir>/postmortem``.
    :param facts: JSON-safe facts about the kernel, stamped on every summary.
    :param recorder: returns the kernel's recorder, if any: an object whose
        ``export_agent(name) -> list[dict] | None`` gives the agent's recording (data the
        caller owns: it is written on the worker thread).
    """

    def __init__(
        self,
        settings: PostmortemSection,
        *,
        root: Path,
        loop: Loop,
        journal: Journal,
        facts: dict[str, Any],
        recorder: Callable[[], object | None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.root = root
        self._loop = loop
        self._journal = journal
        self._facts = facts
        self._recorder = recorder
        self._pending: dict[int, Death] = {}
        self._jobs: dict[int, _Submitted] = {}
        self._keys = itertools.count(1)
        self._pool: WorkerPool | None = None
        self.counters = {"written": 0, "failed": 0, "dropped": 0}
        if settings.enabled:
            self._pool = WorkerPool(finish_and_write, max_workers=1, name="clove-postmortem")
            loop.add_reader(self._pool.fileno(), self._collect)

    # ---- supervisor hooks ------------------------------------------------------------------------

    def on_exit(self, agent: Agent, rt: Runtime, info: ExitInfo) -> None:
        """Exit hook: read the cgroup's counters before the supervisor removes the cgroup, and
        drain what the agent wrote last into its log."""
        started = time.perf_counter_ns()
        stats: dict[str, int] = {}
        if rt.cgroup is not None:
            try:
                stats = rt.cgroup.stats()
            except (OSError, CloveError) as err:
                log.warning("post-mortem of %s: cannot read cgroup counters: %s", agent.name, err)
        try:
            rt.logs.drain()
        except OSError as err:
            log.warning("post-mortem of %s: cannot drain its log: %s", agent.name, err)
        death = capture(agent, info, stats, rt.cgroup.name if rt.cgroup else None, rt.logs.path)
        death.loop_ns = time.perf_counter_ns() - started
        self._pending[agent.id] = death

    def on_lifecycle(self, event_type: str, agent: Agent, details: dict[str, Any]) -> None:
        """Supervisor listener: note an escalation, and once the exit has settled (a restart
        scheduled, or a terminal state) decide and gather the bundle."""
        try:
            self._on_lifecycle(event_type, agent, details)
        except Exception:
            log.exception("post-mortem of %s failed", agent.name)
            self._record(agent.id, agent.name, "postmortem.failed", {"error": "capture failed; see the kernel log"})

    def _on_lifecycle(self, event_type: str, agent: Agent, details: dict[str, Any]) -> None:
        if event_type == "agent.removed":
            self._pending.pop(agent.id, None)
            return
        death = self._pending.get(agent.id)
        if death is None:
            return
        if event_type == "agent.escalated":
            death.escalation = dict(details)
        elif event_type == "agent.state" and agent.state in _AFTER_EXIT:
            del self._pending[agent.id]
            why = trigger(death)
            if why is not None:
                started = time.perf_counter_ns()
                work = self._gather(agent, death, why)
                self._submit(agent, work, death.loop_ns + time.perf_counter_ns() - started)

    # ---- gathering and writing -------------------------------------------------------------------

    def _gather(self, agent: Agent, death: Death, why: str) -> Work:
        cfg = self.settings
        log_bytes, cut = log_tail(death.log_path, cfg.log_tail_bytes) if death.log_path else (b"", False)
        recording, recording_info = self._recording(agent.name)
        facts = summary(agent, death, why=why, final_state=agent.state, kernel=self._facts)
        facts["log"] = {"bytes": len(log_bytes), "older_left_out": cut}
        facts["recording"] = recording_info
        job = BundleJob(
            root=self.root,
            agent_name=agent.name,
            dir_name=bundle_dir_name(death.exit.at, death.incarnation),
            summary=facts,
            log=log_bytes,
            recording=recording,
            keep=cfg.keep,
            max_bytes=cfg.max_bytes,
        )
        return Work(job=job, ring=self._journal.snapshot(), agent_id=agent.id, records=cfg.journal_records)

    def _recording(self, name: str) -> tuple[list[Any] | None, dict[str, Any]]:
        """The agent's recording through ``recorder.export_agent``, when the kernel has one."""
        export = getattr(self._recorder(), "export_agent", None)
        if not callable(export):
            return None, {"available": False}
        try:
            entries = export(name)
        except Exception as err:  # another feature's bug must not lose the rest of the bundle
            log.warning("post-mortem of %s: export_agent failed: %s", name, err)
            return None, {"available": True, "error": f"{type(err).__name__}: {err}"[:500]}
        if entries is None:
            return None, {"available": True, "entries": 0}
        if not isinstance(entries, list):
            return None, {"available": True, "error": f"export_agent returned {type(entries).__name__}, not a list"}
        return entries, {"available": True, "entries": len(entries)}

    def _submit(self, agent: Agent, work: Work, loop_ns: int) -> None:
        """Hand ``work`` to the writer thread; ``loop_ns`` is what gathering it cost the loop."""
        assert self._pool is not None  # noqa: S101 - only enabled services get hooked
        why = str(work.job.summary["trigger"])
        if self._pool.closed or len(self._jobs) >= MAX_QUEUED:
            self.counters["dropped"] += 1
            log.warning("post-mortem of %s dropped: %d bundles still being written", agent.name, len(self._jobs))
            self._record(agent.id, agent.name, "postmortem.dropped", {"trigger": why, "queued": len(self._jobs)})
            return
        key = next(self._keys)
        self._jobs[key] = _Submitted(agent.id, agent.name, why, str(work.job.summary["reason"]), work.job.dir_name, loop_ns)
        self._pool.submit(key, work)

    def _collect(self) -> None:
        """The pool's wake-up: journal each bundle written (or the reason it was not)."""
        assert self._pool is not None  # noqa: S101
        for key, outcome, failed in self._pool.completed():
            job = self._jobs.pop(key)
            if failed or not isinstance(outcome, BundleResult):
                self.counters["failed"] += 1
                log.error("post-mortem bundle of %s not written: %s", job.name, outcome)
                self._record(job.agent_id, job.name, "postmortem.failed", {"trigger": job.trigger, "bundle": job.dir_name, "error": str(outcome)[:500]})
                continue
            self.counters["written"] += 1
            log.info("post-mortem of %s (%s): %s, %d bytes", job.name, job.trigger, outcome.path, outcome.bytes)
            self._record(
                job.agent_id,
                job.name,
                "ok",
                {"path": str(outcome.path), "bundle": outcome.path.name, "trigger": job.trigger, "reason": job.reason,
                 "bytes": outcome.bytes, "files": outcome.files, "truncated": outcome.truncated, "pruned": outcome.pruned,
                 "loop_us": job.loop_ns // 1000},
            )  # fmt: skip

    def _record(self, agent_id: int, name: str, code: str, details: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the journal is closed (shutdown)
            self._journal.append(Category.AGENT_LIFECYCLE, "agent.postmortem", agent_id=agent_id, agent_name=name,
                                 decision="n/a", code=code, details=details)  # fmt: skip

    # ---- readers (the syscalls) ------------------------------------------------------------------

    def bundles(self, name: str | None = None) -> list[dict[str, Any]]:
        return store.list_bundles(self.root, name)

    def bundle(self, name: str, bundle: str = store.LATEST, include: list[str] | tuple[str, ...] = (), max_bytes: int = 64 << 10) -> dict[str, Any]:
        return store.view(store.find_bundle(self.root, name, bundle), include, max_bytes)

    # ---- housekeeping ------------------------------------------------------------------------------

    def held(self) -> dict[str, int]:
        return {"postmortem_pending": len(self._pending), "postmortem_jobs": len(self._jobs)}

    def close(self, wait: float = SHUTDOWN_WAIT) -> None:
        """Shutdown: let the bundles being written finish (at most ``wait`` seconds), journal
        them, stop the writer thread."""
        pool = self._pool
        if pool is None or pool.closed:
            return
        deadline = time.monotonic() + wait
        while self._jobs and (left := deadline - time.monotonic()) > 0:
            select.select([pool.fileno()], [], [], left)
            self._collect()
        if self._jobs:
            log.warning("%d post-mortem bundles were still being written at shutdown", len(self._jobs))
        self._loop.remove_reader(pool.fileno())
        if not pool.close(wait=max(0.0, deadline - time.monotonic())):
            log.warning("the post-mortem writer did not stop in time")


def attach(kernel: ServiceRegistry) -> None:
    """Build the service (``kernel.postmortem``); when ``[postmortem].enabled``, hook it into
    the supervisor (exit hook and lifecycle listener) and into shutdown."""
    settings = kernel.config.postmortem
    facts = {
        "version": __version__,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "backend": kernel.backend.name if kernel.backend is not None else "rlimit",
        "state_dir": str(kernel.state_dir),
    }
    service = PostmortemService(
        settings,
        root=kernel.state_dir / "postmortem",
        loop=kernel.loop,
        journal=kernel.journal,
        facts=facts,
        recorder=lambda: getattr(kernel, "recorder", None),
    )
    kernel.postmortem = service
    if settings.enabled:
        kernel.supervisor.exit_hooks.append(service.on_exit)
        kernel.supervisor.listeners.append(service.on_lifecycle)
        kernel.on_shutdown.append(service.close)
