"""The driver host takes further calls while a reply waits on a :class:`Later`, answers in call
order, bounds what waits, and never answers a result it does not know as done.

The real :class:`clove.drivers.host.Host` loop runs in a thread, on a real DEALER connected to a
ROUTER this test holds (the kernel's side), over ``ipc://`` in a temporary directory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from clove.drivers import Caller, DeviceBusy, Driver, Later, NoArgs, operation
from clove.drivers.host import Host
from clove.testing.kernel import poll_for


@dataclass(frozen=True, slots=True)
class CommittingConfig:
    pass


@dataclass(frozen=True, slots=True)
class PutArgs:
    n: int


class Committing(Driver):
    """``put`` is taken at once and settled by the test (as a group commit would); ``get`` is
    answered at once."""

    Config = CommittingConfig

    def __init__(self, config: CommittingConfig) -> None:
        super().__init__(config)
        self.taken: list[int] = []
        self.laters: dict[int, Later] = {}
        self.callers: list[Caller | None] = []

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    @operation(args=PutArgs)
    def put(self, args: PutArgs) -> Later:
        """Take n; settled later."""
        self.taken.append(args.n)
        later = self.laters[args.n] = Later()
        return later

    @operation()
    def get(self, args: NoArgs) -> list[int]:
        """What was taken."""
        return list(self.taken)

    @operation(caller=True)
    def whoami(self, args: NoArgs, caller: Caller | None) -> str | None:
        """The caller's agent name."""
        self.callers.append(caller)
        return caller.agent if caller is not None else None


class Kernel:
    """The kernel's end: a ROUTER; the host under test runs in a thread."""

    def __init__(self, tmp: Path, window: int) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.router: zmq.Socket[bytes] = self.ctx.socket(zmq.ROUTER)
        endpoint = f"ipc://{tmp / 'hosts.sock'}"
        self.router.bind(endpoint)
        dealer: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.ROUTING_ID, b"dev#1")
        dealer.connect(endpoint)
        self.driver = Committing(CommittingConfig())
        self.driver.open()
        self.host = Host({"device": "dev", "heartbeat": 0.05, "max_in_flight": window}, self.driver, dealer, self.ctx)
        self.dealer = dealer
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.beats: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.batches: list[int] = []  # frames per ZeroMQ message received
        # A ROUTER drops what it sends to a peer not connected yet: wait for the host's first beat.
        poll_for(self._connected, message="the host connected")

    def _run(self) -> None:
        self.code = self.host.run()

    def _connected(self) -> bool:
        self.pump()
        return bool(self.beats)

    def call(self, call_id: int, op: str, caller: bytes | None = None, **args: Any) -> None:
        frames = [b"dev#1", msgpack.packb({"t": "call", "id": call_id, "op": op, "args": args})]
        self.router.send_multipart(frames if caller is None else [*frames, caller])

    def pump(self, timeout_ms: int = 50) -> None:
        """Read what the host sent: heartbeats and replies."""
        while self.router.poll(timeout_ms):
            _, *frames = self.router.recv_multipart()
            self.batches.append(len(frames))
            for raw in frames:  # replies released together come in one multipart message
                message = msgpack.unpackb(raw)
                (self.beats if message["t"] == "hb" else self.replies).append(message)
            timeout_ms = 0

    def reply_ids(self) -> list[int]:
        self.pump()
        return [r["id"] for r in self.replies]

    def stop(self) -> None:
        if self.router.closed:
            return
        if self.thread.is_alive():
            self.router.send_multipart([b"dev#1", msgpack.packb({"t": "stop"})])
            self.thread.join(10)
        self.pump(200)
        self.dealer.close(linger=0)
        self.router.close(linger=0)
        self.ctx.term()


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(tmp_path, window=8)
    yield k
    k.stop()


def test_calls_are_taken_while_replies_wait_and_answered_in_call_order(kernel: Kernel) -> None:
    for n in range(1, 6):
        kernel.call(n, "put", n=n)
    poll_for(lambda: kernel.driver.taken == [1, 2, 3, 4, 5], message="every put taken before any is settled")
    assert kernel.reply_ids() == []
    kernel.driver.laters[3].resolve({"n": 3})
    kernel.driver.laters[1].resolve({"n": 1})
    poll_for(lambda: kernel.reply_ids() == [1], message="the first reply")
    kernel.driver.laters[2].resolve({"n": 2})
    poll_for(lambda: kernel.reply_ids() == [1, 2, 3], message="2, then 3 (settled earlier, held behind 2)")
    assert 2 in kernel.batches  # 2 and 3 were released together: one message for both
    kernel.call(6, "get")  # answered at once by the driver, but sent only after 4 and 5
    poll_for(lambda: kernel.driver.counters["calls"] == 6, message="get taken")
    assert kernel.reply_ids() == [1, 2, 3]
    kernel.driver.laters[5].resolve({"n": 5})
    kernel.driver.laters[4].resolve({"n": 4})
    poll_for(lambda: kernel.reply_ids() == [1, 2, 3, 4, 5, 6], message="4, 5, then the get")
    assert [r.get("result") for r in kernel.replies] == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}, {"n": 5}, [1, 2, 3, 4, 5]]


def test_a_rejected_result_is_an_error_reply_and_a_driver_bug_is_device_broken(kernel: Kernel) -> None:
    for n in (1, 2, 3):
        kernel.call(n, "put", n=n)
    poll_for(lambda: len(kernel.driver.laters) == 3, message="three puts")
    kernel.driver.laters[1].reject(DeviceBusy("the commit failed"))
    kernel.driver.laters[2].reject(ValueError("a bug"))
    kernel.driver.laters[3].resolve("done")
    poll_for(lambda: len(kernel.reply_ids()) == 3, message="three replies")
    first, second, third = kernel.replies
    assert first["error"]["code"] == "device.busy"
    assert second["error"]["code"] == "device.broken" and "ValueError: a bug" in second["error"]["message"]
    assert third["result"] == "done"
    assert kernel.driver.counters["errors"] == 2


def test_past_the_window_the_host_stops_taking_calls_until_one_is_answered(kernel: Kernel) -> None:
    for n in range(1, 21):  # the window is 8
        kernel.call(n, "put", n=n)
    poll_for(lambda: len(kernel.driver.taken) == 8, message="the window filled")
    beats = len(kernel.beats)
    poll_for(lambda: kernel.reply_ids() == [] and len(kernel.beats) >= beats + 3, message="heartbeats while paused")
    assert len(kernel.driver.taken) == 8  # three heartbeats later: alive, and still not reading calls
    assert kernel.beats[-1]["counters"]["calls"] == 8
    kernel.driver.laters[1].resolve(1)
    poll_for(lambda: len(kernel.driver.taken) == 9, message="one more taken once one is answered")
    for n in range(2, 21):
        poll_for(lambda n=n: n in kernel.driver.laters, message=f"put {n} taken")  # type: ignore[misc]
        kernel.driver.laters[n].resolve(n)
    poll_for(lambda: kernel.reply_ids() == list(range(1, 21)), message="all twenty, in order")


def test_results_unsettled_when_the_host_stops_are_answered_as_failed(kernel: Kernel) -> None:
    kernel.call(1, "put", n=1)
    kernel.call(2, "put", n=2)
    poll_for(lambda: len(kernel.driver.laters) == 2, message="two puts")
    kernel.driver.laters[1].resolve("ok")
    poll_for(lambda: kernel.reply_ids() == [1], message="the first")
    kernel.stop()
    assert kernel.code == 0
    assert [r["id"] for r in kernel.replies] == [1, 2]
    assert kernel.replies[1]["error"]["code"] == "device.broken"
    assert "outcome is unknown" in kernel.replies[1]["error"]["message"]


def test_in_process_call_waits_for_the_later() -> None:
    driver = Committing(CommittingConfig())
    driver.open()
    try:
        result: list[Any] = []
        caller = threading.Thread(target=lambda: result.append(driver.call("put", {"n": 7})), daemon=True)
        caller.start()
        poll_for(lambda: 7 in driver.laters, message="put taken")
        assert result == []
        driver.laters[7].resolve({"n": 7})
        caller.join(5)
        assert result == [{"n": 7}]
        driver.laters.clear()
        failing = threading.Thread(target=lambda: result.append(_error_of(lambda: driver.call("put", {"n": 8}))), daemon=True)
        failing.start()
        poll_for(lambda: 8 in driver.laters, message="put taken")
        driver.laters[8].reject(ValueError("disk"))
        failing.join(5)
        assert result[-1] == "device.broken"
    finally:
        driver.close()


def _error_of(fn: Any) -> str:
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - the test reads the code
        return str(getattr(err, "code", type(err).__name__))
    return "no error"


def test_the_caller_frame_is_decoded_once_per_caller(kernel: Kernel) -> None:
    alice = msgpack.packb({"agent": "alice", "agent_id": 1, "operator": False, "grant": {"ops": ["whoami"]}})
    bob = msgpack.packb({"agent": "bob", "agent_id": 2, "operator": False, "grant": None})
    for n, who in enumerate((alice, bob, alice, alice)):
        kernel.call(n, "whoami", caller=who)
    kernel.call(9, "whoami")  # no caller frame: an in-message caller (or none) still works
    poll_for(lambda: len(kernel.reply_ids()) == 5, message="five replies")
    assert [r["result"] for r in kernel.replies] == ["alice", "bob", "alice", "alice", None]
    first, second, third, fourth, _ = kernel.driver.callers
    assert first is third is fourth and first is not second  # one decoded Caller per distinct frame
    assert first is not None and first.grant == {"ops": ["whoami"]}
