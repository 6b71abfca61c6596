"""What the risk engine knows of the market: the tradable instruments and their reference prices
(*Fail closed* in :mod:`clove_driver_exchange.risk`: a missing or stale price denies)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from clove.drivers.schema import invalid
from clove.errors import RiskDenied
from clove_driver_exchange.risk.limits import deny, fmt, is_number


class MarketData:
    """The known instruments and the latest reference price of each.

    :param instruments: the tradable symbols; ``None``: a symbol becomes known when
        :meth:`set_reference` first names it.
    :param max_reference_age_s: a reference price older than this counts as missing.
    :param clock: seconds, monotonic; the time base of :meth:`set_reference`'s ``ts``.
    :raises clove.drivers.schema.FieldError: ``max_reference_age_s`` is not a finite number >= 0.
    """

    def __init__(
        self, instruments: Iterable[str] | None, max_reference_age_s: float, clock: Callable[[], float]
    ) -> None:
        if not (is_number(max_reference_age_s) and max_reference_age_s >= 0):
            raise invalid("max_reference_age_s", f"must be a finite number >= 0, got {max_reference_age_s!r}")
        self._clock = clock
        self._max_age = float(max_reference_age_s)
        self._learn_instruments = instruments is None
        self._known: set[str] = set(instruments or ())
        self._refs: dict[str, tuple[float, float]] = {}  # symbol -> (price, ts)

    # -- instruments --------------------------------------------------------------------------------

    def add_instrument(self, symbol: str) -> None:
        self._known.add(symbol)

    def instruments(self) -> set[str]:
        return set(self._known)

    def __contains__(self, symbol: object) -> bool:
        """Whether ``symbol`` is a known instrument."""
        return symbol in self._known

    # -- reference prices ---------------------------------------------------------------------------

    def set_reference(self, symbol: str, price: float, ts: float | None = None) -> bool:
        """Record ``symbol``'s reference price (see :meth:`RiskEngine.set_reference`)."""
        when = self._clock() if ts is None else ts
        if not (is_number(price) and price > 0 and is_number(when)):
            self._refs.pop(symbol, None)
            return False
        held = self._refs.get(symbol)
        if held is not None and held[1] > when:
            return False
        self._refs[symbol] = (float(price), float(when))
        if self._learn_instruments:
            self._known.add(symbol)
        return True

    def reference(self, symbol: str, now: float) -> float | None:
        """The reference price of ``symbol`` if it is fresh at ``now``, else ``None``."""
        held = self._refs.get(symbol)
        if held is None or now - held[1] > self._max_age:
            return None
        return held[0]

    def missing(self, sym: str, needed_for: str) -> RiskDenied:
        """The ``no_reference_price`` denial of a check that needed ``sym``'s price."""
        held = self._refs.get(sym)
        state = "none received" if held is None else f"the last is older than {fmt(self._max_age)} s"
        return deny(
            "no_reference_price",
            f"no fresh reference price for {sym} ({state}), needed for the {needed_for} check",
            symbol=sym,
        )
