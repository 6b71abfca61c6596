"""Reconciling a board to an accepted desired state (docs/fleet.md, "Deploy").

:func:`plan` compares the desired agents with what deploys started on this board (and what else
runs) and decides, per agent: ``left`` (running, same spec), ``start``, ``replace`` (running
with another spec: stop, then start), ``stop`` (started by a deploy, dropped by this one) or
``refused`` (a bad spec, or its name held by an agent no deploy started). Agents no deploy
started are never touched. :class:`Reconcile` then performs the stops, and once they are all
done the starts, as ``agent.kill`` / ``agent.spawn`` through the dispatcher (``perform``): each
is authorized as the key's operator session and journaled like any operator request. A spawn
the kernel refuses (a limit over this board's ceilings, a bad level or grant, a name in use,
isolation it cannot promise) is ``refused``; one that fails to start is ``failed``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, final

from clove.errors import CloveError
from clove.fleet.deploy import spec_problem

if TYPE_CHECKING:
    from clove.kernel.core.sessions import OperatorSession
    from clove.kernel.services.recording.rerun import Perform

__all__ = ["MAX_MESSAGE_CHARS", "REFUSED_CODES", "Deployed", "Plan", "Reconcile", "plan", "spec_digest"]

#: A spawn error with one of these codes is the board refusing the spec, not failing to start it.
REFUSED_CODES: Final = frozenset({"proto.invalid_args", "perm.denied", "conflict", "sandbox.unenforceable", "quota.exceeded"})
#: What a report keeps of an error message.
MAX_MESSAGE_CHARS: Final = 300


def spec_digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Deployed:
    """An agent a deploy started on this board: its id and the digest of its spec."""

    agent_id: int
    digest: str


@dataclass(slots=True)
class Plan:
    """``stops``: ``(name, agent id, replaced)``; ``starts``: ``(name, spec, replaced)``;
    ``outcomes``: one entry per agent, in the desired order then the stopped ones, filled in as
    the calls finish."""

    stops: list[tuple[str, int, bool]] = field(default_factory=list)
    starts: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)


def plan(desired: list[dict[str, Any]], deployed: dict[str, Deployed], live: Callable[[str], int | None], running: Callable[[int], bool]) -> Plan:
    """What to do to go from ``deployed`` to ``desired``.

    :param live: the id of the live agent called ``name`` on the board, or ``None``;
    :param running: whether the agent with that id is live.
    """
    out = Plan()
    wanted = {str(spec["name"]) for spec in desired}
    for spec in desired:
        name = str(spec["name"])
        problem = spec_problem(spec)
        if problem is not None:
            out.outcomes[name] = {"name": name, "action": "refused", "code": "deploy.bad_spec", "message": problem}
            continue
        ours = deployed.get(name)
        current = live(name)
        if ours is not None and current == ours.agent_id and running(ours.agent_id):
            if ours.digest == spec_digest(spec):
                out.outcomes[name] = {"name": name, "action": "left", "agent_id": ours.agent_id}
                continue
            out.stops.append((name, ours.agent_id, True))
            out.starts.append((name, spec, True))
            out.outcomes[name] = {"name": name, "action": "replaced"}
            continue
        if current is not None:
            message = f"an agent named {name!r} (id {current}) runs here and no deploy started it"
            out.outcomes[name] = {"name": name, "action": "refused", "code": "deploy.name_taken", "message": message}
            continue
        out.starts.append((name, spec, False))
        out.outcomes[name] = {"name": name, "action": "started"}
    for name, ours in deployed.items():
        if name not in wanted and running(ours.agent_id) and live(name) == ours.agent_id:
            out.stops.append((name, ours.agent_id, False))
            out.outcomes[name] = {"name": name, "action": "stopped", "agent_id": ours.agent_id}
    return out


def _error(error: CloveError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message[:MAX_MESSAGE_CHARS]}


@final
class Reconcile:
    """Carry out one :class:`Plan`: stops, then starts; ``finished(outcomes, deployed)`` once
    every call has answered (``deployed``: what deploys now run on this board)."""

    def __init__(
        self, the_plan: Plan, deployed: dict[str, Deployed], *, perform: Perform, session: OperatorSession,
        finished: Callable[[list[dict[str, Any]], dict[str, Deployed]], None],
    ) -> None:  # fmt: skip
        self.plan = the_plan
        self.deployed = dict(deployed)
        self.perform = perform
        self.session = session
        self.finished = finished
        self._waiting = 0

    def run(self) -> None:
        if not self.plan.stops:
            self._start_all()
            return
        self._waiting = len(self.plan.stops)
        for name, agent_id, _replaced in self.plan.stops:
            self.perform(self.session, "agent.kill", {"agent_id": agent_id}, self._stopped(name))

    def _stopped(self, name: str) -> Callable[[Any, CloveError | None], None]:
        def done(_value: Any, error: CloveError | None) -> None:
            if error is not None and error.code != "notfound":  # gone already is what a stop wants
                self.plan.outcomes[name].update(action="failed", **_error(error))
                self.plan.starts = [s for s in self.plan.starts if s[0] != name]  # the old one still runs (still tracked)
            else:
                self.deployed.pop(name, None)
            self._waiting -= 1
            if self._waiting == 0:
                self._start_all()

        return done

    def _start_all(self) -> None:
        if not self.plan.starts:
            self._finish()
            return
        self._waiting = len(self.plan.starts)
        for name, spec, _replaced in self.plan.starts:
            self.perform(self.session, "agent.spawn", dict(spec), self._started(name, spec_digest(spec)))

    def _started(self, name: str, digest: str) -> Callable[[Any, CloveError | None], None]:
        def done(value: Any, error: CloveError | None) -> None:
            outcome = self.plan.outcomes[name]
            if error is not None:
                outcome.update(action="refused" if error.code in REFUSED_CODES else "failed", **_error(error))
            else:
                agent_id = value.get("id") if isinstance(value, dict) else None
                if isinstance(agent_id, int):
                    self.deployed[name] = Deployed(agent_id, digest)
                    outcome["agent_id"] = agent_id
            self._waiting -= 1
            if self._waiting == 0:
                self._finish()

        return done

    def _finish(self) -> None:
        self.finished(list(self.plan.outcomes.values()), self.deployed)
