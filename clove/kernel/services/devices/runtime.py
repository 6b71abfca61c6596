"""One configured device inside the kernel: its host's lifecycle, its calls in flight, its
subscribers.

States::

    starting ──opened──▶ ready ──host exits / heartbeat lost / broken──▶ down ──backoff──▶ starting
        └──failed / exits──▶ down                                         stopped (kernel stopping)

While a device is not ``ready`` every call is answered at once with ``device.unavailable``;
calls in flight when its host dies are answered ``device.broken``. Subscriptions survive a host
restart: the stream resumes into the same queues.

The stream filter: the host is told what its current listeners can receive at most (the
driver's :meth:`~clove.drivers.Driver.stream_filter` over their grants' scopes; nothing when
nobody listens; everything while an operator listens or a kernel watcher is attached), so a
device that can filter (CAN) drops the rest before it costs anything. It is only an
optimisation: every subscriber's grant and filters still decide each item. A filter may lag
behind when it narrows, never when it widens: a new subscription is answered once the host
has acknowledged a filter that admits it (:meth:`DeviceRuntime.when_filtered`), and every
host opens unfiltered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from clove.errors import (
    CloveError,
    DeviceBroken,
    DeviceTimeout,
    DeviceUnavailable,
    from_wire,
)
from clove.kernel.services.devices.calls import CallBook, Pending
from clove.kernel.services.devices.hostproc import HostProcess
from clove.kernel.services.devices.subscriptions import Subscription

if TYPE_CHECKING:
    from clove.config import DeviceSpec
    from clove.drivers.grants import DeviceGrant
    from clove.kernel.core.deferred import Deferred
    from clove.kernel.core.loop import Timer
    from clove.kernel.services.devices.broker import DeviceBroker
    from clove.ratelimit import TokenBucket

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.5
START_TIMEOUT_S = 15.0
STABLE_AFTER_S = 10.0


class DeviceRuntime:
    """Driven by the broker: :meth:`start`, :meth:`on_message`, :meth:`on_exit`, :meth:`tick`."""

    def __init__(self, spec: DeviceSpec, broker: DeviceBroker) -> None:
        self.spec = spec
        self.name = spec.name
        self.broker = broker
        self.state = "stopped"
        self.host: HostProcess | None = None
        self.incarnation = 0
        self._routing: tuple[int, bytes] = (-1, b"")
        self.restarts = 0
        self.failures = 0  # consecutive, for the backoff
        self.last_error: str | None = None
        self.last_status: dict[str, Any] = {}
        self.host_counters: dict[str, int] = {}
        self.counters = {"calls": 0, "denied": 0, "errors": 0, "items_in": 0, "bytes_in": 0, "delivered": 0, "dropped": 0}
        self.subs: dict[int, Subscription] = {}
        #: Kernel parts fed every stream batch before subscribers (interlock triggers). They see
        #: every item, so while there is one the host is not filtered; add them before the host is up.
        self.watchers: list[Callable[[list[Any]], None]] = []
        #: Called with the reason when the host goes down, and when it is up again.
        self.on_down: list[Callable[[str], None]] = []
        self.on_up: list[Callable[[], None]] = []
        #: Engaged interlocks' limits on every agent's grant: interlock name → allowed ops.
        self.restrictions: dict[str, frozenset[str]] = {}
        self.buckets: dict[tuple[int, str], TokenBucket] = {}
        #: Calls waiting for the host's reply, bounded per caller (:mod:`.calls`).
        self.calls = CallBook(self.name)
        self._last_beat = 0.0
        self._started_at = 0.0
        self._ready_at = 0.0
        self._restart_timer: Timer | None = None
        self.down_since: float | None = None
        #: The stream filter last sent to the current host (``None``: none, as every host opens),
        #: the id of that message, the highest id the host acknowledged, and who waits for one.
        self._filter: Any = None
        self._filter_sent = 0
        self._filter_acked = 0
        self._filter_waiters: list[tuple[int, Callable[[], None]]] = []
        self._filter_timer: Timer | None = None

    @property
    def routing(self) -> bytes:
        """The current host's ZeroMQ routing id (``NAME#INCARNATION``), built once per incarnation."""
        cached = self._routing
        if cached[0] != self.incarnation:
            cached = self._routing = (self.incarnation, f"{self.name}#{self.incarnation}".encode())
        return cached[1]

    # ---- host lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._restart_timer = None
        if self.broker.stopping:
            return
        self.incarnation += 1
        host = HostProcess(
            self.spec, self.incarnation, endpoint=self.broker.endpoint, heartbeat=HEARTBEAT_S,
            discard=self.broker.kernel.supervisor.discard_cgroup,
        )  # fmt: skip
        host.state_dir = self.broker.driver_state_dir(self.name)
        self.state = "starting"
        self._started_at = self._last_beat = time.monotonic()
        try:
            host.start(self.broker.backend, self.broker.log_path(self.name))
        except CloveError as err:
            self._went_down(f"start failed: {err.message}")
            return
        self.host = host
        self.broker.watch_exit(self, host)
        self.broker.record("device.host_started", self, pid=host.pid, incarnation=self.incarnation, isolation=host.isolation())

    def on_message(self, message: dict[str, Any], size: int = 0) -> None:
        """One message from the host; ``size``: its encoded bytes (items count their share)."""
        kind = message.get("t")
        self._last_beat = time.monotonic()
        if kind == "data":
            self._deliver(message, size)
        elif kind == "reply":
            self._reply(message)
        elif kind == "filtered":
            self._filtered(message)
        elif kind == "hb":
            self.host_counters = dict(message.get("counters") or {})
            self.last_status = dict(message.get("status") or {})
        elif kind == "opened":
            self.last_status = dict(message.get("status") or {})
            self._up()
        elif kind in ("failed", "broken"):
            error = message.get("error") or {}
            self.last_error = str(error.get("message", kind))
            self.broker.record(f"device.{kind}", self, error=error)

    def _up(self) -> None:
        recovered = self.down_since is not None
        self.state = "ready"
        self._ready_at = time.monotonic()
        outage = time.monotonic() - self.down_since if self.down_since is not None else None
        self.down_since = None
        self._filter, self._filter_acked = None, self._filter_sent  # a new host: unfiltered, nothing pending
        self.refilter()
        self.broker.record("device.up", self, pid=self.host.pid if self.host else None, recovered=recovered, outage_s=outage)
        self.broker.emit("DEVICE_UP", self, recovered=recovered, outage_s=None if outage is None else round(outage, 3))
        for hook in list(self.on_up):  # a hook may remove itself (a start that waited for this device)
            hook()

    def on_exit(self) -> None:
        """The host's pidfd fired: reap it, fail its calls, schedule the restart."""
        host = self.host
        if host is None:
            return
        status = host.reap()
        if status is None:
            return
        oom = host.oom_killed()
        self.broker.unwatch_exit(host)
        host.cleanup()
        self.host = None
        if status == 0 and self.broker.stopping:
            self.state = "stopped"
            return
        reason = "oom_killed" if oom else (f"signal {-status}" if status < 0 else f"exit {status}")
        if status == 3 and self.last_error:
            reason = f"open failed: {self.last_error}"
        elif status == 4 and self.last_error:
            reason = f"device broken: {self.last_error}"
        self._went_down(reason)

    def _went_down(self, reason: str) -> None:
        was = self.state
        self.last_error = reason
        self.state = "stopped" if self.broker.stopping else "down"
        for call_id in self.calls.ids():
            self._fail_call(call_id, DeviceBroken(f"device {self.name}: its host went down during the call ({reason})", details={"device": self.name}))
        self._filter = None
        self._release_filter_waiters()  # the next host opens unfiltered
        if self.down_since is None:
            self.down_since = time.monotonic()
        if self.broker.stopping:
            return
        if was == "ready" and time.monotonic() - self._ready_at > STABLE_AFTER_S:
            self.failures = 0
        delay = min(self.spec.backoff_max, self.spec.backoff_initial * (2**self.failures))
        self.failures += 1
        self.restarts += 1
        self.broker.record("device.down", self, reason=reason, previous=was, restart_in_s=round(delay, 3), restarts=self.restarts)
        self.broker.emit("DEVICE_DOWN", self, reason=reason, restart_in_s=round(delay, 3))
        for hook in self.on_down:
            hook(reason)
        self._restart_timer = self.broker.loop.call_later(delay, self.start)

    def tick(self, now: float) -> None:
        """Housekeeping: a silent host (no heartbeat) or one stuck starting is killed; its exit
        then takes the usual path."""
        if self.host is None or self.state not in ("starting", "ready"):
            return
        # A host is a fresh interpreter importing its plugin: on a slow machine, the sandboxes' start_timeout.
        starting = max(START_TIMEOUT_S, self.broker.kernel.config.sandbox.start_timeout)
        limit = starting if self.state == "starting" else self.spec.heartbeat_timeout
        if now - self._last_beat > limit:
            what = "did not start" if self.state == "starting" else f"sent no heartbeat for {now - self._last_beat:.1f} s"
            log.warning("device %s: host %s %s; killing it", self.name, self.host.pid, what)
            self.last_error = what
            self.broker.record("device.hung", self, pid=self.host.pid, reason=what)
            self.host.kill()

    def kill_host(self) -> int | None:
        """SIGKILL the host (operator request, tests); the restart follows. Its pid, if any."""
        if self.host is None:
            return None
        pid = self.host.pid
        self.host.kill()
        return pid

    def stop(self) -> None:
        if self._restart_timer is not None:
            self._restart_timer.cancel()
            self._restart_timer = None
        if self.host is not None:
            self.broker.send(self, {"t": "stop"})
        for call_id in self.calls.ids():
            self._fail_call(call_id, DeviceUnavailable(f"device {self.name}: the kernel is stopping", details={"device": self.name}))
        self._release_filter_waiters()
        for sub in self.subs.values():
            sub.cancel()

    # ---- calls ------------------------------------------------------------------------------------

    def call(
        self, op: str, args: dict[str, Any], deferred: Deferred, caller: bytes | None = None, principal: int | None = None,
    ) -> None:  # fmt: skip
        """Forward one operation to the host; ``deferred`` gets its reply.

        ``caller``: the caller as the driver sees it, msgpack-encoded once per caller by the broker;
        it travels as a second frame, so the host decodes it once per caller, not per call.

        ``principal``: the calling agent or operator session, whose calls in flight on this device
        are bounded (``None``: the kernel itself, an interlock's action, never refused here).

        :raises DeviceUnavailable: the host is not ready.
        :raises QuotaExceeded: the caller is at its bound of calls in flight here (:mod:`.calls`).
        :raises DeviceBusy: the device is at its bound of calls in flight.
        """
        if self.state != "ready" or self.host is None:
            why = f": {self.last_error}" if self.last_error else ""
            raise DeviceUnavailable(f"device {self.name} is {self.state}{why}", details={"device": self.name, "state": self.state})
        try:
            self.calls.admit(principal, op)
        except CloveError:
            self.counters["denied"] += 1
            raise
        call_id = self.calls.next_id()
        timer = self.broker.loop.call_later(self.spec.call_timeout, lambda: self._timed_out(call_id))
        self.calls.add(call_id, Pending(deferred, op, principal, timer))
        self.counters["calls"] += 1
        self.broker.send(self, {"t": "call", "id": call_id, "op": op, "args": args}, caller)

    def _timed_out(self, call_id: int) -> None:
        pending = self.calls.get(call_id)
        if pending is not None:
            op = pending.op
            self._fail_call(call_id, DeviceTimeout(f"device {self.name}: {op} took longer than {self.spec.call_timeout} s", details={"device": self.name, "op": op}))

    def _reply(self, message: dict[str, Any]) -> None:
        pending = self.calls.settle(message.get("id"))
        if pending is None:
            return  # timed out already
        if "error" in message:
            self.counters["errors"] += 1
            err = from_wire(message["error"])
            err.details.setdefault("device", self.name)
            pending.deferred.reject(err)
        else:
            pending.deferred.resolve({"success": True, "result": message.get("result")})

    def _fail_call(self, call_id: int, error: CloveError) -> None:
        if self.calls.fail(call_id, error):
            self.counters["errors"] += 1

    # ---- the stream -------------------------------------------------------------------------------

    def _deliver(self, message: dict[str, Any], size: int = 0) -> None:
        items = message.get("items")
        if items is not None:
            self.counters["items_in"] += len(items)
            for watch in self.watchers:
                watch(items)
            item_bytes = size // len(items) if items else 0
            for sub in self.subs.values():
                sub.offer_items(items, item_bytes)
            return
        data = message.get("bytes")
        if isinstance(data, bytes):
            self.counters["bytes_in"] += len(data)
            for sub in self.subs.values():
                sub.offer_bytes(data)

    def subscribe(
        self, principal_id: int, grant: DeviceGrant | None, wants: Callable[[Any], bool] | None, queue: int | None,
        owner: str | None = None, max_bytes: int | None = None,
    ) -> Subscription:
        """``max_bytes``: the subscriber's ``device_queue_bytes`` (a byte stream's queue is at
        most that many bytes, an items queue at most that many encoded bytes of items)."""
        kind = self.spec.driver_class.stream or "items"
        limit = queue or (self.spec.queue_bytes if kind == "bytes" else self.spec.queue)
        if kind == "bytes" and max_bytes is not None:
            limit = min(limit, max_bytes)
        old = self.subs.get(principal_id)
        sub = Subscription(principal_id, kind=kind, limit=limit, grant=grant, wants=wants, owner=owner, max_bytes=max_bytes)
        if old is not None:  # new filters: keep what is queued and the drop count
            old.cancel()
            sub.adopt(old)
        self.subs[principal_id] = sub
        self.refilter()
        return sub

    def unsubscribe(self, principal_id: int) -> Subscription | None:
        sub = self.subs.pop(principal_id, None)
        if sub is not None:
            sub.cancel()
            self.counters["dropped"] += sub.dropped
            self.counters["delivered"] += sub.delivered
            self.refilter()
        return sub

    # ---- the stream filter ------------------------------------------------------------------------

    def wanted_filter(self) -> Any | None:
        """The filter the current listeners need (``None``: everything)."""
        if self.watchers:
            return None
        scopes = []
        try:
            for sub in self.subs.values():
                scope = sub.grant.stream_scope() if sub.grant is not None else None
                if scope is None:
                    return None
                scopes.append(scope)
            return self.spec.driver_class.stream_filter(scopes)
        except Exception:  # noqa: BLE001 - plugin code: a failure costs the optimisation, not the stream
            log.exception("device %s: computing the stream filter failed; the host stays unfiltered", self.name)
            return None

    def refilter(self) -> None:
        """Send the host the filter its listeners need, if that changed (while it is ready; a
        host that is starting gets it once it is up)."""
        if self.state != "ready" or self.host is None:
            return
        spec = self.wanted_filter()
        if spec != self._filter:
            self._filter_sent += 1
            self._filter = spec
            self.broker.send(self, {"t": "filter", "id": self._filter_sent, "spec": spec})

    def when_filtered(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the host's filter admits everything the current listeners can
        receive: at once if it does (or no host is up: each opens unfiltered), else when the host
        acknowledges the last filter sent (or goes down, or ``call_timeout`` passes)."""
        if self.host is None or self._filter_acked >= self._filter_sent:
            callback()
            return
        self._filter_waiters.append((self._filter_sent, callback))
        if self._filter_timer is None:
            self._filter_timer = self.broker.loop.call_later(self.spec.call_timeout, self._filter_overdue)

    def _filtered(self, message: dict[str, Any]) -> None:
        ident = message.get("id")
        if not isinstance(ident, int):
            return
        if "error" in message:
            error = message["error"]
            log.warning("device %s: the host refused stream filter %d and delivers everything: %s", self.name, ident, error)
            self.broker.record("device.filter_refused", self, error=error)
            if ident == self._filter_sent:
                self._filter = None  # the host cleared it; the next change sends one again
        self._filter_acked = max(self._filter_acked, ident)
        due = [cb for sent, cb in self._filter_waiters if sent <= self._filter_acked]
        self._filter_waiters = [(sent, cb) for sent, cb in self._filter_waiters if sent > self._filter_acked]
        if not self._filter_waiters and self._filter_timer is not None:
            self._filter_timer.cancel()
            self._filter_timer = None
        for callback in due:
            callback()

    def _filter_overdue(self) -> None:
        self._filter_timer = None
        if self._filter_waiters:
            log.warning("device %s: the host did not acknowledge its stream filter in %s s", self.name, self.spec.call_timeout)
        self._release_filter_waiters()

    def _release_filter_waiters(self) -> None:
        if self._filter_timer is not None:
            self._filter_timer.cancel()
            self._filter_timer = None
        waiters, self._filter_waiters = self._filter_waiters, []
        self._filter_acked = self._filter_sent
        for _sent, callback in waiters:
            callback()

    # ---- views ------------------------------------------------------------------------------------

    def view(self, ops: list[str] | None = None) -> dict[str, Any]:
        cls = self.spec.driver_class
        dropped = self.counters["dropped"] + sum(s.dropped for s in self.subs.values())
        delivered = self.counters["delivered"] + sum(s.delivered for s in self.subs.values())
        return {
            "name": self.name,
            "driver": self.spec.driver,
            "state": self.state,
            "host_pid": self.host.pid if self.host is not None else None,
            "incarnation": self.incarnation,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "stream": cls.stream,
            "stream_op": cls.stream_op,
            "ops": ops if ops is not None else list(cls.grant_ops()),
            "subscribers": len(self.subs),
            "counters": {**self.counters, "dropped": dropped, "delivered": delivered},
            "host_counters": self.host_counters,
            "status": self.last_status,
        }

    def held(self) -> int:
        return len(self.calls)

