"""HTTP through the kernel: a real kernel, sandboxed agents and the loopback test server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from clove.errors import OperationTimeout, QuotaExceeded, UpstreamError
from clove.httpclient import MAX_RESPONSE_BYTES, HttpRequest, Urllib3Transport
from clove.kernel.services.http import MAX_IN_FLIGHT
from clove.testing.httpserver import BINARY_BODY, HttpTestServer
from clove.testing.kernel import poll_for
from tests.conftest import agent_script, read_report, requires_root

pytestmark = pytest.mark.integration

GRANTS = {"http_domains": ["127.0.0.1"], "http_methods": ["GET", "POST"]}


@pytest.fixture
def server() -> Iterator[HttpTestServer]:
    with HttpTestServer() as s:
        yield s


def network_records(op: Any, **filters: Any) -> list[dict[str, Any]]:
    return [e for e in op.get_audit_log(category="NETWORK", limit=10_000, **filters)["entries"]]


# ---- the transport alone -------------------------------------------------------------------------


def test_transport_keeps_one_deadline_and_the_size_cap(server):
    transport = Urllib3Transport()
    try:

        def send(path: str, method: str = "GET", timeout: float = 5.0) -> Any:
            return transport.send(HttpRequest(method, server.url(path), timeout=timeout), time.monotonic() + timeout)

        started = time.monotonic()
        with pytest.raises(OperationTimeout):
            send("/trickle?chunks=20&interval=0.2", timeout=1.0)  # every read is quick; the whole is not
        assert time.monotonic() - started < 1.6
        with pytest.raises(QuotaExceeded) as chunked:
            send(f"/bytes/{MAX_RESPONSE_BYTES + 1}?chunked=1")  # no Content-Length: counted while read
        assert chunked.value.details["max_bytes"] == MAX_RESPONSE_BYTES and chunked.value.details["status_code"] == 200
        head = send("/bytes/100", method="HEAD")
        assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "100")
        assert send("/bytes/1000?chunked=1").body == b"x" * 1000
        with pytest.raises(UpstreamError, match="could not connect"):
            transport.send(HttpRequest("GET", "http://127.0.0.1:1/"), time.monotonic() + 5)
    finally:
        transport.close()


# ---- agents and operators through a kernel --------------------------------------------------------


@requires_root
def test_sandboxed_agent_gets_real_responses_within_its_grants(kernel, server):
    base = server.url("").rstrip("/")
    with kernel.client() as op:
        op.subscribe(["SYSCALL_BLOCKED"])
        agent = op.call("agent.spawn", name="fetcher", script=agent_script("http_client.py"), args=[base, str(server.port)], permissions=GRANTS)
        report = read_report(kernel, "fetcher", timeout=30)
        assert report["own_network"] != "connected"  # no network of its own: the kernel fetched

        get = report["get"]
        assert get["success"] and get["status_code"] == 200 and get["encoding"] == "utf-8"
        assert get["headers"]["content-type"] == "application/json"
        import json

        echoed = json.loads(get["body"])
        assert echoed["method"] == "GET" and echoed["query"] == {"q": "1"} and echoed["headers"]["x-clove-test"] == "yes"
        assert echoed["headers"]["user-agent"].startswith("clove/")
        post = json.loads(report["post"]["body"])
        assert (post["method"], post["body"], post["headers"]["content-type"]) == ("POST", "payload", "text/plain")
        assert report["not_found"]["success"] is True and report["not_found"]["status_code"] == 404
        assert report["not_found"]["body"] == "status 404"
        assert report["binary"] == {"encoding": "base64", "hex": BINARY_BODY.hex()}
        redirect = report["redirect"]  # not followed: the caller sees the 302
        assert redirect["success"] and redirect["status_code"] == 302 and redirect["headers"]["location"].endswith("/echo?followed=1")
        assert not any(r.query.get("followed") for r in server.requests)

        assert report["denied_domain"]["code"] == "perm.denied" and report["denied_domain"]["details"] == {"domain": "localhost"}
        assert report["denied_method"]["code"] == "perm.denied" and report["denied_method"]["details"] == {"method": "PUT"}
        assert report["bad_scheme"]["code"] == "proto.invalid_args"
        assert report["host_header"]["code"] == "proto.invalid_args"
        assert report["noop"] == "still here"
        assert [r.method for r in server.requests_to("/echo")] == ["GET", "POST"]  # nothing denied was sent

        security = op.get_audit_log(category="SECURITY", agent_id=agent["id"], limit=1000)["entries"]
        denied = [e for e in security if e["syscall"] == "http" and e["decision"] == "denied"]
        assert {e["code"] for e in denied} == {"perm.denied", "proto.invalid_args"} and len(denied) == 4
        network = network_records(op, agent_id=agent["id"])
        assert [e["event_type"] for e in network].count("http.response") == 5
        assert all(e["agent_name"] == "fetcher" for e in network)
        assert any(e["event_type"] == "http" and e["code"] == "ok" for e in network)  # the syscall's own record
        blocked = []
        poll_for(lambda: blocked.extend(op.poll_events(max_events=100)["events"]) or len(blocked) >= 2, message="SYSCALL_BLOCKED")
        assert {(e["data"]["syscall"], e["source_agent_id"]) for e in blocked} == {("http", agent["id"])}


@requires_root
def test_a_slow_request_times_out_while_the_loop_keeps_answering(kernel, server):
    outcomes: dict[str, Any] = {}

    def fetch(key: str, timeout: float) -> None:
        started = time.monotonic()
        with kernel.client() as c:
            try:
                outcomes[key] = c.call("http", url=server.url("/delay/3"), timeout=timeout)["status_code"]
            except Exception as err:  # noqa: BLE001 - kept for the assertion
                outcomes[key] = err
        outcomes[key + "_s"] = time.monotonic() - started

    threads = [threading.Thread(target=fetch, args=("short", 1.0)), threading.Thread(target=fetch, args=("long", 10.0))]
    for t in threads:
        t.start()
    latencies = []
    with kernel.client() as c:
        while any(t.is_alive() for t in threads):
            started = time.perf_counter()
            assert c.noop("ping") == "ping"
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
    for t in threads:
        t.join()
    assert isinstance(outcomes["short"], OperationTimeout) and 0.9 < outcomes["short_s"] < 2.5
    assert outcomes["long"] == 200 and 2.9 < outcomes["long_s"] < 6
    latencies.sort()
    assert len(latencies) > 50
    assert latencies[len(latencies) // 2] < 0.02 and latencies[-1] < 0.5, latencies[-5:]


@requires_root
def test_big_responses_hit_the_cap(kernel, server):
    with kernel.client(timeout=30) as op:
        exact = op.http(server.url(f"/bytes/{MAX_RESPONSE_BYTES}"))
        assert exact["success"] and len(exact["body"]) == MAX_RESPONSE_BYTES
        for path in (f"/bytes/{MAX_RESPONSE_BYTES + 1}", f"/bytes/{MAX_RESPONSE_BYTES + 1}?chunked=1"):
            over = op.http(server.url(path))
            assert over["code"] == "quota.exceeded" and over["details"]["max_bytes"] == MAX_RESPONSE_BYTES
        assert op.noop("fine") == "fine"


@requires_root
def test_async_requests_report_through_poll_async(kernel, server):
    with kernel.client() as op:
        started = time.monotonic()
        ok = op.http(server.url("/echo"), async_=True, request_id="a1")
        slow = op.http(server.url("/delay/5"), async_=True, request_id="a2", timeout=0.5)
        assert time.monotonic() - started < 1.0
        assert ok == {"success": True, "async": True, "request_id": "a1", "status": "accepted"}
        assert slow["request_id"] == "a2"
        results: list[dict[str, Any]] = []
        poll_for(lambda: results.extend(op.poll_async()["results"]) or len(results) >= 2, timeout=10, message="async results")
        import json

        by_id = {r["request_id"]: (r["opcode_name"], json.loads(r["payload"])) for r in results}
        assert by_id["a1"][0] == "SYS_HTTP" and by_id["a1"][1]["status_code"] == 200
        assert by_id["a2"][1]["success"] is False and by_id["a2"][1]["code"] == "timeout"


@requires_root
def test_per_caller_in_flight_limit(kernel, server):
    with kernel.client() as op, kernel.client() as other:
        for i in range(MAX_IN_FLIGHT):
            assert op.http(server.url("/delay/1"), async_=True, request_id=i)["status"] == "accepted"
        over = op.http(server.url("/echo"), async_=True)
        assert over["code"] == "quota.exceeded" and over["details"]["max_in_flight"] == MAX_IN_FLIGHT
        assert other.http(server.url("/echo"))["status_code"] == 200  # another caller is not held back
        results: list[dict[str, Any]] = []
        poll_for(lambda: results.extend(op.poll_async(max_results=100)["results"]) or len(results) >= MAX_IN_FLIGHT, timeout=15)
        assert sorted(r["request_id"] for r in results) == list(range(MAX_IN_FLIGHT))
        assert op.http(server.url("/echo"))["status_code"] == 200


@requires_root
def test_operators_are_unrestricted(kernel, server):
    with kernel.client() as op:
        url = f"http://localhost:{server.port}/echo"
        assert op.http(url)["status_code"] == 200
        assert op.http(url, method="PUT", body=b"\x00\x01")["status_code"] == 200
        assert op.http(url, method="DELETE")["status_code"] == 200
    assert [r.method for r in server.requests_to("/echo")] == ["GET", "PUT", "DELETE"]
    assert server.requests_to("/echo")[1].body == b"\x00\x01"


@requires_root
def test_replies_for_an_agent_that_is_gone_are_dropped(kernel, server):
    with kernel.client() as op:
        agent = op.call("agent.spawn", name="impatient", script=agent_script("http_slow.py"), args=[server.url("/delay/2")], permissions=GRANTS)
        poll_for(lambda: server.requests_to("/delay/2"), message="the slow request to start")
        assert op.kill(name="impatient")
        dropped = poll_for(
            lambda: [e for e in network_records(op, agent_id=agent["id"]) if e["event_type"] == "http.dropped"], timeout=10, message="http.dropped"
        )
        assert dropped[0]["details"]["reason"] == "caller gone" and dropped[0]["details"]["url"].endswith("/delay/2")
        assert op.http(server.url("/echo"))["status_code"] == 200


@requires_root
def test_shutdown_does_not_wait_for_slow_requests(make_kernel, server):
    k = make_kernel()
    with k.client() as op:
        assert op.http(server.url("/delay/60"), async_=True, timeout=120)["status"] == "accepted"
        poll_for(lambda: server.requests_to("/delay/60"), message="the slow request to start")
    started = time.monotonic()
    assert k.stop() == 0
    assert time.monotonic() - started < 6
