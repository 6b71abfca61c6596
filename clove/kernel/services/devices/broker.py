"""The device broker: the kernel's one route to hardware.

It starts a driver host per configured device, listens to all of them on one ROUTER in the
kernel's state dir (``<state>/devices/hosts.sock``, reachable by root only), and serves the
``device.*`` syscalls: it checks the caller's grant (operation, the driver's own argument checks,
token-bucket rates) before anything reaches a host, forwards the operation, and fans the
incoming stream out to subscribers through their grants and filters. See docs/devices.md.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from clove.drivers.grants import DeviceGrant, TokenBucket
from clove.errors import InvalidArguments, NotFound, PermissionDenied, QuotaExceeded
from clove.kernel.audit.journal import Category
from clove.kernel.services.devices.readiness import Readiness
from clove.kernel.services.devices.runtime import DeviceRuntime
from clove.kernel.services.devices.subscriptions import ReadWant, Subscription

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.core.deferred import Deferred
    from clove.kernel.services.devices.hostproc import HostProcess
    from clove.kernel.services.host import ServiceHost, ServiceRegistry

log = logging.getLogger(__name__)

_STOP_GRACE_S = 2.0
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)  # plain ints: no enum object per call
_packb = msgpack.Packer(use_bin_type=True).pack  # one packer for every message to a host (loop thread only)


class DeviceBroker:
    def __init__(self, kernel: ServiceHost) -> None:
        self.kernel = kernel
        self.loop = kernel.loop
        self.backend = kernel.backend
        self.stopping = False
        self.dir = kernel.state_dir / "devices"
        self.endpoint = f"ipc://{self.dir / 'hosts.sock'}"
        self.devices: dict[str, DeviceRuntime] = {d.name: DeviceRuntime(d, self) for d in kernel.config.devices}
        self._by_routing: dict[bytes, DeviceRuntime] = {}
        self._sock: zmq.Socket[bytes] | None = None
        self._exit_fds: dict[int, DeviceRuntime] = {}
        #: The caller as the driver sees it, encoded once per (principal, device): (grant, bytes).
        self._callers: dict[tuple[int | None, str], tuple[DeviceGrant | None, bytes]] = {}

    # ---- setup and teardown -------------------------------------------------------------------------

    def start(self) -> None:
        if not self.devices:
            return
        self.dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        path = self.dir / "hosts.sock"
        if path.exists():
            path.unlink()
        sock.bind(self.endpoint)
        self._sock = sock
        self.loop.add_reader(sock, self._on_readable)
        for runtime in self.devices.values():
            (self.dir / runtime.name).mkdir(mode=0o700, exist_ok=True)
            runtime.start()

    def driver_state_dir(self, name: str) -> str:
        """``<state>/devices/<name>/state``: the driver's durable directory."""
        path = self.dir / name / "state"
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return str(path)

    def log_path(self, name: str) -> str:
        path = self.dir / name / "host.log"
        max_bytes = self.kernel.config.logs.max_bytes
        try:
            if path.stat().st_size > max_bytes:  # keep one previous log, like a rotating handler
                path.replace(path.with_suffix(".log.1"))
        except FileNotFoundError:
            pass
        return str(path)

    def shutdown(self) -> None:
        """Ask every host to close its device, wait a little, then kill what is left."""
        self.stopping = True
        for runtime in self.devices.values():
            runtime.stop()
        deadline = time.monotonic() + _STOP_GRACE_S
        while any(r.host is not None for r in self.devices.values()) and time.monotonic() < deadline:
            for runtime in self.devices.values():
                if runtime.host is not None and runtime.host.reap() is not None:
                    runtime.on_exit()
            time.sleep(0.01)  # shutdown only: the loop has stopped, nothing else waits on us
        for runtime in self.devices.values():
            if runtime.host is not None:
                runtime.host.kill()
                if runtime.host.proc is not None:
                    runtime.host.proc.wait(5)
                runtime.on_exit()
        if self._sock is not None:
            self.loop.remove_reader(self._sock)
            self._sock.close(linger=0)
            self._sock = None

    # ---- hosts --------------------------------------------------------------------------------------

    def watch_exit(self, runtime: DeviceRuntime, host: HostProcess) -> None:
        self._by_routing[runtime.routing] = runtime
        self._exit_fds[host.pidfd] = runtime
        self.loop.add_reader(host.pidfd, runtime.on_exit)

    def unwatch_exit(self, host: HostProcess) -> None:
        runtime = self._exit_fds.pop(host.pidfd, None)
        self.loop.remove_reader(host.pidfd)
        if runtime is not None:
            self._by_routing.pop(f"{runtime.name}#{host.incarnation}".encode(), None)

    def send(self, runtime: DeviceRuntime, message: dict[str, Any], extra: bytes | None = None) -> None:
        """``extra``: an encoded frame sent after the message's (a call's caller)."""
        if self._sock is None:
            return
        frames = [runtime.routing, _packb(message)] if extra is None else [runtime.routing, _packb(message), extra]
        try:
            self._sock.send_multipart(frames, _NOBLOCK)
        except zmq.ZMQError as err:  # not connected yet, or gone: the call times out or the exit path answers
            log.debug("device %s: send to host failed: %s", runtime.name, err)
        self.loop.recheck(self._sock)

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(256):
            if not int(sock.get(_EVENTS)) & _POLLIN:  # cheaper than raising zmq.Again
                return
            frames = sock.recv_multipart(_NOBLOCK)
            if len(frames) < 2:
                continue  # not a host of ours
            runtime = self._by_routing.get(frames[0])
            if runtime is None:
                continue  # a previous incarnation's last words
            for payload in frames[1:]:  # a host may batch messages (the replies one commit released)
                try:
                    message = msgpack.unpackb(payload, raw=False)
                except (ValueError, msgpack.ExtraData):
                    log.warning("device %s: undecodable message from its host", runtime.name)
                    continue
                if isinstance(message, dict):
                    runtime.on_message(message, len(payload))

    def housekeeping(self) -> None:
        now = time.monotonic()
        for runtime in self.devices.values():
            runtime.tick(now)

    # ---- the syscalls' work -------------------------------------------------------------------------

    def runtime(self, name: str) -> DeviceRuntime:
        runtime = self.devices.get(name)
        if runtime is None:
            raise NotFound(f"no device {name!r} is configured", details={"device": name, "devices": sorted(self.devices)})
        return runtime

    def grant_of(self, agent: Agent | None, name: str) -> DeviceGrant | None:
        """The caller's grant on the device (``None`` for operators: everything).

        :raises NotFound: no such device.
        :raises PermissionDenied: an agent without a grant on it.
        """
        self.runtime(name)
        if agent is None:
            return None
        grant = agent.spec.devices.get(name)
        if grant is None:
            raise PermissionDenied(f"no grant on device {name!r}", details={"device": name})
        return grant

    def authorize(self, agent: Agent | None, runtime: DeviceRuntime, op: str, args: dict[str, Any]) -> Any:
        """Every check before an operation leaves the kernel; returns the parsed arguments.

        :raises PermissionDenied: the op is not granted or its arguments go beyond the grant.
        :raises QuotaExceeded: a rate in the grant is spent.
        :raises InvalidArguments: unknown op or bad arguments.
        """
        cls = runtime.spec.driver_class
        spec = cls.operations().get(op)
        if spec is None:
            if op == cls.stream_op:
                raise InvalidArguments(f"{op!r} is {runtime.name}'s stream: use device.recv", details={"op": op})
            raise InvalidArguments(f"device {runtime.name} has no operation {op!r} (it has: {', '.join(cls.operations())})", details={"op": op})
        grant = self.grant_of(agent, runtime.name)
        parsed = cls.parse_args(spec, args)
        # An engaged interlock holds for operators too: the safe state is undone only by releasing it.
        for interlock, allowed in runtime.restrictions.items():
            if op not in allowed:
                runtime.counters["denied"] += 1
                raise PermissionDenied(
                    f"interlock {interlock!r} is engaged: {op!r} on {runtime.name!r} is blocked until an operator releases it",
                    details={"device": runtime.name, "op": op, "interlock": interlock},
                )
        if grant is None or agent is None:
            return parsed
        if op not in grant.ops:
            runtime.counters["denied"] += 1
            raise PermissionDenied(f"operation {op!r} on device {runtime.name!r} is not granted", details={"device": runtime.name, "op": op, "granted": list(grant.ops)})
        try:
            grant.check(op, parsed)
        except PermissionDenied as err:
            runtime.counters["denied"] += 1
            err.details.setdefault("device", runtime.name)
            err.details.setdefault("op", op)
            raise
        self._take_rates(agent.id, runtime, grant, op, parsed)
        return parsed

    def _take_rates(self, agent_id: int, runtime: DeviceRuntime, grant: DeviceGrant, op: str, parsed: Any) -> None:
        rates = grant.rates()
        if not rates:
            return
        cost = grant.cost(op, parsed)
        buckets = []
        for name, amount in cost.items():
            rate = rates.get(name)
            if rate is None or amount <= 0:
                continue
            bucket = runtime.buckets.get((agent_id, name))
            if bucket is None:
                bucket = runtime.buckets[(agent_id, name)] = TokenBucket(rate)
            buckets.append((name, bucket, amount))
        for name, bucket, amount in buckets:
            if bucket.available() < min(amount, bucket.burst):
                runtime.counters["denied"] += 1
                wait = bucket.retry_after(amount)
                raise QuotaExceeded(
                    f"device {runtime.name}: rate {name!r} of {bucket.rate:g}/s is spent; retry in {wait * 1000:.0f} ms",
                    details={"device": runtime.name, "op": op, "rate": name, "limit_per_s": bucket.rate, "retry_after_s": round(wait, 4)},
                )
        for _name, bucket, amount in buckets:
            bucket.take(amount)

    def call(self, agent: Agent | None, name: str, op: str, args: dict[str, Any], deferred: Deferred, principal_id: int | None = None) -> None:
        runtime = self.runtime(name)
        parsed = self.authorize(agent, runtime, op, args)
        grant = agent.spec.devices.get(name) if agent is not None else None
        if grant is not None:
            narrowed = grant.narrow(op, parsed)
            if narrowed is not parsed:
                args = {f.name: getattr(narrowed, f.name) for f in dataclasses.fields(narrowed) if f.init}
        spec = runtime.spec.driver_class.operations().get(op)
        caller = self._caller(agent, name, grant, principal_id) if spec is not None and spec.wants_caller else None
        runtime.call(op, args, deferred, caller, principal_id if principal_id is not None else (agent.id if agent is not None else None))

    def subscribe(
        self, agent: Agent | None, principal_id: int, name: str, filters: list[Any] | None, queue: int | None,
        *, max_bytes: int | None = None, applied: Callable[[Subscription], None] | None = None,
    ) -> Subscription:
        """``max_bytes``: the caller's ``[limits].device_queue_bytes`` (None: the count alone).
        ``applied``: called with the subscription once the host's stream filter admits what it
        may receive (at once, unless the subscription widened the filter)."""
        runtime = self.runtime(name)
        cls = runtime.spec.driver_class
        if cls.stream is None or cls.stream_op is None:
            raise InvalidArguments(f"device {name} has no incoming stream", details={"device": name})
        grant = self.grant_of(agent, name)
        if grant is not None and cls.stream_op not in grant.ops:
            runtime.counters["denied"] += 1
            raise PermissionDenied(f"operation {cls.stream_op!r} on device {name!r} is not granted", details={"device": name, "op": cls.stream_op})
        if queue is not None and not 1 <= queue <= 1_000_000:
            raise InvalidArguments("queue must be 1..1000000", details={"argument": "queue"})
        wants = cls.compile_filter(filters) if filters else None
        sub = runtime.subscribe(principal_id, grant, wants, queue, owner=agent.name if agent is not None else None, max_bytes=max_bytes)
        if applied is not None:
            runtime.when_filtered(lambda: applied(sub))
        return sub

    def recv(
        self, agent: Agent | None, principal_id: int, name: str, want: ReadWant, timeout: float | None, deferred: Deferred,
        *, max_bytes: int | None = None,
    ) -> None:
        runtime = self.runtime(name)
        sub = runtime.subs.get(principal_id)
        fresh = sub is None
        if sub is None:
            sub = self.subscribe(agent, principal_id, name, None, None, max_bytes=max_bytes)
        if sub.kind == "bytes" and want.until == b"":
            raise InvalidArguments("until must not be empty", details={"argument": "until"})
        if fresh:  # read once the host's filter lets this subscription's items through
            runtime.when_filtered(lambda: sub.read(self.loop, want, timeout, deferred))
        else:
            sub.read(self.loop, want, timeout, deferred)

    def forget(self, principal_id: int) -> None:
        """The principal is gone (its agent exited, its session closed): drop its state."""
        for runtime in self.devices.values():
            runtime.unsubscribe(principal_id)
            for key in [k for k in runtime.buckets if k[0] == principal_id]:
                del runtime.buckets[key]
            self._callers.pop((principal_id, runtime.name), None)

    def views(self, agent: Agent | None) -> list[dict[str, Any]]:
        if agent is None:
            return [r.view() for r in self.devices.values()]
        return [r.view(list(agent.spec.devices[r.name].ops)) for r in self.devices.values() if r.name in agent.spec.devices]

    def _caller(self, agent: Agent | None, device: str, grant: DeviceGrant | None, principal_id: int | None) -> bytes:
        """The caller as the driver sees it (only for operations that ask for it), encoded once
        per caller and device: the host decodes it once too (it caches by these bytes)."""
        key = (agent.id if agent is not None else principal_id, device)
        cached = self._callers.get(key)
        if cached is not None and cached[0] is grant:
            return cached[1]
        if agent is None:
            caller: dict[str, Any] = {"agent": None, "agent_id": principal_id, "operator": True, "grant": None}
        else:
            table = {f.name: getattr(grant, f.name) for f in dataclasses.fields(grant) if f.init} if grant is not None else None
            caller = {"agent": agent.name, "agent_id": agent.id, "operator": False, "grant": table}
        encoded: bytes = _packb(caller)
        if key[0] is not None:
            self._callers[key] = (grant, encoded)
        return encoded

    # ---- records ------------------------------------------------------------------------------------

    def record(self, event: str, runtime: DeviceRuntime, **details: Any) -> None:
        self.kernel.journal.append(Category.DEVICE, event, decision="n/a", details={"device": runtime.name, "driver": runtime.spec.driver, **details})

    def emit(self, kind: str, runtime: DeviceRuntime, **data: Any) -> None:
        self.kernel.events.emit(kind, {"device": runtime.name, "driver": runtime.spec.driver, **data})

    def held(self) -> dict[str, int]:
        return {
            "device_subscriptions": sum(len(r.subs) for r in self.devices.values()),
            "device_calls_in_flight": sum(r.held() for r in self.devices.values()),
            "device_queue_bytes": sum(s.held_bytes() for r in self.devices.values() for s in r.subs.values()),
        }

    def held_by(self, principal_id: int) -> dict[str, int]:
        """What one principal's device queues hold, in bytes, over every device."""
        subs = [s for r in self.devices.values() if (s := r.subs.get(principal_id)) is not None]
        return {"device_queue_bytes": sum(s.held_bytes() for s in subs)}


def attach(kernel: ServiceRegistry) -> None:
    broker = DeviceBroker(kernel)
    kernel.devices = broker
    broker.start()
    if broker.devices:  # agents with grants now start once their devices are ready
        kernel.supervisor.set_device_gate(Readiness(broker.devices, kernel.loop))
    kernel.on_shutdown.append(broker.shutdown)
    kernel.loop.housekeeping.append(broker.housekeeping)

    def on_lifecycle(event_type: str, agent: Agent, details: dict[str, Any]) -> None:
        if event_type in ("agent.exited", "agent.removed"):
            broker.forget(agent.id)

    kernel.supervisor.listeners.append(on_lifecycle)
    kernel.sessions.on_close.append(lambda session: broker.forget(session.id))


