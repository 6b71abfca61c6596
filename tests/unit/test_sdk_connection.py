"""CloveClient's connection, against a stand-in kernel (a ROUTER on a private ipc path): the
original SDK's ``connect`` and ``disconnect``, use without a ``with`` block, and failing at once
when no kernel can be there (a missing socket file, a stale one nobody listens on)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from clove import wire
from clove.errors import KernelUnavailable
from clove_sdk import client as client_module
from clove_sdk.client import CloveClient

# Far below the 30 s the client waits for a reply: proof that nobody waited for one.
AT_ONCE_S = 10.0


class FakeKernel:
    """Answers ``hello`` and ``noop`` like a kernel; ``silent`` reads requests and never answers."""

    def __init__(self, path: Path, *, silent: bool = False) -> None:
        self.path = path
        self.silent = silent
        self.calls: list[str] = []
        self._stop = threading.Event()
        self._sock = zmq.Context.instance().socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(f"ipc://{path}")
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(50):
                continue
            peer, *frames = self._sock.recv_multipart()
            request = wire.decode_request(frames)
            self.calls.append(request.call)
            if self.silent:
                continue
            result = {"success": True, "role": "operator"} if request.call == "hello" else request.body.get("msg", "")
            self._sock.send_multipart([peer, *wire.ok_reply(request.id, result)])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close(linger=0)


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[FakeKernel]:
    fake = FakeKernel(tmp_path / "k.sock")
    yield fake
    fake.stop()


def _stale_socket_file(path: Path) -> None:
    """A socket file with no listener, as a kernel killed with SIGKILL leaves behind."""
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()


@pytest.mark.parametrize("kind", ["missing", "stale"])
def test_no_kernel_fails_at_once_naming_the_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "k.sock"
    if kind == "stale":
        _stale_socket_file(path)
    c = CloveClient(str(path))  # the default 30 s reply timeout
    started = time.monotonic()
    with pytest.raises(KernelUnavailable) as err:
        c.noop("anyone?")
    assert time.monotonic() - started < AT_ONCE_S
    assert str(path) in err.value.message
    assert err.value.details["path"] == str(path)
    assert ("does not exist" if kind == "missing" else "nothing is listening") in err.value.message
    c.close()


def test_a_kernel_that_is_there_but_silent_still_gets_the_timeout(tmp_path: Path) -> None:
    fake = FakeKernel(tmp_path / "k.sock", silent=True)
    try:
        c = CloveClient(str(fake.path), timeout=0.5)
        started = time.monotonic()
        with pytest.raises(KernelUnavailable, match="no reply"):
            c.noop("slow?")
        assert time.monotonic() - started >= 0.45
        c.close()
    finally:
        fake.stop()


def test_connect_says_whether_a_kernel_answers_and_never_raises_for_an_absent_one(tmp_path: Path, kernel: FakeKernel) -> None:
    for path in (tmp_path / "none.sock", tmp_path / "stale.sock"):
        if path.name == "stale.sock":
            _stale_socket_file(path)
        absent = CloveClient(str(path))
        started = time.monotonic()
        assert absent.connect() is False
        assert time.monotonic() - started < AT_ONCE_S
        with pytest.raises(KernelUnavailable, match=str(path)):
            absent.noop("still nobody?")
        absent.disconnect()
    present = CloveClient(str(kernel.path))
    assert present.connect() is True
    assert kernel.calls[-1] == "hello"
    present.disconnect()


def test_a_client_works_without_a_with_block_and_reconnects_after_disconnect(kernel: FakeKernel) -> None:
    c = CloveClient(str(kernel.path), timeout=10)
    assert c.connect()
    assert c.noop("one") == "one"
    c.disconnect()
    with pytest.raises(KernelUnavailable) as err:
        c.noop("two")
    assert "connect()" in err.value.message and str(kernel.path) in err.value.message
    c.disconnect()  # a second disconnect is harmless
    assert c.connect()
    assert c.noop("three") == "three"
    c.disconnect()
    with c:  # a closed client used in a block again
        assert c.noop("four") == "four"


def test_the_socket_file_is_probed_once_per_connection(kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[str] = []
    real = client_module.why_unreachable

    def counting(endpoint: str) -> str | None:
        probes.append(endpoint)
        return real(endpoint)

    monkeypatch.setattr(client_module, "why_unreachable", counting)
    with CloveClient(str(kernel.path), timeout=10) as c:
        for i in range(20):
            assert c.noop(str(i)) == str(i)
        assert len(probes) == 1
        c.disconnect()
        assert c.connect()
        assert c.noop("again") == "again"
        assert len(probes) == 2
