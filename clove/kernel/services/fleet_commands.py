"""Signed fleet commands on a board, the kernel's side (docs/fleet.md, "Commands").

The link hands each message from the board's command subjects over as it came. Here, on the
loop thread, it is decided (:class:`clove.fleet.commands.CommandPolicy`: key, signature,
board, rights, time window, replay), journaled as one ``fleet.command`` record (category
SECURITY, with the key's id, the operator, the command, its arguments and the decision), and,
when accepted, carried out as the operator syscalls :func:`clove.fleet.actions.plan` names,
through the dispatcher (``perform``, handed in by the kernel) as an operator session of the
key's own: each call is authorized against the kernel's operator level and journaled like an
operator's request. The operator gets one answer on the command's reply subject: the refusal
``{accepted: false, code, reason, board}``, or ``{accepted: true, board, command, results}``
once every call has finished.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

from clove.config.fleet import FleetSection
from clove.errors import CloveError
from clove.fleet.actions import answer_value, plan
from clove.fleet.commands import CommandPolicy, OperatorKey, SignedCommand, Verdict, operator_keys
from clove.kernel.audit.journal import Category

if TYPE_CHECKING:
    from clove.kernel.core.sessions import OperatorSession
    from clove.kernel.services.devices.broker import DeviceBroker
    from clove.kernel.services.host import ServiceHost
    from clove.kernel.services.interlocks import Interlocks
    from clove.kernel.services.recording.rerun import Perform

__all__ = ["MAX_IN_FLIGHT", "FleetCommands"]

log = logging.getLogger(__name__)

#: Accepted commands still running on this board (an agent.kill waits for the agent to go);
#: more are refused with ``fleet.busy``.
MAX_IN_FLIGHT: Final = 32

#: ``reply(subject, answer)``: hand an answer to the link; ``False`` when it cannot take it.
Reply = Callable[[str, dict[str, Any]], bool]


@final
class FleetCommands:
    """Decide, journal, carry out and answer (loop thread only)."""

    def __init__(
        self, kernel: ServiceHost, section: FleetSection, *, reply: Reply,
        devices: DeviceBroker | None, interlocks: Interlocks | None,
    ) -> None:  # fmt: skip
        self.kernel = kernel
        self.board = section.board
        self.reply = reply
        self.devices = devices
        self.interlocks = interlocks
        # Accepted nonces survive a restart (clove/fleet/nonces.py): a replay of a command
        # captured before it is still refused.
        nonce_file = Path(kernel.state_dir) / "fleet" / "nonces.jsonl"
        self.policy = CommandPolicy(self.board, self._keys(section), window=section.command_window, nonce_file=nonce_file)
        if self.policy.nonces.problem is not None:
            self._journal_error(self.policy.nonces.problem)
        #: How an accepted command performs its calls: the dispatcher's, handed in at boot.
        self.perform: Perform | None = None
        self._sessions: dict[str, OperatorSession] = {}  # key id → its operator session
        self.in_flight = 0

    def _keys(self, section: FleetSection) -> list[OperatorKey]:
        keys: list[OperatorKey] = []
        for operator in section.operators:
            try:
                keys.extend(operator_keys([operator]))
            except ValueError as err:  # 32 bytes that are no key: this operator is refused, the board runs
                self._journal_error(str(err))
        return keys

    def _journal_error(self, message: str) -> None:
        log.warning("fleet: %s", message)
        self.kernel.journal.append(Category.NETWORK, "fleet.error", decision="n/a", details={"board": self.board, "message": message})

    # ---- one command ----------------------------------------------------------------------------

    def handle(self, data: object, reply: object) -> None:
        """A message from a command subject: ``data`` the wire text, ``reply`` its reply subject."""
        subject = reply if isinstance(reply, str) and reply else None
        try:
            verdict = self.policy.decide(SignedCommand.from_wire(str(data).encode()))
        except ValueError as err:
            verdict = Verdict(False, "fleet.malformed", str(err))
        calls: list[tuple[str, dict[str, Any]]] = []
        if verdict.accepted:
            verdict, calls = self._plan(verdict)
        self._journal(verdict, calls)
        if not verdict.accepted:
            self._answer(subject, {"accepted": False, "code": verdict.code, "reason": verdict.reason, "board": self.board})
            return
        self._run(verdict, calls, subject)

    def _plan(self, verdict: Verdict) -> tuple[Verdict, list[tuple[str, dict[str, Any]]]]:
        def refused(code: str, reason: str) -> tuple[Verdict, list[tuple[str, dict[str, Any]]]]:
            return dataclasses.replace(verdict, accepted=False, code=code, reason=reason), []

        if self.perform is None:
            return refused("fleet.unavailable", "this board cannot carry out commands (no dispatcher)")
        if self.in_flight >= MAX_IN_FLIGHT:
            return refused("fleet.busy", f"{MAX_IN_FLIGHT} commands are still running on this board")
        engaged = list(self.interlocks.engaged) if self.interlocks is not None else []
        exchanges = [str(v.get("name")) for v in self.devices.views(None) if v.get("driver") == "exchange"] if self.devices is not None else []
        try:
            return verdict, plan(str(verdict.command), verdict.args, operator=str(verdict.operator), engaged=engaged, exchanges=exchanges)
        except ValueError as err:
            return refused("fleet.malformed", str(err))

    def _journal(self, verdict: Verdict, calls: list[tuple[str, dict[str, Any]]]) -> None:
        details: dict[str, Any] = {
            "board": self.board,
            "key_id": verdict.key_id,
            "operator": verdict.operator,
            "command": verdict.command,
            "args": verdict.args,
            "nonce": verdict.nonce,
            "decision": "allowed" if verdict.accepted else "denied",
            "code": verdict.code,
            "reason": verdict.reason,
        }
        if verdict.accepted:
            details["calls"] = [call for call, _ in calls]
        self.kernel.journal.append(
            Category.SECURITY, "fleet.command", decision="allowed" if verdict.accepted else "denied", code=verdict.code, details=details
        )

    def _run(self, verdict: Verdict, calls: list[tuple[str, dict[str, Any]]], subject: str | None) -> None:
        assert self.perform is not None  # noqa: S101 - _plan refused otherwise
        session = self._session(verdict)
        results: list[dict[str, Any] | None] = [None] * len(calls)
        waiting = len(calls)
        self.in_flight += 1

        def finished() -> None:
            self.in_flight -= 1
            self._answer(subject, {"accepted": True, "board": self.board, "command": verdict.command, "results": results})

        def done(index: int, call: str) -> Callable[[Any, CloveError | None], None]:
            def record(value: Any, error: CloveError | None) -> None:
                nonlocal waiting
                entry: dict[str, Any] = {"call": call, "ok": error is None}
                if error is not None:
                    entry["error"] = {"code": error.code, "message": error.message}
                elif (shown := answer_value(str(verdict.command), verdict.args, value)) is not None:
                    entry["value"] = shown  # what a reading command (logs) answers with, bounded
                results[index] = entry
                waiting -= 1
                if waiting == 0:
                    finished()

            return record

        if not calls:
            finished()
            return
        for index, (call, body) in enumerate(calls):
            self.perform(session, call, body, done(index, call))

    def _session(self, verdict: Verdict) -> OperatorSession:
        """The key's own operator session: no peer pid, so the session reaper leaves it open."""
        key = str(verdict.key_id)
        session = self._sessions.get(key)
        if session is None or self.kernel.sessions.get(session.id) is not session:
            session = self.kernel.sessions.open(f"fleet:{key}".encode(), None)
            self._sessions[key] = session
        return session

    def _answer(self, subject: str | None, answer: dict[str, Any]) -> None:
        if subject is None:
            return  # published without a reply subject: nobody is listening
        if not self.reply(subject, answer):
            self._journal_error(f"the answer to a command on {subject} was not sent: the link cannot take it now")

    def close(self) -> None:
        for session in self._sessions.values():
            self.kernel.sessions.close(session)
        self._sessions.clear()
