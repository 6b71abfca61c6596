"""An operator's replay: perform again, against this kernel, the calls an operator session made
while it was recorded, and compare each outcome with the recorded one (docs/recording.md).

Unlike the replay of an agent (:mod:`.replay`), which re-runs the agent's script and answers it
from the recording without performing anything, this *performs* the recorded calls: as the
operator session that asked for it, with that session's permissions at each call (never more:
a session that lowered itself stays lowered), authorized and journaled by the dispatcher
(``details.rerun``). One call at a time, each started from its own loop turn, so the loop never
waits on it; a call answered later (a spawn, a blocking receive) is waited for, at most
``CALL_TIMEOUT_S``. Bounded: at most ``MAX_CALLS`` calls and ``MAX_BODY_BYTES`` of bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, final

from clove.errors import CloveError, InvalidArguments, NotFound, OperationTimeout
from clove.kernel.services.recording.format import canonical, decode, encode

if TYPE_CHECKING:
    from clove.kernel.core.loop import Loop, Timer
    from clove.kernel.core.sessions import OperatorSession

__all__ = ["MAX_CALLS", "Perform", "Rerun", "judge", "operator_calls"]

MAX_CALLS: Final = 1000
MAX_BODY_BYTES: Final = 16 << 20
CALL_TIMEOUT_S: Final = 60.0
#: What a status row shows of a diverged call's recorded and actual outcome, and how much of
#: each side the first divergence keeps whole: the status must stay a small reply.
PREVIEW_CHARS: Final = 200
DIVERGENCE_CHARS: Final = 8192
#: Calls not performed again, and why.
SKIPPED: Final = {"session.close": "it would close the session that replays"}
CONTROLS: Final = ("record.", "replay.")
REPLAYING, DIVERGED, COMPLETED, FAILED = "REPLAYING", "DIVERGED", "COMPLETED", "FAILED"

#: Run one call as an operator session through the dispatcher; the callback gets the outcome.
Perform = Callable[["OperatorSession", str, dict[str, Any], Callable[[Any, "CloveError | None"], None]], None]


def operator_calls(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recorded calls of operator sessions, in arrival order.

    :raises NotFound: the recording holds none.
    :raises InvalidArguments: more than :data:`MAX_CALLS` of them or :data:`MAX_BODY_BYTES` of bodies.
    """
    calls = [e for e in entries if e["kind"] == "syscall" and isinstance(e.get("session_id"), int)]
    if not calls:
        raise NotFound(
            "the recording holds no operator calls (an operator's own calls are recorded when it starts "
            "the recording without naming agents)",
            details={"operator_calls": 0},
        )
    if len(calls) > MAX_CALLS:
        raise InvalidArguments(f"an operator's replay performs at most {MAX_CALLS} calls; this recording holds {len(calls)}", details={"limit": MAX_CALLS})
    size = sum(len(canonical(e.get("body"))) for e in calls)
    if size > MAX_BODY_BYTES:
        raise InvalidArguments(f"an operator's replay performs at most {MAX_BODY_BYTES} bytes of requests; these hold {size}", details={"limit": MAX_BODY_BYTES})
    return sorted(calls, key=lambda e: (_seconds(e, "t"), e["seq"]))


def _seconds(entry: dict[str, Any], key: str) -> float:
    """A time field of an entry (``t``, ``dur``); 0 when a hand-made recording lacks a number."""
    value = entry.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def judge(entry: dict[str, Any], value: Any, error: CloveError | None) -> str | None:
    """Why a call's outcome now differs from the recorded ``entry``'s, or ``None`` when it is
    the same: the same result (compared as canonical JSON), or an error with the same code."""
    recorded = entry.get("error") if not entry.get("ok") else None
    code = recorded.get("code") if isinstance(recorded, dict) else None
    if error is not None:
        if not entry.get("ok"):
            return None if code == error.code else f"failed with {error.code}; the recording failed with {code}"
        return f"failed with {error.code}; the recording succeeded"
    if not entry.get("ok"):
        return f"succeeded; the recording failed with {code}"
    return None if canonical(encode(value)) == canonical(entry.get("result")) else "different result"


def _preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    text = canonical(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _bounded(value: dict[str, Any]) -> dict[str, Any] | str:
    """``value`` whole when small, else the start of its JSON text."""
    return value if len(canonical(value)) <= DIVERGENCE_CHARS else _preview(value, DIVERGENCE_CHARS)


def _outcome(value: Any, error: CloveError | None) -> Any:
    if error is not None:
        return {"error": {"code": error.code, "message": error.message}}
    return {"result": encode(value)}


@final
class Rerun:
    """One operator's replay, stepped from the loop; :meth:`status` is what ``replay.status``
    shows. Its owner calls :meth:`stop` when the session that asked for it closes."""

    def __init__(
        self, calls: list[dict[str, Any]], *, session: OperatorSession, perform: Perform, loop: Loop,
        speed: str = "full", recording_id: str | None = None,
    ) -> None:  # fmt: skip
        self.calls, self.session, self.speed, self.recording_id = calls, session, speed, recording_id
        self._perform, self._loop = perform, loop
        self.state = REPLAYING
        self.rows: list[dict[str, Any]] = []
        self.divergence: dict[str, Any] | None = None
        self.error: str | None = None
        self._started = loop.clock()
        self._finished: float | None = None
        self._t0 = _seconds(calls[0], "t") if calls else 0.0
        self._token = 0  # the call in flight; an outcome for another (timed out) is dropped
        self._deadline: Timer | None = None
        self._loop.call_later(0, self._next)

    @property
    def running(self) -> bool:
        return self.state == REPLAYING

    def stop(self, why: str) -> None:
        """End it here: the call in flight, if any, is no longer awaited."""
        if self.running:
            self.state, self.error = FAILED, why
            self._end()

    # ---- stepping ----------------------------------------------------------------------------

    def _next(self) -> None:
        if not self.running:
            return
        if len(self.rows) == len(self.calls):
            self.state = COMPLETED if self.divergence is None else DIVERGED
            self._end()
            return
        entry = self.calls[len(self.rows)]
        if self.speed == "recorded":  # each call starts as long after the first as it did then
            wait = _seconds(entry, "t") - self._t0 - (self._loop.clock() - self._started)
            if wait >= 0.001:
                self._loop.call_later(wait, self._next)
                return
        call = str(entry.get("call"))
        try:
            body = decode(entry.get("body"))
        except ValueError:
            body = None
        skip = SKIPPED.get(call) or (None if isinstance(body, dict) else "its body is not a request body")
        if call.startswith(CONTROLS):
            skip = "recording and replay controls are never recorded, nor performed again"
        if skip is not None:
            self._row(entry, "skipped", skip)
            self._loop.call_later(0, self._next)
            return
        assert isinstance(body, dict)  # noqa: S101 - checked just above
        self._token += 1
        token = self._token
        timeout = OperationTimeout(f"no result within {CALL_TIMEOUT_S:g} s")
        self._deadline = self._loop.call_later(CALL_TIMEOUT_S, lambda: self._done(token, None, timeout))
        self._perform(self.session, call, body, lambda value, error: self._done(token, value, error))

    def _done(self, token: int, value: Any, error: CloveError | None) -> None:
        if token != self._token or not self.running:
            return
        self._token += 1
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        entry = self.calls[len(self.rows)]
        reason = judge(entry, value, error)
        if reason is None:
            self._row(entry, "match", None)
        else:
            recorded = {"result": entry.get("result")} if entry.get("ok") else {"error": entry.get("error")}
            self._row(entry, "diverged", reason, recorded=_preview(recorded), actual=_preview(_outcome(value, error)))
            if self.divergence is None:
                self.divergence = {"index": len(self.rows) - 1, "call": entry.get("call"), "reason": reason,
                                   "recorded": _bounded({"call": entry.get("call"), "body": entry.get("body"), **recorded}),
                                   "actual": _bounded({"call": entry.get("call"), **_outcome(value, error)})}  # fmt: skip
        self._loop.call_later(0, self._next)  # the next call from a later loop turn

    def _row(self, entry: dict[str, Any], outcome: str, reason: str | None, **sides: str) -> None:
        row: dict[str, Any] = {"index": len(self.rows), "call": entry.get("call"), "outcome": outcome}
        if reason is not None:
            row["reason"] = reason
        self.rows.append({**row, **sides})

    def _end(self) -> None:
        self._token += 1
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._finished = self._loop.clock()

    # ---- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        counts = {outcome: sum(1 for r in self.rows if r["outcome"] == outcome) for outcome in ("match", "diverged", "skipped")}
        ended = self._finished if self._finished is not None else self._loop.clock()
        recorded = _seconds(self.calls[-1], "t") + _seconds(self.calls[-1], "dur") - self._t0 if self.calls else 0.0
        return {
            "success": True,
            "state": self.state,
            "active": self.running,
            "mode": "execute",
            "speed": self.speed,
            "recording_id": self.recording_id,
            "session_id": self.session.id,
            "progress": {"replayed": len(self.rows), "total": len(self.calls)},
            "matched": counts["match"],
            "diverged": counts["diverged"],
            "skipped": counts["skipped"],
            # The original Clove SDK's names for the same figures.
            "total_entries": len(self.calls),
            "entries_replayed": counts["match"] + counts["diverged"],
            "entries_skipped": counts["skipped"],
            "calls": [dict(r) for r in self.rows],
            "agents": [],
            "divergence": self.divergence,
            "error": self.error,
            "elapsed": round(ended - self._started, 3),
            "recorded_elapsed": round(recorded, 6),
        }
