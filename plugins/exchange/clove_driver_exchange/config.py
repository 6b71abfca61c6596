"""The exchange device's config (``[devices.NAME]``), its grant (``[agents.A.devices.NAME]``)
and the operations' arguments. No FIX, no I/O: the kernel imports this to validate configs."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from clove.drivers import DeviceGrant, deny, invalid
from clove.drivers.schema import build
from clove_driver_exchange.risk import Limits
from clove_driver_exchange.risk.limits import deny as risk_denial
from clove_driver_exchange.risk.limits import exceeds, fmt

_LIMIT_FIELDS = tuple(f.name for f in fields(Limits))
SIDES = ("buy", "sell")
TYPES = ("limit", "market")
TIFS = ("day", "gtc", "ioc", "fok")
STATES = ("ACTIVE", "REDUCING", "HALTED")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeConfig:
    """One venue session. ``password`` is a credential: it stays in the driver host; no result,
    stream item or journal record carries it.

    :param risk: the global limits (a :class:`~clove_driver_exchange.risk.Limits` table), over
        every agent trading through this session.
    :param symbols: the instruments this gateway trades; anything else fails closed.
    """

    host: str = "127.0.0.1"
    port: int
    sender_comp_id: str
    target_comp_id: str
    username: str | None = None
    password: str | None = None
    symbols: tuple[str, ...]
    heartbeat_s: float = 5.0
    connect_timeout: float = 5.0
    reset_on_logon: bool = False
    cancel_on_disconnect: bool = True
    fsync: bool = True
    max_reference_age_s: float = 30.0
    risk: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise invalid("port", f"expected 1..65535, got {self.port}")
        if not self.symbols:
            raise invalid("symbols", "name at least one instrument")
        for key in ("heartbeat_s", "connect_timeout", "max_reference_age_s"):
            if not getattr(self, key) > 0:
                raise invalid(key, "must be positive")
        try:
            Limits.from_table(self.risk)
        except ValueError as err:
            raise invalid(f"risk.{getattr(err, 'key', '')}".rstrip("."), getattr(err, "message", str(err))) from None

    def limits(self) -> Limits:
        return Limits.from_table(self.risk)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeGrant(DeviceGrant):
    """An agent's trading grant. ``symbols`` fails closed (none granted: no trading); the limit
    keys are those of :class:`~clove_driver_exchange.risk.Limits`, applied on top of the
    global ones (the stricter wins). The kernel checks what needs no state (symbol, size, price
    sanity); the driver host checks the rest (positions, exposure, rates) with the same grant.
    Operations ``set_state`` is for operators: never grant it."""

    symbols: tuple[str, ...] = ()
    max_order_qty: float | None = None
    max_notional: float | None = None
    price_collar_pct: float | None = None
    max_position: float | None = None
    max_gross_exposure: float | None = None
    max_open_orders: int | None = None
    order_rate_per_s: float | None = None
    cancel_rate_per_s: float | None = None
    duplicate_window_s: float = 1.0

    def __post_init__(self) -> None:
        DeviceGrant.__post_init__(self)
        if "set_state" in self.ops:
            raise invalid("ops", "set_state (the kill switch) belongs to operators; it cannot be granted")
        self.limits()  # validates the limit keys

    def limits(self) -> Limits:
        table = {name: getattr(self, name) for name in _LIMIT_FIELDS if hasattr(self, name) and getattr(self, name) is not None}
        table["allowed_symbols"] = list(self.symbols)
        return Limits.from_table(table)

    def check(self, op: str, args: Any) -> None:
        """A symbol outside the grant is ``perm.denied``; a limit is ``risk.denied``, worded as
        the risk engine's own refusal of it, so an agent catches one
        :class:`~clove.errors.RiskDenied` for every limit, wherever it is checked."""
        if op == "submit_order":
            if args.symbol not in self.symbols:
                raise deny(f"trading {args.symbol!r} is not granted", symbol=args.symbol, granted=list(self.symbols), reason="symbol")
            if self.max_order_qty is not None and exceeds(args.qty, self.max_order_qty):
                raise risk_denial(
                    "max_order_qty",
                    f"{fmt(args.qty)} {args.symbol} > agent limit {fmt(self.max_order_qty)}",
                    scope="agent",
                    limit=self.max_order_qty,
                    value=args.qty,
                )

    def admits(self, item: Any) -> bool:
        symbol = item.get("symbol")
        return item.get("type") != "md" or symbol in self.symbols


@dataclass(frozen=True, slots=True)
class SubmitArgs:
    symbol: str
    side: str
    qty: float
    price: float | None = None
    type: str = "limit"
    tif: str = "day"
    client_id: str | None = None

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise invalid("side", f"expected buy or sell, got {self.side!r}")
        if self.type not in TYPES:
            raise invalid("type", f"expected limit or market, got {self.type!r}")
        if self.tif not in TIFS:
            raise invalid("tif", f"expected one of {', '.join(TIFS)}, got {self.tif!r}")
        if not (math.isfinite(self.qty) and self.qty > 0):
            raise invalid("qty", f"must be a positive number, got {self.qty!r}")
        if self.type == "limit" and (self.price is None or not math.isfinite(self.price) or self.price <= 0):
            raise invalid("price", "a limit order needs a positive price")
        if self.type == "market" and self.price is not None:
            raise invalid("price", "a market order takes no price")
        if self.client_id is not None and not (1 <= len(self.client_id) <= 40 and self.client_id.isprintable() and "\x01" not in self.client_id):
            raise invalid("client_id", "1-40 printable characters")


@dataclass(frozen=True, slots=True)
class CancelArgs:
    client_id: str


@dataclass(frozen=True, slots=True)
class StateArgs:
    state: str
    reason: str = "operator"
    agent: str | None = None

    def __post_init__(self) -> None:
        if self.state.upper() not in STATES:
            raise invalid("state", f"expected one of {', '.join(STATES)}, got {self.state!r}")


#: Limits of the grants seen, by content: every order asks, and parsing a grant costs more than
#: the risk checks (a changed grant is another key; the table is emptied when it grows large).
_GRANT_LIMITS: dict[Hashable, Limits] = {}


def grant_limits(table: Mapping[str, Any]) -> Limits:
    """An agent's limits from its grant table (as the kernel passes it with each call).

    :raises clove.drivers.schema.FieldError: the table is not a valid grant.
    """
    key = _frozen(table)
    limits = _GRANT_LIMITS.get(key)
    if limits is None:
        if len(_GRANT_LIMITS) >= 256:
            _GRANT_LIMITS.clear()
        limits = _GRANT_LIMITS[key] = build(ExchangeGrant, dict(table)).limits()
    return limits


def _frozen(value: Any) -> Hashable:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return (type(value).__name__, value)  # 1 and 1.0 and True stay apart
