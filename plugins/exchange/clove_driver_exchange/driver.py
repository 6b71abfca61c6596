"""The exchange driver: order entry through one FIX 4.4 session, behind a risk engine that runs
in the driver host, outside every agent, and that no agent can reach around.

Path of an order: agent → kernel (the agent's grant: operation, symbol, size) → this host:
the risk engine (positions, exposure, collars, rates shared across agents on the credential,
trading state) → the order journal and the FIX sequence store (written) → the group commit (one
fsync of each for every record written meanwhile: :mod:`~clove_driver_exchange.commit`) →
NewOrderSingle on the venue session, and the reply. Nothing leaves before it is durable: the
session's outbound messages pass a gate the committer opens, and an operation returns (the host
then replies) only once its records are synced. Execution reports come back on the session's
reader thread: journaled first, then applied to the risk engine and the order book, then, once
the record is durable, streamed to the agent that owns the order (stream items carry ``"to"``:
the kernel delivers them to that agent only). Market data updates the risk engine's reference
prices and streams to agents granted the symbol at once. That side is
:class:`~clove_driver_exchange.reports.VenueReports`.

Threads: the host's main thread runs the operations one at a time; an operation that wrote
records returns a :class:`~clove.drivers.Later` that the committer settles once they are durable,
so the host takes the next calls while a commit runs and orders from many callers share one
fsync; the session's reader thread applies reports; its writer thread sends; the committer syncs
and releases. The driver's lock
guards the book, the risk engine and the journal's order; nobody holds it while a sync runs.

Restarts: the journal rebuilds orders, fills and trading states; the session's sequence store
makes the venue resend what it reported while the host was away (duplicates are skipped by
ExecID); an OrderMassStatusRequest then confirms which orders are still open. A lost connection
makes the stream fail (``device.broken``): the kernel restarts the host, which reconnects and
reconciles. Trading states: ACTIVE, REDUCING (position-reducing orders only), HALTED (the kill
switch: every open order is cancelled, new ones are refused), set by an operator
(``clove trading halt``) or an interlock (``{ device = "exchange", op = "set_state", ... }``).
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from clove.drivers import Caller, Driver, Later, NoArgs, operation
from clove.errors import DeviceBroken, DeviceUnavailable, NotFound, PermissionDenied
from clove_driver_exchange.commit import CommitFailed, GroupCommit
from clove_driver_exchange.config import (
    CancelArgs,
    ExchangeConfig,
    ExchangeGrant,
    StateArgs,
    SubmitArgs,
    grant_limits,
)
from clove_driver_exchange.fix import messages as fixmsg
from clove_driver_exchange.fix.session import FixSession
from clove_driver_exchange.fix.store import SeqStore
from clove_driver_exchange.fix.transport import FixConnection, connect
from clove_driver_exchange.journal import JournaledOrder, OrderJournal, Replayed, apply, risk_snapshot
from clove_driver_exchange.reports import VenueReports
from clove_driver_exchange.risk import Limits, Order, RiskEngine, TradingState
from clove_driver_exchange.risk.limits import deny as risk_denial

__all__ = ["ExchangeDriver"]

log = logging.getLogger(__name__)

_SIDES = {"1": "buy", "2": "sell"}
_OPERATOR = "operator"


class ExchangeDriver(Driver):
    """See the module docstring. Stream items: ``{"type": "exec", "to", ...}``,
    ``{"type": "cancel_reject", "to", ...}``, ``{"type": "md", "symbol", "bid", "ask", "last"}``
    and ``{"type": "state", "state"}``."""

    Config = ExchangeConfig
    Grant = ExchangeGrant
    stream = "items"
    stream_op = "executions"

    #: Items kept for the host to stream when nobody reads (oldest dropped first).
    QUEUE: ClassVar[int] = 100_000

    config: ExchangeConfig

    def __init__(self, config: ExchangeConfig) -> None:
        self._lock = threading.RLock()
        self._items: deque[dict[str, Any]] = deque(maxlen=self.QUEUE)
        self._wake_r = self._wake_w = -1
        self._journal: OrderJournal | None = None
        self._commit = GroupCommit(fsync=False)  # replaced when opened
        #: How the committer syncs a file; a test swaps in one that blocks or fails.
        self.sync_file: Callable[[int], None] = os.fdatasync
        self._book = Replayed()
        self._risk: RiskEngine | None = None
        self._session: FixSession | None = None
        self._conn: FixConnection | None = None
        self._reports: VenueReports | None = None  # what the venue says: applied there
        self._lost: str | None = None
        self._ids = itertools.count(1)
        #: Random per driver instance, so ids stay unique across restarts without a uuid4 (a
        #: getrandom call and an object) per order: the base, then a counter.
        self._id_base = os.urandom(5).hex()
        #: Each caller's limits by its grant table (kept with it, so an id is never reused here).
        self._limits: dict[int, tuple[dict[str, Any], Limits]] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.counters = {"orders": 0, "denied": 0, "cancels": 0, "reports": 0, "fills": 0, "duplicates": 0}
        super().__init__(config)

    # ---- lifecycle ------------------------------------------------------------------------------

    def _open(self) -> None:
        directory = self.state_dir
        if directory is None:  # outside a host (a plugin's own tests): a private temporary dir
            self._tmp = tempfile.TemporaryDirectory(prefix="clove-exchange-")
            directory = self._tmp.name
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._commit = GroupCommit(fsync=self.config.fsync, sync=self.sync_file, on_failure=self._on_commit_failure, name="exchange-commit")
        try:
            self._open_state(directory)
            self._log_on()
        except BaseException:
            self._close_files()  # a failed open is never closed by the base class
            raise

    def _open_state(self, directory: str) -> None:
        """The journal and the sequence store (both under the group commit), and what they say."""
        self._journal = OrderJournal(os.path.join(directory, "orders.jsonl"), fsync=self.config.fsync, commit=self._commit)
        store = SeqStore(os.path.join(directory, "fix-session.json"), fsync=self.config.fsync)
        store.defer_sync(self._commit.add(store))  # synced beside the journal, in the same commits
        self._book = self._journal.replay()
        self._risk = RiskEngine(self.config.limits(), instruments=self.config.symbols, max_reference_age_s=self.config.max_reference_age_s)
        self._risk.restore(risk_snapshot(self._book))  # positions, open orders and states
        self._reports = VenueReports(self._lock, self._journal, self._book, self._risk, self.counters, self._emit, self._release)
        self._session = FixSession(
            "initiator",
            self.config.sender_comp_id,
            self.config.target_comp_id,
            store,
            heartbeat_s=self.config.heartbeat_s,
            on_app_message=self._reports.on_app,
            username=self.config.username,
            password=self.config.password,
            cancel_on_disconnect=self.config.cancel_on_disconnect,
            reset_on_logon=self.config.reset_on_logon,
        )

    def _log_on(self) -> None:
        assert self._session is not None  # noqa: S101
        try:
            self._conn = connect(
                self._session, self.config.host, self.config.port, timeout=self.config.connect_timeout,
                on_disconnect=self._on_disconnect, gate=self._commit.after,
            )  # fmt: skip
        except OSError as err:
            raise DeviceUnavailable(f"venue {self.config.host}:{self.config.port} unreachable: {err.strerror or err}") from None
        deadline = time.monotonic() + self.config.connect_timeout
        while self._session.state != "active":
            if self._lost is not None or time.monotonic() > deadline:
                why = self._lost or self._session.last_logout_text or "no logon reply"
                self._conn.close("logon failed")
                raise DeviceUnavailable(f"venue {self.config.target_comp_id}: logon failed: {why}")
            time.sleep(0.01)  # the session's reader thread completes the logon
        self._reconcile()
        self._session.send_app(*fixmsg.market_data_request(f"md-{uuid.uuid4().hex[:8]}", list(self.config.symbols)))

    def _reconcile(self) -> None:
        """Ask the venue for every open order; what we think is open and it does not is done."""
        assert self._session is not None and self._reports is not None  # noqa: S101
        self._reports.start_reconcile()
        self._session.send_app(*fixmsg.order_mass_status_request(f"recon-{uuid.uuid4().hex[:8]}"))

    def _close(self) -> None:
        if self._conn is not None:
            if self._session is not None and self._session.state == "active":
                self._session.logout("clove driver closing")
                self._conn.join(2.0)
            self._conn.close("driver closed")
            self._conn.join(2.0)
        self._close_files()

    def _close_files(self) -> None:
        self._commit.close()  # after the Logout it released: what is written is synced
        if self._journal is not None:
            self._journal.close()
        if self._session is not None:
            self._session.store.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._tmp is not None:
            self._tmp.cleanup()

    def _on_disconnect(self, conn: FixConnection, reason: str) -> None:
        if not self.closed:
            self._lost = self._lost or reason
            self._wake()

    def _on_commit_failure(self, err: OSError) -> None:
        """A failed sync: nothing waiting is acknowledged or sent; the stream fails, and the
        restarted host goes on from what the disk holds."""
        self._lost = f"order journal: sync failed: {err}"
        if self._conn is not None:
            self._conn.close("order journal sync failed")
        self._wake()

    def _durable(self, ticket: int, result: dict[str, Any]) -> dict[str, Any] | Later:
        """``result``, acknowledged only once ``ticket`` is on disk: a :class:`Later` the
        committer settles, so the host takes the next calls meanwhile (they join the same commit)
        and replies when it is durable; a failed sync rejects it with ``device.broken``."""
        if not self._commit.fsync:
            return result
        later = Later()

        def done(error: CommitFailed | None) -> None:
            if error is None:
                later.resolve(result)
            else:
                later.reject(DeviceBroken(f"{error}; the outcome is known once the host restarts and reconciles"))

        self._commit.notify(ticket, done)
        return later

    # ---- the stream -----------------------------------------------------------------------------

    def fileno(self) -> int:
        return self._wake_r

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _emit(self, item: dict[str, Any]) -> None:
        self._items.append(item)
        self._wake()

    def _release(self, item: dict[str, Any]) -> None:
        """Stream ``item`` once every record written so far is durable."""
        self._commit.after(lambda: self._emit(item))

    def _read_internal(self, timeout: float | None) -> list[dict[str, Any]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._items and self._lost is None and not self.closed and timeout != 0:
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                break
            select.select([self._wake_r], [], [], left)
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        if self._lost is not None and not self._items:
            raise DeviceBroken(f"venue session lost: {self._lost}")
        out: list[dict[str, Any]] = []
        while self._items and len(out) < 512:
            out.append(self._items.popleft())
        return out

    # ---- operations -----------------------------------------------------------------------------

    def _active(self) -> FixSession:
        if self._session is None or self._session.state != "active" or self._lost is not None:
            raise DeviceUnavailable(f"venue session is not active ({self._lost or (self._session.state if self._session else 'closed')})")
        return self._session

    def _who(self, caller: Caller | None) -> tuple[str, Limits | None]:
        if caller is None or caller.operator or caller.agent is None:
            return _OPERATOR, None
        grant = caller.grant or {}
        cached = self._limits.get(id(grant))
        if cached is None or cached[0] is not grant:  # the host hands the same table for the same caller
            if len(self._limits) >= 1024:
                self._limits.clear()
            cached = self._limits[id(grant)] = (grant, grant_limits(grant))
        return caller.agent, cached[1]

    @operation(args=SubmitArgs, caller=True)
    def submit_order(self, args: SubmitArgs, caller: Caller | None) -> dict[str, Any] | Later:
        """Risk-check, journal and send one order; reports follow on the stream."""
        agent, limits = self._who(caller)
        session = self._active()
        assert self._risk is not None and self._journal is not None  # noqa: S101
        client_id = args.client_id or f"{agent[:12]}-{self._id_base}{next(self._ids):x}"
        order = Order(client_id=client_id, agent=agent, symbol=args.symbol, side=args.side, qty=args.qty, price=args.price, type=args.type, tif=args.tif)
        with self._lock:
            if client_id in self._book.orders:
                raise risk_denial("bad_order", f"client id {client_id!r} was used already")
            try:
                self._risk.check_new(order, limits)
            except PermissionDenied:
                self.counters["denied"] += 1
                raise
            entry = self._journal.append("order", client_id=client_id, agent=agent, symbol=args.symbol, side=args.side, qty=args.qty, price=args.price, type=args.type, tif=args.tif)
            apply(self._book, entry)
            self._risk.accept_new(order)
            try:
                session.send_app(*fixmsg.new_order_single(client_id, args.symbol, args.side, args.qty, ord_type=args.type, price=args.price, time_in_force=args.tif, account=agent))
            except Exception:
                self._risk.on_done(client_id)
                raise
            self.counters["orders"] += 1
            ticket = self._commit.mark()
        return self._durable(ticket, {"client_id": client_id, "status": "sent"})  # what arrives meanwhile joins its commit

    @operation(args=CancelArgs, caller=True)
    def cancel(self, args: CancelArgs, caller: Caller | None) -> dict[str, Any] | Later:
        """Ask the venue to cancel one of the caller's open orders."""
        agent, limits = self._who(caller)
        session = self._active()
        assert self._risk is not None and self._journal is not None  # noqa: S101
        with self._lock:
            order = self._book.orders.get(args.client_id)
            if order is None or (agent != _OPERATOR and order.agent != agent):
                raise NotFound(f"no open order {args.client_id!r} of yours", details={"client_id": args.client_id})
            self._risk.check_cancel(order.agent, args.client_id, limits if agent != _OPERATOR else None)
            self._send_cancel(session, order, reason=f"cancel by {agent}")
            self.counters["cancels"] += 1
            ticket = self._commit.mark()
        return self._durable(ticket, {"client_id": args.client_id, "status": "cancel_sent"})

    def _send_cancel(self, session: FixSession, order: JournaledOrder, *, reason: str) -> None:
        assert self._journal is not None  # noqa: S101
        cancel_id = f"cx-{self._id_base}{next(self._ids):x}"
        self._journal.append("cancel", client_id=order.client_id, cancel_id=cancel_id, reason=reason)
        session.send_app(*fixmsg.order_cancel_request(cancel_id, order.client_id, order.symbol, order.side, qty=order.qty, account=order.agent))

    @operation(caller=True)
    def orders(self, args: NoArgs, caller: Caller | None) -> list[dict[str, Any]]:
        """The caller's open orders (an operator's view: every agent's)."""
        agent, _ = self._who(caller)
        with self._lock:
            return [o.to_dict() for o in self._book.orders.values() if o.open and (agent == _OPERATOR or o.agent == agent)]

    @operation(caller=True)
    def positions(self, args: NoArgs, caller: Caller | None) -> dict[str, float]:
        """The caller's net position per symbol (an operator's view: the account's)."""
        agent, _ = self._who(caller)
        assert self._risk is not None  # noqa: S101
        with self._lock:
            return dict(self._risk.account_positions() if agent == _OPERATOR else self._risk.positions(agent))

    @operation(args=StateArgs, caller=True)
    def set_state(self, args: StateArgs, caller: Caller | None) -> dict[str, Any] | Later:
        """Operators: ACTIVE, REDUCING or HALTED (cancels every open order) for all or one agent."""
        if caller is not None and not caller.operator:
            raise PermissionDenied("the trading state belongs to operators", details={"reason": "operator_only"})
        assert self._risk is not None and self._journal is not None  # noqa: S101
        state = TradingState(args.state.lower())
        cancelling: list[str] = []
        with self._lock:
            self._journal.append("state", state=state.value, agent=args.agent, reason=args.reason)
            apply(self._book, {"kind": "state", "state": state.value, "agent": args.agent})
            to_cancel = self._risk.set_state(state, args.agent)
            session = self._session if self._session is not None and self._session.state == "active" else None
            for open_order in to_cancel:
                order = self._book.orders.get(open_order.client_id)
                if order is not None and session is not None:
                    self._send_cancel(session, order, reason=f"kill switch: {args.reason}")
                    cancelling.append(order.client_id)
            ticket = self._commit.mark()
        self._release({"type": "state", "state": state.value.upper(), "agent": args.agent, "reason": args.reason, "ts": time.time()})
        return self._durable(ticket, {"state": state.value.upper(), "agent": args.agent, "cancelling": cancelling})

    @operation("status")
    def op_status(self, args: NoArgs) -> dict[str, Any]:
        """Session state, sequence numbers, trading state, open orders and reference prices."""
        assert self._risk is not None and self._session is not None  # noqa: S101
        with self._lock:
            return {
                "session": self._session.state,
                "venue": self.config.target_comp_id,
                "next_out_seq": self._session.next_sender_seq,
                "next_in_seq": self._session.next_target_seq,
                "state": self._risk.state().value.upper(),
                "open_orders": sum(1 for o in self._book.orders.values() if o.open),
                "references": {s: self._risk.reference(s) for s in self.config.symbols},
                "counters": dict(self.counters),
                "commit": self._commit_stats(),
            }

    def _commit_stats(self) -> dict[str, Any]:
        commits, records = self._commit.commits, self._commit.records
        return {"fsync": self._commit.fsync, "commits": commits, "records": records, "per_commit": round(records / commits, 2) if commits else None}

    def status(self) -> dict[str, Any]:
        """For the host's heartbeat (``clove devices``)."""
        if self._session is None:
            return {"session": "closed"}
        return {"session": self._session.state, "venue": self.config.target_comp_id, "lost": self._lost, "commit": self._commit_stats()}
