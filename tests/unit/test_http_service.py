"""The HTTP service without a network: request checks, policy, the worker pool and the loop side,
with a fake transport and the real loop over the pool's wake-up pipe."""

from __future__ import annotations

import base64
import json
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clove.errors import (
    CloveError,
    InternalError,
    InvalidArguments,
    OperationTimeout,
    PermissionDenied,
    QuotaExceeded,
    UpstreamError,
)
from clove.httpclient import HttpRequest, HttpResponse
from clove.kernel.core.asyncjobs import AsyncResults
from clove.kernel.core.channels import Caller
from clove.kernel.core.deferred import Deferred
from clove.kernel.core.loop import Loop
from clove.kernel.core.workers import WorkerPool
from clove.kernel.services import http as http_service
from clove.kernel.services.http import HttpService
from clove.kernel.syscalls.base import SyscallContext
from clove.kernel.syscalls.http import Http, HttpCall, build_request, check_headers, check_url
from clove.policy import for_level

# ---- request checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/x?y=1", "https://example.com", "HTTP://Example.COM/a%20b", "http://[::1]:9/", "http://a.b.c/#frag"],
)
def test_good_urls_pass(url):
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("file:///etc/passwd", "only http"),
        ("ftp://example.com/", "only http"),
        ("gopher://example.com/", "only http"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://evil.com@127.0.0.1/", "credentials"),
        ("http://a.com\\@b.com/", "backslash"),
        ("http://exa mple.com/", "printable ASCII"),
        ("http://bücher.de/", "printable ASCII"),
        ("http://example.com/\r\nX: y", "printable ASCII"),
        ("http:///path", "no host"),
        ("http://example.com:99999/", "parse"),
        ("example.com/path", "only http"),
        ("", "1-8192"),
        ("http://x/" + "a" * 9000, "1-8192"),
    ],
)
def test_bad_urls_are_invalid_arguments(url, why):
    with pytest.raises(InvalidArguments, match=why):
        check_url(url)


def test_headers_are_checked_and_kernel_owned_ones_refused():
    assert check_headers({"X-Token": "abc", "Accept": "*/*"}) == (("X-Token", "abc"), ("Accept", "*/*"))
    assert check_headers(None) == ()
    for name in ("Host", "content-length", "Transfer-Encoding", "Connection", "Proxy-Authorization"):
        with pytest.raises(InvalidArguments, match="set by the kernel"):
            check_headers({name: "x"})
    with pytest.raises(InvalidArguments, match="line break"):
        check_headers({"X-A": "1\r\nHost: evil"})
    with pytest.raises(InvalidArguments, match="bad header name"):
        check_headers({"X A": "1"})
    with pytest.raises(InvalidArguments, match="Latin-1"):
        check_headers({"X-A": "snow ☃"})
    with pytest.raises(InvalidArguments, match="at most"):
        check_headers({f"X-{i}": "v" for i in range(101)})


def test_build_request_normalises_and_bounds():
    r = build_request(HttpCall(url="http://h/", method="post", body="héllo", timeout=2), max_body=100)
    assert (r.method, r.body, r.timeout, r.max_response_bytes) == ("POST", "héllo".encode(), 2.0, 10 * 1024 * 1024)
    assert build_request(HttpCall(url="http://h/", body=b"\x00\xff"), max_body=2).body == b"\x00\xff"
    with pytest.raises(QuotaExceeded) as big:
        build_request(HttpCall(url="http://h/", body=b"x" * 101), max_body=100)
    assert big.value.details == {"max_bytes": 100, "size": 101}
    with pytest.raises(InvalidArguments, match="unknown method"):
        build_request(HttpCall(url="http://h/", method="TRACE"), max_body=100)
    for timeout in (0, -1, 301, float("inf"), float("nan")):
        with pytest.raises(InvalidArguments, match="timeout"):
            build_request(HttpCall(url="http://h/", timeout=timeout), max_body=100)
    with pytest.raises(InvalidArguments, match="request_id"):
        build_request(HttpCall(url="http://h/", request_id="x" * 129), max_body=100)


def test_reply_body_is_text_or_base64_explicitly():
    text = HttpResponse(200, {"a": "b"}, "héllo".encode()).to_reply()
    assert text == {"success": True, "status_code": 200, "headers": {"a": "b"}, "body": "héllo", "encoding": "utf-8"}
    raw = HttpResponse(404, {}, b"\xff\x00\x80").to_reply()
    assert raw["encoding"] == "base64" and base64.b64decode(raw["body"]) == b"\xff\x00\x80" and raw["status_code"] == 404


# ---- fakes -----------------------------------------------------------------------------------------


class FakeTransport:
    """Answers from a function of the request; ``gate`` holds every send until set."""

    def __init__(self, answer: Callable[[HttpRequest], HttpResponse] | None = None) -> None:
        self.answer = answer or (lambda req: HttpResponse(200, {"content-type": "text/plain"}, f"{req.method} {req.url}".encode()))
        self.gate = threading.Event()
        self.gate.set()
        self.sent: list[HttpRequest] = []
        self.threads: set[str] = set()
        self.closed = False
        self._lock = threading.Lock()

    def send(self, request: HttpRequest, deadline: float) -> HttpResponse:
        with self._lock:
            self.sent.append(request)
            self.threads.add(threading.current_thread().name)
        self.gate.wait(10)
        return self.answer(request)

    def close(self) -> None:
        self.closed = True


class FakeKernel:
    def __init__(self, service: HttpService) -> None:
        self.http = service
        self.async_results = AsyncResults()


@pytest.fixture
def loop() -> Loop:
    return Loop(tick=0.01)


@pytest.fixture
def transport() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
def records() -> list[tuple[str, str, int | None, int, dict[str, Any]]]:
    return []


@pytest.fixture
def service(loop, transport, records) -> Iterator[HttpService]:
    svc = HttpService(loop=loop, transport=transport, record=lambda *r: records.append(r), workers=4, max_in_flight=3, max_pending=5)
    yield svc
    transport.gate.set()
    svc.close()


def run_until(loop: Loop, condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not reached"
        loop.run_once()
    return value


def outcome(deferred: Deferred) -> list[tuple[Any, CloveError | None]]:
    got: list[tuple[Any, CloveError | None]] = []
    deferred.bind(lambda value, err: got.append((value, err)))
    return got


def request(url: str = "http://h/", timeout: float = 5.0) -> HttpRequest:
    return HttpRequest("GET", url, timeout=timeout)


# ---- the worker pool ---------------------------------------------------------------------------


def test_pool_runs_jobs_on_threads_and_wakes_the_pipe():
    pool = WorkerPool(lambda x: x * 2 if x != 3 else 1 / 0, max_workers=2)
    try:
        for key in range(1, 5):
            pool.submit(key, key)
        assert pool.threads == 2  # grown on demand, never past max_workers
        done: dict[int, tuple[Any, bool]] = {}
        deadline = time.monotonic() + 5
        while len(done) < 4 and time.monotonic() < deadline:
            readable, _, _ = select.select([pool.fileno()], [], [], 1)
            if readable:
                done.update({key: (value, failed) for key, value, failed in pool.completed()})
        assert done[1] == (2, False) and done[4] == (8, False)
        assert done[3][1] is True and isinstance(done[3][0], ZeroDivisionError)
        assert pool.busy == 0
        # A worker queues its outcome before writing its wake-up byte (the other order could
        # lose a wake-up), so a byte may trail the last outcome: a spurious wake finds nothing.
        assert pool.completed() == []
        assert select.select([pool.fileno()], [], [], 0)[0] == []  # drained
    finally:
        assert pool.close() is True
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(pool.fileno())  # every thread ended, so the pipe is closed
    with pytest.raises(RuntimeError):
        pool.submit(9, 9)


def test_pool_close_does_not_wait_for_a_stuck_job():
    release = threading.Event()
    pool = WorkerPool(lambda _: release.wait(30), max_workers=1)
    pool.submit(1, None)
    started = time.monotonic()
    assert pool.close(wait=0.2) is False
    assert time.monotonic() - started < 1.0
    os.fstat(pool.fileno())  # still open: the stuck thread may yet write to it
    release.set()


# ---- the service on the loop ---------------------------------------------------------------------


def test_requests_resolve_on_the_loop_thread_and_are_journaled(service, loop, transport, records):
    got = outcome(service.submit(7, 7, request("http://h/a")))
    assert got == []  # nothing settles before the loop runs
    run_until(loop, lambda: got)
    value, err = got[0]
    assert err is None and value["status_code"] == 200 and value["body"] == "GET http://h/a" and value["encoding"] == "utf-8"
    assert transport.threads and threading.current_thread().name not in transport.threads
    event, code, agent_id, duration_us, details = records[-1]
    assert (event, code, agent_id) == ("http.response", "ok", 7) and duration_us >= 0
    assert details["status_code"] == 200 and details["bytes"] == len(b"GET http://h/a") and details["method"] == "GET"
    assert service.in_flight(7) == 0


def test_transport_errors_reject_with_their_code(loop, records):
    def answer(req: HttpRequest) -> HttpResponse:
        if "refused" in req.url:
            raise UpstreamError("could not connect")
        raise KeyError("bug")

    svc = HttpService(loop=loop, transport=FakeTransport(answer), record=lambda *r: records.append(r))
    try:
        refused, bug = outcome(svc.submit(1, None, request("http://refused/"))), outcome(svc.submit(1, None, request("http://bug/")))
        run_until(loop, lambda: refused and bug)
        assert isinstance(refused[0][1], UpstreamError) and refused[0][0] is None
        assert isinstance(bug[0][1], InternalError) and "bug" not in bug[0][1].message  # no internals to callers
        assert sorted(r[1] for r in records) == ["internal", "upstream.failed"]
    finally:
        svc.close()


def test_per_caller_in_flight_limit(service, loop, transport):
    transport.gate.clear()
    waits = [outcome(service.submit(1, 1, request())) for _ in range(3)]
    with pytest.raises(QuotaExceeded) as full:
        service.submit(1, 1, request())
    assert full.value.details == {"in_flight": 3, "max_in_flight": 3}
    outcome(service.submit(2, 2, request()))  # another caller is not affected
    transport.gate.set()
    run_until(loop, lambda: all(waits) and service.in_flight(1) == 0)
    service.submit(1, 1, request())  # room again


def test_kernel_wide_pending_limit(service, transport):
    transport.gate.clear()
    for caller in range(5):
        service.submit(caller, caller, request())
    with pytest.raises(QuotaExceeded, match="kernel has 5"):
        service.submit(99, 99, request())


def test_replies_for_a_caller_that_went_away_are_dropped(service, loop, transport, records):
    transport.gate.clear()
    gone, stays = outcome(service.submit(5, 5, request())), outcome(service.submit(6, 6, request()))
    assert service.drop(5) == 1
    assert service.in_flight(5) == 1  # its worker is still busy, and still counts
    transport.gate.set()
    run_until(loop, lambda: stays and service.in_flight(5) == 0)
    assert gone == []
    assert [r[0] for r in records if r[2] == 5] == ["http.dropped"]
    assert service.stats["dropped"] == 1


def test_the_loop_answers_timeout_when_a_worker_overruns(service, loop, transport, records, monkeypatch):
    monkeypatch.setattr(http_service, "DEADLINE_GRACE", 0.05)
    transport.gate.clear()  # the "network" never answers in time
    started = time.monotonic()
    got = outcome(service.submit(1, 1, request(timeout=0.2)))
    run_until(loop, lambda: got)
    assert isinstance(got[0][1], OperationTimeout) and got[0][1].details == {"timeout": 0.2}
    assert 0.2 <= time.monotonic() - started < 2
    assert records[-1][:2] == ("http.failed", "timeout")
    transport.gate.set()  # the worker comes back late: nothing is answered twice
    run_until(loop, lambda: service.in_flight(1) == 0)
    assert len(got) == 1 and service.stats["timed_out_by_loop"] == 1


def test_close_answers_nobody_and_does_not_hang(loop, records):
    transport = FakeTransport()
    transport.gate.clear()
    svc = HttpService(loop=loop, transport=transport, record=lambda *r: records.append(r))
    got = outcome(svc.submit(1, 1, request(timeout=60)))
    run_until(loop, lambda: transport.sent)
    started = time.monotonic()
    svc.close()
    assert time.monotonic() - started < 2.0
    assert got == [] and svc.pool.fileno() not in loop.readers()
    with pytest.raises(UpstreamError, match="shutting down"):
        svc.submit(1, 1, request())
    transport.gate.set()


# ---- the syscall: policy before anything is sent ------------------------------------------------


def ctx_for(service: HttpService, perms: Any, *, agent_id: int | None = 5, session_id: int | None = None) -> SyscallContext:
    caller = Caller("agent", agent_id=agent_id) if agent_id is not None else Caller("operator", session_id=session_id)
    return SyscallContext(FakeKernel(service), caller, None, perms)  # type: ignore[arg-type]


def granted(**grants: Any) -> Any:
    return for_level("standard").with_grants(grants)


def test_denied_domain_and_method_send_nothing(service, transport):
    ctx = ctx_for(service, granted(http_domains=["127.0.0.1"]))
    with pytest.raises(PermissionDenied) as domain:
        Http().execute(ctx, HttpCall(url="http://localhost:8080/"))
    assert domain.value.details == {"domain": "localhost"}
    with pytest.raises(PermissionDenied) as method:
        Http().execute(ctx, HttpCall(url="http://127.0.0.1/", method="POST"))  # standard: GET and HEAD only
    assert method.value.details == {"method": "POST"}
    with pytest.raises(PermissionDenied):
        Http().execute(ctx_for(service, for_level("standard")), HttpCall(url="http://127.0.0.1/"))  # no domains by default
    with pytest.raises(InvalidArguments):
        Http().execute(ctx, HttpCall(url="file:///etc/passwd"))
    assert transport.sent == []


def test_allowed_call_returns_a_deferred_that_resolves(service, loop, transport):
    ctx = ctx_for(service, granted(http_domains=["*.example.com", "127.0.0.1"], http_methods=["GET", "POST"]))
    result = Http().execute(ctx, HttpCall(url="https://api.example.com/v1", method="post", body="{}", headers={"X-K": "v"}))
    assert isinstance(result, Deferred)
    got = outcome(result)
    run_until(loop, lambda: got)
    assert got[0][0]["body"] == "POST https://api.example.com/v1"
    assert transport.sent[0].headers == (("X-K", "v"),) and transport.sent[0].body == b"{}"


def test_operators_are_unrestricted(service, loop, transport):
    ctx = ctx_for(service, for_level("unrestricted"), agent_id=None, session_id=42)
    got = outcome(Http().execute(ctx, HttpCall(url="http://anything.example:81/", method="DELETE")))
    run_until(loop, lambda: got)
    assert got[0][1] is None and transport.sent[0].method == "DELETE"


def test_async_result_goes_to_the_callers_poll_queue(service, loop):
    ctx = ctx_for(service, granted(http_domains=["127.0.0.1"]))
    reply = Http().execute(ctx, HttpCall(url="http://127.0.0.1/x", async_=True, request_id="r1"))
    assert reply == {"success": True, "async": True, "request_id": "r1", "status": "accepted"}
    results = run_until(loop, lambda: ctx.kernel.async_results.poll(5, 10))
    assert results[0]["request_id"] == "r1" and results[0]["opcode_name"] == "SYS_HTTP"
    payload = json.loads(results[0]["payload"])
    assert payload["success"] is True and payload["body"] == "GET http://127.0.0.1/x"


def test_async_failures_arrive_as_failure_payloads(loop):
    svc = HttpService(loop=loop, transport=FakeTransport(lambda req: (_ for _ in ()).throw(OperationTimeout("slow"))))
    try:
        ctx = ctx_for(svc, granted(http_domains=["127.0.0.1"]))
        reply = Http().execute(ctx, HttpCall(url="http://127.0.0.1/", async_=True))
        assert reply["request_id"].startswith("sys_http-")
        results = run_until(loop, lambda: ctx.kernel.async_results.poll(5, 10))
        assert json.loads(results[0]["payload"])["code"] == "timeout"
    finally:
        svc.close()
