"""Device syscalls: list, inspect, call an operation, and receive the incoming stream.

Agents reach only the devices they hold a grant on (``[agents.A.devices.D]``); every check is
in :class:`clove.kernel.services.devices.broker.DeviceBroker`. Operators may use every device. All are
journaled under ``DEVICE`` (denials under ``SECURITY``). See docs/devices.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, final

from clove.errors import InvalidArguments, NotFound
from clove.kernel.core.deferred import Deferred
from clove.kernel.services.devices.subscriptions import ReadWant
from clove.kernel.syscalls.base import Syscall, SyscallContext

if TYPE_CHECKING:
    from clove.kernel.services.devices.broker import DeviceBroker


def _broker(ctx: SyscallContext) -> DeviceBroker:
    return ctx.kernel.devices


class _DeviceSyscall(Syscall):
    category = "DEVICE"
    right = "devices"


@final
class ListDevices(_DeviceSyscall):
    """``device.list`` → ``{success, devices}``: for an agent, the devices it holds a grant on
    (``ops`` are its granted operations); for an operator, all of them."""

    name = "device.list"

    def execute(self, ctx: SyscallContext, req: Any) -> dict[str, Any]:
        return {"success": True, "devices": _broker(ctx).views(ctx.agent)}


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    device: str


@final
class DeviceInfo(_DeviceSyscall):
    """``device.info {device}`` → ``{success, device}``: state, host pid, restarts, counters.

    :raises NotFound: no such device. :raises PermissionDenied: an agent without a grant on it.
    """

    name = "device.info"
    Request = DeviceRequest

    def execute(self, ctx: SyscallContext, req: DeviceRequest) -> dict[str, Any]:
        broker = _broker(ctx)
        grant = broker.grant_of(ctx.agent, req.device)
        runtime = broker.runtime(req.device)
        return {"success": True, "device": runtime.view(list(grant.ops) if grant is not None else None)}


@dataclass(frozen=True, slots=True)
class CallRequest:
    device: str
    op: str
    args: dict[str, Any] = field(default_factory=dict)


@final
class DeviceCall(_DeviceSyscall):
    """``device.call {device, op, args}`` → ``{success, result}``, answered when the driver
    host has run the operation.

    :raises PermissionDenied: the op, or its arguments (a CAN id, a GPIO line, a write size),
        are not granted.
    :raises QuotaExceeded: a rate in the grant is spent (``details.retry_after_s``).
    :raises DeviceUnavailable: the device's host is down or restarting.
    :raises DeviceBroken: the host died during the call, or the device failed.
    :raises DeviceTimeout: no answer within the device's ``call_timeout``.
    """

    name = "device.call"
    Request = CallRequest

    def execute(self, ctx: SyscallContext, req: CallRequest) -> Deferred:
        deferred = Deferred()
        _broker(ctx).call(ctx.agent, req.device, req.op, req.args, deferred, ctx.principal_id)
        return deferred


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    device: str
    filters: list[Any] | None = None
    queue: int | None = None


@final
class DeviceSubscribe(_DeviceSyscall):
    """``device.subscribe {device, filters?, queue?}`` → ``{success, queue, dropped}``: start
    (or re-filter) the caller's queue for the device's stream. Needs the driver's stream op
    (``recv``, ``read``, ``watch``) in the grant. The queue is also bounded by the caller's
    ``[limits].device_queue_bytes`` (oldest dropped and counted). Answered once the device's
    host filters its stream so that everything the caller may receive gets through."""

    name = "device.subscribe"
    Request = SubscribeRequest

    def execute(self, ctx: SyscallContext, req: SubscribeRequest) -> Deferred:
        deferred = Deferred()
        _broker(ctx).subscribe(
            ctx.agent, ctx.principal_id, req.device, req.filters, req.queue, max_bytes=ctx.limits.device_queue_bytes,
            applied=lambda sub: deferred.resolve({"success": True, "queue": sub.limit, "dropped": sub.dropped}),
        )
        return deferred


@final
class DeviceUnsubscribe(_DeviceSyscall):
    """``device.unsubscribe {device}`` → ``{success, dropped}``; queued data is discarded."""

    name = "device.unsubscribe"
    Request = DeviceRequest

    def execute(self, ctx: SyscallContext, req: DeviceRequest) -> dict[str, Any]:
        sub = _broker(ctx).runtime(req.device).unsubscribe(ctx.principal_id)
        return {"success": True, "dropped": sub.dropped if sub is not None else 0}


@dataclass(frozen=True, slots=True)
class RecvRequest:
    device: str
    max_items: int = 100
    max_bytes: int = 4096
    until: bytes | None = None
    timeout: float | None = None


@final
class DeviceRecv(_DeviceSyscall):
    """``device.recv {device, max_items?, max_bytes?, until?, timeout?}``: the caller's queued
    stream data, subscribing first if needed. Items streams answer ``{success, items, count,
    dropped}``; byte streams ``{success, data, count, dropped}``, ``data`` ending at the first
    ``until`` when given (or whatever arrived by the timeout). With ``timeout`` (seconds, at
    most 300) the read waits for data; ``dropped`` counts what a full queue lost."""

    name = "device.recv"
    Request = RecvRequest

    def execute(self, ctx: SyscallContext, req: RecvRequest) -> Deferred:
        if not 1 <= req.max_items <= 10_000 or not 1 <= req.max_bytes <= 1 << 20:
            raise InvalidArguments("max_items must be 1..10000 and max_bytes 1..1048576", details={"argument": "max_items"})
        if req.timeout is not None and not 0 <= req.timeout <= 300:
            raise InvalidArguments("timeout must be 0..300 seconds", details={"argument": "timeout"})
        deferred = Deferred()
        want = ReadWant(max_items=req.max_items, max_bytes=req.max_bytes, until=req.until)
        _broker(ctx).recv(ctx.agent, ctx.principal_id, req.device, want, req.timeout, deferred, max_bytes=ctx.limits.device_queue_bytes)
        return deferred


@final
class DeviceRestart(_DeviceSyscall):
    """``device.restart {device}`` → ``{success, killed_pid}``: SIGKILL the device's host (the
    supervisor restarts it with backoff). Operators only (the ``admin`` right)."""

    name = "device.restart"
    right = "admin"
    Request = DeviceRequest

    def execute(self, ctx: SyscallContext, req: DeviceRequest) -> dict[str, Any]:
        runtime = _broker(ctx).runtime(req.device)
        pid = runtime.kill_host()
        if pid is None:
            raise NotFound(f"device {req.device} has no running host (state {runtime.state})", details={"device": req.device})
        return {"success": True, "killed_pid": pid}


SYSCALLS: tuple[type[Syscall], ...] = (ListDevices, DeviceInfo, DeviceCall, DeviceSubscribe, DeviceUnsubscribe, DeviceRecv, DeviceRestart)
