"""python-can's ``clove`` interface (clove_sdk.can_interface.CloveBus) against a fake client.

The fake stands in for the kernel: a device whose ``recv`` really blocks until frames are pushed
or its timeout passes, and which fails the test if two threads use the client at once (a ZeroMQ
socket must not be shared that way). The real-kernel integration test lives elsewhere.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import can
import pytest

import clove_sdk.can_interface as can_interface
from clove.errors import (
    DeviceBroken,
    DeviceUnavailable,
    InvalidArguments,
    KernelUnavailable,
    PermissionDenied,
)
from clove_sdk.can_interface import CloveBus


def frame(ident: int, data: bytes = b"", **fields: Any) -> dict[str, Any]:
    item = {
        "id": ident,
        "data": data,
        "ext": False,
        "rtr": False,
        "err": False,
        "fd": False,
        "brs": False,
        "dlc": len(data),
        "ts": 1000.0 + ident,
    }
    item.update(fields)
    return item


class FakeDevice:
    """Records every call; ``fail[name]`` makes that method raise; ``push`` queues frames."""

    def __init__(self, client: FakeClient, name: str) -> None:
        self.client = client
        self.name = name
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, Exception] = {}
        self.state = "active"
        self._frames: deque[dict[str, Any]] = deque()
        self._arrived = threading.Condition()

    def push(self, *items: dict[str, Any]) -> None:
        with self._arrived:
            self._frames.extend(items)
            self._arrived.notify_all()

    def _enter(self, method: str, args: dict[str, Any]) -> None:
        self.client.enter()
        self.calls.append((method, args))
        if method in self.fail:
            self.client.leave()
            raise self.fail[method]

    def call(self, op: str, /, reply_timeout: float | None = None, **args: Any) -> Any:
        self._enter(f"call:{op}", {"reply_timeout": reply_timeout, **args})
        try:
            return {"sent": True} if op == "send" else {"state": self.state, "frames_out": 0}
        finally:
            self.client.leave()

    def subscribe(self, filters: list[Any] | None = None, queue: int | None = None) -> dict[str, Any]:
        self._enter("subscribe", {"filters": filters})
        self.client.leave()
        return {"success": True, "queue": 1024, "dropped": 0}

    def unsubscribe(self) -> dict[str, Any]:
        self._enter("unsubscribe", {})
        self.client.leave()
        return {"success": True, "dropped": 0}

    def recv(self, max_items: int = 100, timeout: float | None = None) -> list[dict[str, Any]]:
        self._enter("recv", {"max_items": max_items, "timeout": timeout})
        try:
            with self._arrived:
                if timeout is not None:
                    self._arrived.wait_for(lambda: bool(self._frames), timeout)
                out: list[dict[str, Any]] = []
                while self._frames and len(out) < max_items:
                    out.append(self._frames.popleft())
                return out
        finally:
            self.client.leave()

    def ops(self, method: str) -> list[dict[str, Any]]:
        return [args for name, args in self.calls if name == method]


class FakeClient:
    """``device(name)`` like CloveClient; counts overlapping use as a test failure."""

    def __init__(self, socket_path: str | None = None, *, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.devices: dict[str, FakeDevice] = {}
        self.closed = False
        self.overlaps = 0
        self._busy = 0
        self._guard = threading.Lock()

    def device(self, name: str) -> FakeDevice:
        return self.devices.setdefault(name, FakeDevice(self, name))

    def enter(self) -> None:
        assert not self.closed, "used after close"
        with self._guard:
            self._busy += 1
            if self._busy > 1:
                self.overlaps += 1

    def leave(self) -> None:
        with self._guard:
            self._busy -= 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def bus(client: FakeClient) -> Iterator[CloveBus]:
    with CloveBus("motor_bus", client=client) as b:
        yield b
    assert client.overlaps == 0


def test_can_bus_resolves_the_clove_interface(client: FakeClient) -> None:
    with can.Bus(interface="clove", channel="motor_bus", client=client) as b:
        assert isinstance(b, CloveBus)
        assert b.channel_info == "Clove device 'motor_bus'"
    assert client.devices["motor_bus"].ops("subscribe") == [{"filters": []}]


def test_send_forwards_every_field(bus: CloveBus, client: FakeClient) -> None:
    dev = client.devices["motor_bus"]
    bus.send(can.Message(arbitration_id=0x101, data=b"\x00\x10", is_extended_id=False))
    bus.send(
        can.Message(arbitration_id=0x18FF0001, data=bytes(20), is_fd=True, bitrate_switch=True), timeout=5.0
    )
    bus.send(
        can.Message(arbitration_id=0x7DF, is_extended_id=False, is_remote_frame=True, dlc=8), timeout=0.01
    )
    std, fd, rtr = dev.ops("call:send")
    assert std == {
        "reply_timeout": None,
        "id": 0x101,
        "data": b"\x00\x10",
        "ext": False,
        "rtr": False,
        "fd": False,
        "brs": False,
    }
    assert (fd["ext"], fd["fd"], fd["brs"], fd["data"], fd["reply_timeout"]) == (
        True,
        True,
        True,
        bytes(20),
        5.0,
    )
    assert (rtr["rtr"], rtr["dlc"], rtr["data"]) == (True, 8, b"")
    assert rtr["reply_timeout"] == CloveBus.MIN_REPLY_TIMEOUT  # never tighter than IPC allows
    assert isinstance(std["data"], bytes)  # msgpack-able, not a bytearray


def test_refused_send_keeps_the_kernel_message(bus: CloveBus, client: FakeClient) -> None:
    denied = PermissionDenied("CAN id 0x123 is outside this agent's send_ids [0x100-0x10F]")
    client.devices["motor_bus"].fail["call:send"] = denied
    with pytest.raises(can.CanOperationError) as caught:
        bus.send(can.Message(arbitration_id=0x123, is_extended_id=False))
    assert str(caught.value) == denied.message
    assert caught.value.__cause__ is denied


@pytest.mark.parametrize(
    "err", [DeviceUnavailable("host restarting"), DeviceBroken("bus off"), KernelUnavailable("no reply")]
)
def test_outages_on_send_are_operation_errors(bus: CloveBus, client: FakeClient, err: Exception) -> None:
    client.devices["motor_bus"].fail["call:send"] = err
    with pytest.raises(can.CanOperationError) as caught:
        bus.send(can.Message(arbitration_id=0x1))
    assert caught.value.__cause__ is err


def test_error_frames_cannot_be_sent(bus: CloveBus, client: FakeClient) -> None:
    with pytest.raises(can.CanOperationError, match="error frames"):
        bus.send(can.Message(arbitration_id=0x4, is_error_frame=True))
    assert client.devices["motor_bus"].ops("call:send") == []


def test_recv_builds_messages_from_frames(bus: CloveBus, client: FakeClient) -> None:
    dev = client.devices["motor_bus"]
    dev.push(
        frame(0x101, b"\x01\x02"),
        frame(0x18FEF100, bytes(12), ext=True, fd=True, brs=True),
        frame(0x7DF, rtr=True, dlc=8),
        frame(0x20000004, bytes(8), err=True, ext=True),
    )
    std, fd, rtr, err = (bus.recv(1.0) for _ in range(4))
    assert std is not None
    assert fd is not None
    assert rtr is not None
    assert err is not None
    assert (std.arbitration_id, bytes(std.data), std.is_extended_id, std.timestamp) == (
        0x101,
        b"\x01\x02",
        False,
        1257.0,
    )
    assert (std.channel, std.is_rx, std.dlc) == ("motor_bus", True, 2)
    assert (fd.is_extended_id, fd.is_fd, fd.bitrate_switch, len(fd.data)) == (True, True, True, 12)
    assert (rtr.is_remote_frame, rtr.dlc) == (True, 8)
    assert err.is_error_frame
    # One kernel call fetched the whole batch.
    assert dev.ops("recv") == [{"max_items": CloveBus.BATCH, "timeout": CloveBus.SHARED_RECV_SLICE}]


def test_recv_zero_asks_without_waiting(bus: CloveBus, client: FakeClient) -> None:
    started = time.monotonic()
    for _ in range(20):
        assert bus.recv(0) is None
    assert time.monotonic() - started < 0.5  # one receive slice each would take 1 s
    assert client.devices["motor_bus"].ops("recv") == [{"max_items": CloveBus.BATCH, "timeout": None}] * 20


def test_recv_timeout_waits_in_slices(bus: CloveBus, client: FakeClient) -> None:
    started = time.monotonic()
    assert bus.recv(0.3) is None
    took = time.monotonic() - started
    assert 0.3 <= took < 2.0
    waits = [args["timeout"] for args in client.devices["motor_bus"].ops("recv")]
    assert len(waits) >= 5
    assert all(w is not None and 0 < w <= CloveBus.SHARED_RECV_SLICE for w in waits)


def test_recv_waits_for_a_frame_that_arrives_later(bus: CloveBus, client: FakeClient) -> None:
    threading.Timer(0.15, client.devices["motor_bus"].push, args=(frame(0x42, b"late"),)).start()
    msg = bus.recv(timeout=None)  # python-can loops over slices until the frame comes
    assert msg is not None
    assert bytes(msg.data) == b"late"


def test_recv_outage_is_an_operation_error(bus: CloveBus, client: FakeClient) -> None:
    err = DeviceBroken("the driver host died")
    client.devices["motor_bus"].fail["recv"] = err
    with pytest.raises(can.CanOperationError, match="driver host died") as caught:
        bus.recv(0.1)
    assert caught.value.__cause__ is err


def test_malformed_frames_are_operation_errors(bus: CloveBus, client: FakeClient) -> None:
    client.devices["motor_bus"].push({"data": b"no id"})
    with pytest.raises(can.CanOperationError, match="malformed frame"):
        bus.recv(0.5)


def test_filters_are_forwarded_and_applied_in_software_too(client: FakeClient) -> None:
    filters = [{"can_id": 0x180, "can_mask": 0x7F0, "extended": False}, {"can_id": 0x7DF, "can_mask": 0x7FF}]
    with CloveBus("motor_bus", can_filters=filters, client=client) as b:  # type: ignore[arg-type]
        dev = client.devices["motor_bus"]
        assert dev.ops("subscribe") == [{"filters": filters}]
        # A frame the kernel let through under older filters is still dropped by python-can.
        dev.push(frame(0x200), frame(0x181))
        msg = b.recv(1.0)
        assert msg is not None
        assert msg.arbitration_id == 0x181
        b.set_filters([{"can_id": 0x300, "can_mask": 0x700}])
        assert dev.ops("subscribe")[-1] == {"filters": [{"can_id": 0x300, "can_mask": 0x700}]}
        b.set_filters(None)
        assert dev.ops("subscribe")[-1] == {"filters": []}


def test_filters_the_kernel_refuses_are_value_errors(client: FakeClient) -> None:
    client.device("motor_bus").fail["subscribe"] = InvalidArguments("CAN filter 0: can_mask is required")
    with pytest.raises(ValueError, match="can_mask is required"):
        CloveBus("motor_bus", client=client, can_filters=[{"can_id": 1, "can_mask": 1}])
    assert not client.closed  # not ours to close


def test_unreachable_device_fails_construction_then_operation(client: FakeClient) -> None:
    dev = client.device("motor_bus")
    dev.fail["subscribe"] = DeviceUnavailable("no device 'motor_bus'")
    with pytest.raises(can.CanInitializationError, match="no device"):
        CloveBus("motor_bus", client=client)
    del dev.fail["subscribe"]
    with CloveBus("motor_bus", client=client) as b:
        dev.fail["subscribe"] = DeviceUnavailable("host restarting")
        with pytest.raises(can.CanOperationError, match="host restarting"):
            b.set_filters([{"can_id": 1, "can_mask": 1}])


def test_send_only_grant_still_sends(client: FakeClient) -> None:
    denied = PermissionDenied("operation 'recv' is not granted on device 'motor_bus'")
    client.device("motor_bus").fail["subscribe"] = denied
    with CloveBus("motor_bus", client=client) as b:
        b.send(can.Message(arbitration_id=0x100))
        with pytest.raises(can.CanOperationError, match="not granted") as caught:
            b.recv(0.1)
        assert caught.value.__cause__ is denied
    assert client.devices["motor_bus"].ops("unsubscribe") == []  # never subscribed


def test_receive_false_never_subscribes(client: FakeClient) -> None:
    with CloveBus("motor_bus", client=client, receive=False, can_filters=[{"can_id": 1, "can_mask": 1}]) as b:
        b.send(can.Message(arbitration_id=0x100))
        with pytest.raises(can.CanOperationError, match="receive=False"):
            b.recv(0)
    dev = client.devices["motor_bus"]
    assert dev.ops("subscribe") == []
    assert dev.ops("recv") == []
    assert dev.ops("unsubscribe") == []


def test_state_comes_from_the_driver(bus: CloveBus, client: FakeClient) -> None:
    dev = client.devices["motor_bus"]
    for name, state in [
        ("active", can.BusState.ACTIVE),
        ("passive", can.BusState.PASSIVE),
        ("off", can.BusState.ERROR),
        ("unknown", can.BusState.ACTIVE),
    ]:
        dev.state = name
        assert bus.state == state
    assert len(dev.ops("call:status")) == 4
    with pytest.raises(NotImplementedError):
        bus.state = can.BusState.PASSIVE
    dev.fail["call:status"] = DeviceUnavailable("host down")
    with pytest.raises(can.CanOperationError, match="host down"):
        _ = bus.state


def test_shutdown_unsubscribes_once_and_keeps_a_given_client(client: FakeClient) -> None:
    b = CloveBus("motor_bus", client=client)
    b.shutdown()
    b.shutdown()
    dev = client.devices["motor_bus"]
    assert len(dev.ops("unsubscribe")) == 1
    assert not client.closed
    with pytest.raises(can.CanOperationError, match="shut down"):
        b.send(can.Message(arbitration_id=1))
    with pytest.raises(can.CanOperationError, match="shut down"):
        b.recv(0)


def test_unsubscribe_failure_does_not_break_shutdown(client: FakeClient) -> None:
    b = CloveBus("motor_bus", client=client)
    client.devices["motor_bus"].fail["unsubscribe"] = KernelUnavailable("kernel gone")
    b.shutdown()  # best effort: nothing raised


def test_notifier_thread_and_sends_never_overlap(bus: CloveBus, client: FakeClient) -> None:
    # The usual python-can program: a Notifier receives in a thread while the main thread sends.
    reader = can.BufferedReader()
    notifier = can.Notifier(bus, [reader], timeout=1.0)
    try:
        dev = client.devices["motor_bus"]
        worst = 0.0
        for i in range(20):
            started = time.monotonic()
            bus.send(can.Message(arbitration_id=0x100 + i, is_extended_id=False))
            worst = max(worst, time.monotonic() - started)
            dev.push(frame(0x200 + i))
        got: list[int] = []
        deadline = time.monotonic() + 3.0
        while len(got) < 20 and time.monotonic() < deadline:
            msg = reader.get_message(0.1)
            if msg is not None:
                got.append(msg.arbitration_id)
        assert got == [0x200 + i for i in range(20)]
        assert worst < 0.5  # a send waits at most one receive slice, not the 1 s recv timeout
    finally:
        notifier.stop()
    assert client.overlaps == 0


def test_own_clients_send_and_receive_separately(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeClient] = []

    def factory(socket_path: str | None = None, *, timeout: float = 30.0) -> FakeClient:
        made.append(FakeClient(socket_path, timeout=timeout))
        return made[-1]

    monkeypatch.setattr(can_interface, "CloveClient", factory)
    b = can.Bus(
        interface="clove", channel="motor_bus", socket_path="/run/clove/test.sock", kernel_timeout=4.0
    )
    rx, tx = made
    assert (rx.socket_path, tx.socket_path, rx.timeout) == (
        "/run/clove/test.sock",
        "/run/clove/test.sock",
        4.0,
    )
    b.send(can.Message(arbitration_id=1))
    rx.devices["motor_bus"].push(frame(0x5))
    msg = b.recv(1.0)
    assert msg is not None
    assert msg.arbitration_id == 0x5
    assert rx.devices["motor_bus"].ops("recv")[0]["timeout"] == CloveBus.OWN_RECV_SLICE
    assert [m for m, _ in rx.devices["motor_bus"].calls] == ["subscribe", "recv"]
    assert [m for m, _ in tx.devices["motor_bus"].calls] == ["call:send"]
    b.shutdown()
    assert rx.closed
    assert tx.closed
    assert rx.devices["motor_bus"].ops("unsubscribe") == [{}]


def test_unreachable_kernel_fails_construction_quickly(tmp_path: Any) -> None:
    # A real CloveClient on a socket nobody serves: construction fails at once, naming the path.
    started = time.monotonic()
    with pytest.raises(can.CanInitializationError, match="no kernel at .*none.sock"):
        can.Bus(
            interface="clove",
            channel="motor_bus",
            socket_path=str(tmp_path / "none.sock"),
            kernel_timeout=0.2,
        )
    assert time.monotonic() - started < 5.0


def test_channel_must_be_a_device_name(client: FakeClient) -> None:
    with pytest.raises(ValueError, match="channel must name a Clove device"):
        CloveBus(0, client=client)
