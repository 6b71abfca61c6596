"""Token budgets: reserve a request's maximum before dispatch, settle the actual after.

Each caller has an optional lifetime budget and an optional budget per period (periods are
fixed windows ``[k * period, (k + 1) * period)`` of wall-clock time, so a daily budget resets at
midnight UTC). A request may be dispatched only when its maximum (prompt bound +
``max_tokens``) fits in what is left after every reservation still in flight::

    used + reserved + need <= budget        dispatch (reserve need)
    used + need <= budget                   wait: in-flight reservations will settle lower
    otherwise                               refuse: it can never fit

Settling replaces a reservation by the tokens actually billed (never more than reserved, unless
the provider broke its own bounds), so concurrent requests cannot overrun a budget: at every
instant ``used + reserved <= budget``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, final

__all__ = ["Budget", "Check", "Reservation"]


class Check(enum.Enum):
    OK = "ok"
    WAIT = "wait"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Reservation:
    tokens: int
    period: int


@dataclass(slots=True)
class _Crossing:
    """Warning state: which (kind, period) already warned."""

    lifetime: bool = False
    period: int | None = None


@final
@dataclass(slots=True)
class Budget:
    """One caller's budgets and usage.

    :param lifetime: tokens for the caller's whole life (``None``: unlimited).
    :param per_period: tokens per period (``None``: unlimited).
    """

    lifetime: int | None = None
    per_period: int | None = None
    used: int = 0
    reserved: int = 0
    period: int = 0
    period_used: int = 0
    period_reserved: int = 0
    overrun: int = 0  # tokens billed beyond reservations (a provider exceeding its own bounds)
    _warned: _Crossing = field(default_factory=_Crossing)

    def roll(self, period: int) -> None:
        """Enter period ``period`` (a later one resets the period's usage)."""
        if period != self.period:
            self.period = period
            self.period_used = 0
            self.period_reserved = 0

    def check(self, need: int, period: int) -> tuple[Check, dict[str, Any]]:
        """Whether ``need`` tokens can be reserved now; with the figures of the binding budget."""
        self.roll(period)
        waiting: dict[str, Any] | None = None
        for kind, limit, used, reserved in (
            ("lifetime", self.lifetime, self.used, self.reserved),
            ("period", self.per_period, self.period_used, self.period_reserved),
        ):
            if limit is None:
                continue
            figures = {"kind": kind, "budget": limit, "used": used, "reserved": reserved, "remaining": max(0, limit - used), "needed": need}
            if used + need > limit:
                return Check.REFUSE, figures
            if used + reserved + need > limit and waiting is None:
                waiting = figures
        return (Check.WAIT, waiting) if waiting is not None else (Check.OK, {})

    def reserve(self, need: int, period: int) -> Reservation:
        self.roll(period)
        self.reserved += need
        self.period_reserved += need
        return Reservation(need, period)

    def settle(self, reservation: Reservation, actual: int) -> None:
        """Replace ``reservation`` by ``actual`` tokens billed (0 releases it)."""
        self.reserved -= reservation.tokens
        self.used += actual
        if actual > reservation.tokens:
            self.overrun += actual - reservation.tokens
        if reservation.period == self.period:
            self.period_reserved -= reservation.tokens
            self.period_used += actual
        elif reservation.period > self.period:  # the clock went back: count it where it belongs now
            self.roll(reservation.period)
            self.period_used += actual

    def remaining(self) -> int | None:
        """Tokens left under the tighter budget, reservations not counted (``None``: unlimited)."""
        left = [limit - used for limit, used in ((self.lifetime, self.used), (self.per_period, self.period_used)) if limit is not None]
        return max(0, min(left)) if left else None

    def crossings(self, threshold: float) -> list[dict[str, Any]]:
        """Budgets whose usage reached ``threshold`` (a fraction) since the last call: each is
        reported once per crossing (lifetime: re-armed when usage falls below it again, after a
        raise; period: once per period)."""
        out = []
        if self.lifetime:
            reached = self.used >= threshold * self.lifetime
            if reached and not self._warned.lifetime:
                out.append({"budget_kind": "lifetime", "used": self.used, "budget": self.lifetime})
            self._warned.lifetime = reached
        if self.per_period and self.period_used >= threshold * self.per_period and self._warned.period != self.period:
            self._warned.period = self.period
            out.append({"budget_kind": "period", "used": self.period_used, "budget": self.per_period, "period": self.period})
        return out
