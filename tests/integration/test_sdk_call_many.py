"""``CloveClient.call_many``: many syscalls in flight through the SDK, against a real kernel."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from clove.errors import KernelUnavailable, UnknownSyscall
from clove.testing.kernel import KernelProcess
from clove_sdk.client import CloveClient

pytestmark = pytest.mark.integration


def test_outcomes_come_back_in_order_with_refusals_in_place(kernel: KernelProcess) -> None:
    calls = [("noop", {"msg": f"m{i}"}) for i in range(40)]
    calls[7] = ("no.such.call", {})
    calls[23] = ("state.fetch", {"key": "missing-key"})
    with kernel.client() as client:
        outcomes = client.call_many(calls, window=8)
        assert len(outcomes) == 40
        assert isinstance(outcomes[7], UnknownSyscall)
        assert outcomes[23] == client.call("state.fetch", key="missing-key")  # the same answer as one call
        for i, outcome in enumerate(outcomes):
            if i not in (7, 23):
                assert outcome == f"m{i}"
        # The client goes on with plain calls after a pipelined batch.
        assert client.noop("after") == "after"


def test_a_generator_of_calls_is_consumed_window_by_window(kernel: KernelProcess) -> None:
    taken: list[int] = []

    def calls():  # type: ignore[no-untyped-def]
        for i in range(100):
            taken.append(i)
            yield ("noop", {"msg": str(i)})

    with kernel.client() as client:
        outcomes = client.call_many(calls(), window=4)
    assert outcomes == [str(i) for i in range(100)]
    assert taken == list(range(100))


def test_a_window_below_one_is_refused(kernel: KernelProcess) -> None:
    with kernel.client() as client, pytest.raises(ValueError, match="window"):
        client.call_many([("noop", {})], window=0)


def test_a_silent_kernel_fails_the_batch_within_the_timeout(tmp_path: Path) -> None:
    """A listener that never answers: the batch fails with the count of unanswered calls, and
    the client is usable again (its socket was reset)."""
    path = str(tmp_path / "silent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        client = CloveClient(path, timeout=0.5)
        with pytest.raises(KernelUnavailable) as raised:
            client.call_many([("noop", {}) for _ in range(5)], window=3)
        assert raised.value.details["unanswered"] == 3
        client.close()
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()

