"""The gateway's durable order journal: every outbound order and cancel, and every inbound
execution report, is appended here (and, with ``fsync``, on disk) *before* it is acted on.

After a crash of the driver host or of the kernel, :meth:`OrderJournal.replay` rebuilds what the
gateway had: every order with its last known state, the execution ids already applied (so a
report the venue resends with PossDupFlag is not counted twice), and the trading states. The
venue is then asked for its view (order mass status) and the two are reconciled.

One JSON object per line, numbered by ``n`` (1, 2, 3, ... across restarts: a gap means a lost
record). A torn last line (the machine died mid-write) is ignored on load and cut off when the
journal is opened again, so the next record starts on a line of its own.

With a :class:`~clove_driver_exchange.commit.GroupCommit`, :meth:`OrderJournal.append` writes
the record (a killed process loses nothing) and leaves the fsync to the committer: whoever
acknowledges what the record says waits for it (``GroupCommit.wait``/``after``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clove_driver_exchange.commit import GroupCommit

__all__ = ["JournaledOrder", "OrderJournal", "Replayed", "apply", "risk_snapshot"]

DONE_STATUSES = frozenset({"filled", "canceled", "rejected", "expired"})


@dataclass(slots=True)
class JournaledOrder:
    client_id: str
    agent: str
    symbol: str
    side: str
    qty: float
    price: float | None
    type: str
    tif: str
    status: str = "pending_new"
    order_id: str | None = None
    cum_qty: float = 0.0
    avg_px: float = 0.0

    @property
    def open(self) -> bool:
        return self.status not in DONE_STATUSES

    @property
    def leaves(self) -> float:
        return max(0.0, self.qty - self.cum_qty) if self.open else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id, "agent": self.agent, "symbol": self.symbol, "side": self.side,
            "qty": self.qty, "price": self.price, "type": self.type, "tif": self.tif, "status": self.status,
            "order_id": self.order_id, "cum_qty": self.cum_qty, "leaves_qty": self.leaves, "avg_px": self.avg_px,
        }  # fmt: skip


@dataclass(slots=True)
class Replayed:
    orders: dict[str, JournaledOrder] = field(default_factory=dict)
    exec_ids: set[str] = field(default_factory=set)
    states: dict[str, str] = field(default_factory=dict)  # "" → global state, else per agent
    fills: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0
    last_n: int = 0  # the highest record number seen


class OrderJournal:
    """Append-only JSONL at ``path``. ``fsync=True`` without ``commit`` makes each record
    durable before :meth:`append` returns; with ``commit`` the committer does, for a group.

    Thread-safe: records are numbered and written under one lock.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True, commit: GroupCommit | None = None) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        _cut_torn_tail(self._fd)
        self._lock = threading.Lock()
        self._n = 0
        self._wrote: Callable[[bool], None] | None = commit.add(self) if commit is not None else None

    def append(self, kind: str, **record: Any) -> dict[str, Any]:
        with self._lock:
            self._n += 1
            entry = {"kind": kind, "n": self._n, "ts": time.time(), **record}
            os.write(self._fd, json.dumps(entry, separators=(",", ":"), default=str).encode() + b"\n")
            if self._wrote is not None:
                self._wrote(True)
            elif self.fsync:
                os.fdatasync(self._fd)
        return entry

    def sync_with(self, sync: Callable[[int], None]) -> None:
        """The committer's: sync the file (appends go on meanwhile: they are the next group)."""
        sync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def replay(self) -> Replayed:
        """Everything the journal says, in order (a torn last line is skipped)."""
        out = Replayed()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return out
        for line in raw.split(b"\n"):
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn write at the crash
            out.records += 1
            out.last_n = max(out.last_n, int(entry.get("n") or 0))
            apply(out, entry)
        with self._lock:
            self._n = max(self._n, out.last_n)  # numbering goes on where the file ends
        return out


def _cut_torn_tail(fd: int) -> None:
    """Drop a last line without its newline (a write the machine died in the middle of: it was
    never acknowledged), so the next record is not glued to it and lost with it."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    chunk = 65536
    end = size
    while end > 0:
        start = max(0, end - chunk)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def apply(state: Replayed, entry: dict[str, Any]) -> None:
    """Fold one journal entry into ``state`` (also used live, so replay and runtime agree)."""
    kind = entry.get("kind")
    if kind == "order":
        state.orders[entry["client_id"]] = JournaledOrder(
            client_id=entry["client_id"], agent=entry["agent"], symbol=entry["symbol"], side=entry["side"],
            qty=float(entry["qty"]), price=entry.get("price"), type=entry.get("type", "limit"), tif=entry.get("tif", "day"),
        )  # fmt: skip
    elif kind == "exec":
        exec_id = str(entry.get("exec_id") or "")
        if exec_id and exec_id in state.exec_ids:
            return
        if exec_id:
            state.exec_ids.add(exec_id)
        order = state.orders.get(entry.get("client_id", ""))
        if order is None:
            return
        order.order_id = entry.get("order_id") or order.order_id
        if entry.get("status"):
            order.status = entry["status"]
        if entry.get("last_qty"):
            qty, px = float(entry["last_qty"]), float(entry.get("last_px") or 0.0)
            total = order.cum_qty + qty
            order.avg_px = (order.avg_px * order.cum_qty + px * qty) / total if total else 0.0
            order.cum_qty = total
            state.fills.append({"client_id": order.client_id, "agent": order.agent, "symbol": order.symbol, "side": order.side, "qty": qty, "price": px})
    elif kind == "state":
        state.states[entry.get("agent") or ""] = entry["state"]


def risk_snapshot(book: Replayed) -> dict[str, Any]:
    """What the journal says, in the form :meth:`RiskEngine.restore` takes: positions from the
    fills, the open orders and the trading states."""
    positions: dict[str, dict[str, float]] = {}
    for fill in book.fills:
        signed = fill["qty"] if fill["side"] == "buy" else -fill["qty"]
        held = positions.setdefault(fill["agent"], {})
        held[fill["symbol"]] = held.get(fill["symbol"], 0.0) + signed
    opened = [
        {
            "client_id": o.client_id, "agent": o.agent, "symbol": o.symbol, "side": o.side, "qty": o.qty,
            "price": o.price, "type": o.type, "tif": o.tif, "remaining": o.leaves,
            "acked": o.order_id is not None, "venue_order_id": o.order_id,
        }  # fmt: skip
        for o in book.orders.values()
        if o.open
    ]
    states = {agent or "": state for agent, state in book.states.items()}
    return {
        "version": 1,
        "state": states.pop("", "active"),
        "agent_states": states,
        "positions": {agent: {s: q for s, q in held.items() if q} for agent, held in positions.items()},
        "open_orders": opened,
    }
