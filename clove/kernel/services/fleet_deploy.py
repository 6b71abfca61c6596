"""Fleet deploys on a board, the kernel's side (docs/fleet.md, "Deploy").

With a ``[fleet]`` table one of whose operator keys ``may`` give ``deploy``, the fleet service
starts a deploy watcher (:mod:`clove.fleet.deploy_watch`, a helper process like the fleet link)
that hands over each new revision of the board's desired state. Here, on the loop thread, each
is decided (:class:`clove.fleet.deploy.DeployPolicy`: size, signature, key, board, right,
generation, shape), journaled as a ``fleet.deploy`` record (category SECURITY, with the key's
id), reconciled (:mod:`.fleet_deploy_reconcile`: spawns and stops through the dispatcher, as
the key's operator session) and reported: a second ``fleet.deploy`` record with what happened
to each agent, and the same report under ``status.<board>`` in the deploy bucket.

One reconcile runs at a time; a state that arrives meanwhile waits (only the newest: the key
holds one value anyway). The generation and digest of the last accepted state are kept in
``<state dir>/fleet/deploy.json``, so a restarted board still refuses an older one, and applies
the current one again (its deployed agents died with the kernel).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

from clove.config.fleet import FleetSection
from clove.fleet.commands import OperatorKey, operator_keys
from clove.fleet.connect import Endpoint
from clove.fleet.deploy import MAX_DESIRED_BYTES, Applied, DeployPolicy, DeployVerdict
from clove.fleet.link import LinkEvent
from clove.fleet.process import LinkProcess
from clove.fleet.subjects import FleetNames
from clove.kernel.audit.journal import Category
from clove.kernel.core.agents import LIVE
from clove.kernel.services.fleet_deploy_reconcile import Deployed, Reconcile, plan

if TYPE_CHECKING:
    from clove.kernel.core.sessions import OperatorSession
    from clove.kernel.services.host import ServiceHost
    from clove.kernel.services.recording.rerun import Perform

__all__ = ["FleetDeploy", "deploy_for"]

log = logging.getLogger(__name__)

EVENT: Final = "fleet.deploy"
#: The watcher's restart backoff: 1 s doubling to this.
MAX_RESTART_DELAY: Final = 30.0


def deploy_for(kernel: ServiceHost, section: FleetSection) -> FleetDeploy | None:
    """The board's deploy side, or ``None`` when no key this board accepts may deploy (then no
    watcher runs at all)."""
    if not any("deploy" in op.may for op in section.operators):
        return None
    return FleetDeploy(kernel, section)


@final
class FleetDeploy:
    """Decide, reconcile and report desired states (loop thread only)."""

    def __init__(self, kernel: ServiceHost, section: FleetSection) -> None:
        self.kernel = kernel
        self.board = section.board
        keys: list[OperatorKey] = []
        for operator in section.operators:
            with contextlib.suppress(ValueError):  # journaled by the fleet commands already
                keys.extend(operator_keys([operator]))
        self.policy = DeployPolicy(self.board, keys)
        self.path = Path(kernel.state_dir) / "fleet" / "deploy.json"
        self.applied = self._load()
        endpoint = Endpoint(
            servers=section.servers, user=section.user, password_file=section.password_file, credentials=section.credentials,
            tls_ca=section.tls_ca, inbox_prefix=FleetNames.inbox_prefix(self.board), name=f"clove-deploy-{self.board}",
        )  # fmt: skip
        settings = {"endpoint": dataclasses.asdict(endpoint), "prefix": section.subject_prefix, "board": self.board}
        self.watcher = LinkProcess([sys.executable, "-m", "clove.fleet.deploy_watch", json.dumps(settings)])
        #: How spawns and stops are performed: the dispatcher's, handed in by the kernel at boot.
        self.perform: Perform | None = None
        #: What deploys started here and still track: name → (agent id, spec digest).
        self.deployed: dict[str, Deployed] = {}
        self.reconciling = False
        self._waiting: dict[str, Any] | None = None  # the newest state that came while reconciling
        self._sessions: dict[str, OperatorSession] = {}
        self._fd: int | None = None
        self._restarts = 0
        self._stopping = False

    # ---- the watcher process --------------------------------------------------------------------

    def start(self) -> None:
        if self._stopping:
            return
        try:
            self.watcher.start()
        except OSError as err:
            self._restart_later(f"cannot start the deploy watcher: {err}")
            return
        self._fd = self.watcher.fileno()
        self.kernel.loop.add_reader(self._fd, self._on_events)

    def shutdown(self) -> None:
        self._stopping = True
        if self._fd is not None:
            self.kernel.loop.remove_reader(self._fd)
            self._fd = None
        if not self.watcher.close():
            log.warning("the deploy watcher did not stop in time; killed it")
        for session in self._sessions.values():
            self.kernel.sessions.close(session)
        self._sessions.clear()

    def housekeeping(self) -> None:
        self.watcher.flush()  # the rest of a report the pipe had no room for

    def _restart_later(self, why: str) -> None:
        delay = min(MAX_RESTART_DELAY, 2.0 ** min(self._restarts, 5))
        self._restarts += 1
        self._journal_error(f"{why}; restarting it in {delay:.0f} s")
        self.kernel.loop.call_later(delay, self.start)

    def _journal_error(self, message: str) -> None:
        log.warning("fleet deploy: %s", message)
        self.kernel.journal.append(Category.NETWORK, "fleet.error", decision="n/a", details={"board": self.board, "message": message})

    def _on_events(self) -> None:
        for event in self.watcher.events():
            self._handle(event)

    def _handle(self, event: LinkEvent) -> None:
        if event.kind == "exited":
            if self._fd is not None:
                self.kernel.loop.remove_reader(self._fd)
                self._fd = None
            if not self._stopping:
                self._restart_later(f"the deploy watcher exited (status {event.details.get('status')})")
        elif event.kind == "connected":
            self._restarts = 0
        elif event.kind == "error":
            self._journal_error(str(event.details.get("message"))[:1000])
        elif event.kind == "desired":
            if self.reconciling:
                self._waiting = event.details
            else:
                self._desired(event.details)

    # ---- one desired state ------------------------------------------------------------------------

    def _desired(self, details: dict[str, Any]) -> None:
        revision = details.get("revision") if isinstance(details.get("revision"), int) else None
        received = time.time()
        data = details.get("data")
        if details.get("deleted"):
            verdict = DeployVerdict(False, "fleet.malformed", "the desired state was deleted, which is not signed: agents are left as they are (deploy an empty config to stop them)")
        elif not isinstance(data, str):  # the watcher hands over no state past the bound
            verdict = DeployVerdict(False, "deploy.too_big", f"the desired state is {details.get('size')} bytes; a board takes at most {MAX_DESIRED_BYTES}")
        else:
            verdict = self.policy.decide(data.encode(), self.applied)
        if verdict.accepted and self.perform is None:
            verdict = dataclasses.replace(verdict, accepted=False, code="fleet.unavailable", reason="this board cannot carry out deploys (no dispatcher)")
        self._journal_decision(verdict, revision)
        base = {
            "board": self.board, "revision": revision, "generation": verdict.generation, "key_id": verdict.key_id,
            "operator": verdict.operator, "accepted": verdict.accepted, "code": verdict.code, "reason": verdict.reason,
            "received_at": received,
        }  # fmt: skip
        if not verdict.accepted:
            self._report({**base, "phase": "done", "finished_at": time.time(), "agents": []})
            return
        assert self.perform is not None and verdict.generation is not None and verdict.digest is not None  # noqa: S101 - accepted
        self.applied = Applied(verdict.generation, verdict.digest)
        self._save()
        table = self.kernel.supervisor.table

        def running(agent_id: int) -> bool:
            agent = table.get(agent_id)
            return agent is not None and agent.state in LIVE

        self.deployed = {name: d for name, d in self.deployed.items() if running(d.agent_id)}  # the dead are not tracked
        the_plan = plan(
            verdict.agents, self.deployed, live=lambda name: next((a.id for a in table if a.name == name and a.state in LIVE), None), running=running
        )
        self.reconciling = True

        def finished(outcomes: list[dict[str, Any]], deployed: dict[str, Deployed]) -> None:
            self.deployed = deployed
            self.reconciling = False
            if self._stopping:  # the kernel is going down: its agents with it, no report to make
                return
            report = {**base, "again": verdict.again, "phase": "done", "finished_at": time.time(), "agents": outcomes}
            self._journal_done(verdict, revision, outcomes)
            self._report(report)
            waiting, self._waiting = self._waiting, None
            if waiting is not None:
                self._desired(waiting)

        Reconcile(the_plan, self.deployed, perform=self.perform, session=self._session(str(verdict.key_id)), finished=finished).run()

    def _session(self, key: str) -> OperatorSession:
        """The key's own operator session: no peer pid, so the session reaper leaves it open."""
        session = self._sessions.get(key)
        if session is None or self.kernel.sessions.get(session.id) is not session:
            session = self.kernel.sessions.open(f"fleet-deploy:{key}".encode(), None)
            self._sessions[key] = session
        return session

    def _report(self, report: dict[str, Any]) -> None:
        if not self.watcher.offer_reply("status", report):
            self._journal_error(f"the deploy report of revision {report.get('revision')} was not sent: the watcher cannot take it now")

    # ---- the journal and the persisted generation --------------------------------------------------

    def _journal_decision(self, verdict: DeployVerdict, revision: int | None) -> None:
        details = {
            "board": self.board, "phase": "decided", "revision": revision, "key_id": verdict.key_id, "operator": verdict.operator,
            "generation": verdict.generation, "again": verdict.again, "agents": [str(a.get("name")) for a in verdict.agents],
            "reason": verdict.reason,
        }  # fmt: skip
        decision = "allowed" if verdict.accepted else "denied"
        self.kernel.journal.append(Category.SECURITY, EVENT, decision=decision, code=verdict.code, details=details)

    def _journal_done(self, verdict: DeployVerdict, revision: int | None, outcomes: list[dict[str, Any]]) -> None:
        counts: dict[str, int] = {}
        for outcome in outcomes:
            counts[outcome["action"]] = counts.get(outcome["action"], 0) + 1
        details = {
            "board": self.board, "phase": "done", "revision": revision, "key_id": verdict.key_id, "operator": verdict.operator,
            "generation": verdict.generation, "counts": counts, "agents": outcomes,
        }  # fmt: skip
        self.kernel.journal.append(Category.SECURITY, EVENT, decision="allowed", code="ok", details=details)

    def _load(self) -> Applied | None:
        try:
            data = json.loads(self.path.read_text())
            if data.get("board") == self.board and type(data.get("generation")) is int and isinstance(data.get("digest"), str):
                return Applied(data["generation"], data["digest"])
        except (OSError, ValueError, AttributeError):
            pass
        return None

    def _save(self) -> None:
        assert self.applied is not None  # noqa: S101
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"board": self.board, "generation": self.applied.generation, "digest": self.applied.digest}))
            os.replace(tmp, self.path)
        except OSError as err:  # the board still applies it; a restart may then take an older one
            self._journal_error(f"cannot persist the deploy generation: {err}")
