"""The egress proxy started by a real kernel, against HTTP and HTTPS upstreams in a network
namespace of their own; the test speaks to an agent's ``egress.sock`` as the agent's relay would."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clove.errors import InvalidArguments
from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_row, agent_script, read_report, requires_root
from tests.integration.test_egress_support import (
    HTTP_PORT,
    HTTPS_PORT,
    Upstream,
    connect,
    http_get,
    https_get,
    read_answer,
    recv_exactly,
    socks_connect,
    tunnel,
    upstream_namespace,
)

pytestmark = [pytest.mark.integration, requires_root]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with upstream_namespace(tmp_path_factory.mktemp("egress")) as up:
        yield up


def _config(up: Upstream, egress: str = "", agents: str = "") -> str:
    names = ", ".join(f'"{n}" = "{up.address}"' for n in ("web.test", "secure.test", "other.test", "rebind.test"))
    return f"""
[egress]
resolve = {{{names}, "loop.test" = "127.0.0.1"}}
{egress}
{agents}"""


def _agent(name: str, rules: list[str], private: list[str] | None = None) -> str:
    quoted = ", ".join(f'"{r}"' for r in rules)
    extra = f"\negress_private = [{', '.join(repr(p) for p in private)}]" if private else ""
    return f'[agents.{name}]\nscript = "{agent_script("healthy.py")}"\nnetwork = true\negress = [{quoted}]{extra}\n'


def egress_socket(k: KernelProcess, name: str) -> str:
    agent_id = agent_row(k, name)["id"]
    path = k.state_dir / "agents" / str(agent_id) / "ipc" / "egress.sock"
    poll_for(path.exists, 15, message=f"{name}'s egress.sock")
    return str(path)


def records(k: KernelProcess, event: str = "egress.connection", **match: Any) -> list[dict[str, Any]]:
    with k.client() as c:
        entries = c.get_audit_log(category="NETWORK", limit=10_000)["entries"]
    found = [e for e in entries if e["event_type"] == event]
    return [e for e in found if all(e.get(key) == value or e["details"].get(key) == value for key, value in match.items())]


def wait_record(k: KernelProcess, event: str = "egress.connection", timeout: float = 10, **match: Any) -> dict[str, Any]:
    found = poll_for(lambda: records(k, event, **match), timeout, message=f"a {event} record {match}")
    return found[0]


@pytest.fixture(scope="module")
def main_kernel(upstream: Upstream) -> Iterator[KernelProcess]:
    """Agents: ``net`` (the upstream's range allowed), ``strict`` (no private range)."""
    private = [f"{upstream.address}/32"]
    config = _config(
        upstream,
        "connections = 3\nheader_bytes = 1024\n[journal]\ndenial_burst = 500  # every refusal written, none aggregated",
        _agent("net", [f"web.test:{HTTP_PORT}", f"secure.test:{HTTPS_PORT}", "*.example.net"], private)
        + _agent("strict", [f"web.test:{HTTP_PORT}", f"loop.test:{HTTP_PORT}", f"127.0.0.1:{HTTP_PORT}"])
        + _agent("flooder", [f"web.test:{HTTP_PORT}"], private),
    )
    k = KernelProcess(config).start()
    try:
        yield k
    finally:
        k.stop()
        k.cleanup()


def test_allowed_http_and_https_work(main_kernel: KernelProcess, upstream: Upstream) -> None:
    path = egress_socket(main_kernel, "net")
    stat = os.stat(path)
    channel_dir = os.stat(os.path.dirname(path))  # 0:<agent uid>, like kernel.sock beside it
    assert (stat.st_mode & 0o777, stat.st_uid, stat.st_gid) == (0o660, 0, channel_dir.st_gid) and channel_dir.st_gid != 0
    plain = http_get(path, f"http://web.test:{HTTP_PORT}/hello")
    assert plain.status == 200
    assert plain.body.decode() == f"hello from upstream: GET /hello host=web.test:{HTTP_PORT} connection=close"
    secure = https_get(path, "secure.test", HTTPS_PORT, upstream.cafile)  # the client checks the cert: end to end
    assert secure.status == 200 and secure.body.startswith(b"hello from upstream: GET /hello host=secure.test")
    up = wait_record(main_kernel, host="web.test", method="GET")
    assert up["decision"] == "allowed" and up["agent_name"] == "net" and up["details"]["address"] == upstream.address
    assert up["details"]["down"] >= len(plain.body) and up["details"]["up"] > 0
    tls = wait_record(main_kernel, host="secure.test", method="CONNECT")
    assert tls["decision"] == "allowed" and tls["details"]["down"] > len(secure.body)  # TLS records counted, not plaintext


def test_other_host_is_refused_with_a_reason(main_kernel: KernelProcess) -> None:
    path = egress_socket(main_kernel, "net")
    sock, answer = tunnel(path, "other.test:443")
    sock.close()
    assert answer.status == 403 and answer.headers["x-clove-egress-refused"] == "not_allowed"
    plain = http_get(path, "http://other.test:8080/")
    text = plain.body.decode()
    assert plain.status == 403
    assert text == f'clove egress: other.test:8080 is not in the allowed domains of agent "net" (allowed: web.test:{HTTP_PORT}, secure.test:{HTTPS_PORT}, *.example.net)\n'
    # The wildcard is for subdomains only, and its default ports.
    assert http_get(path, "http://example.net/").status == 403
    record = wait_record(main_kernel, host="other.test", method="CONNECT")
    assert (record["decision"], record["code"], record["agent_name"]) == ("denied", "egress.not_allowed", "net")


def test_socks5_is_offered_on_the_same_socket(main_kernel: KernelProcess) -> None:
    path = egress_socket(main_kernel, "net")
    sock, code = socks_connect(path, "web.test", HTTP_PORT)
    with sock:
        assert code == 0
        sock.sendall(b"GET /socks HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):  # the upstream closes after its answer
            answer += chunk
        assert b"hello from upstream: GET /socks" in answer
    sock, code = socks_connect(path, "other.test", 443)
    sock.close()
    assert code == 2  # not allowed by the ruleset
    record = wait_record(main_kernel, host="other.test", method="SOCKS5")
    assert record["code"] == "egress.not_allowed" and "not in the allowed domains" in record["details"]["reason"]
    assert wait_record(main_kernel, host="web.test", method="SOCKS5")["decision"] == "allowed"


def test_private_and_loopback_addresses_are_refused_after_resolution(main_kernel: KernelProcess, upstream: Upstream) -> None:
    path = egress_socket(main_kernel, "strict")
    # Allowed by name, but web.test resolves into a private range the agent was not given.
    answer = http_get(path, f"http://web.test:{HTTP_PORT}/hello")
    assert answer.status == 403 and answer.headers["x-clove-egress-refused"] == "private_address"
    assert answer.body.decode() == (
        f'clove egress: web.test:{HTTP_PORT} resolves to {upstream.address} (private), which agent "strict" may not reach (egress_private: none)\n'
    )
    # A name pointing at loopback (DNS rebinding), and the loopback literal itself.
    for target in (f"loop.test:{HTTP_PORT}", f"127.0.0.1:{HTTP_PORT}"):
        sock, refused = tunnel(path, target)
        sock.close()
        assert refused.status == 403 and refused.headers["x-clove-egress-refused"] == "private_address", target
    rebind = wait_record(main_kernel, host="loop.test")
    assert rebind["decision"] == "denied" and "127.0.0.1 (loopback)" in rebind["details"]["reason"]


def test_header_and_concurrency_bounds(main_kernel: KernelProcess) -> None:
    path = egress_socket(main_kernel, "net")
    big = http_get(path, f"http://web.test:{HTTP_PORT}/", extra="X-Pad: " + "a" * 2000 + "\r\n")
    assert big.status == 431 and big.headers["x-clove-egress-refused"] == "header_too_large"
    opened = []
    try:
        for _ in range(3):  # the limit: three open tunnels
            sock, answer = tunnel(path, f"web.test:{HTTP_PORT}")
            opened.append(sock)
            assert answer.status == 200
        with connect(path) as sock:  # answered before any request is read: send none
            answer = read_answer(sock)
        assert answer.status == 403 and answer.headers["x-clove-egress-refused"] == "too_many_connections"
    finally:
        for sock in opened:
            sock.close()
    # Closing them frees the places.
    poll_for(lambda: http_get(path, f"http://web.test:{HTTP_PORT}/hello").status == 200, 10, message="a free connection place")
    wait_record(main_kernel, egress_code="too_many_connections")
    wait_record(main_kernel, egress_code="header_too_large")


def test_a_flood_costs_the_flooder_not_the_proxy(main_kernel: KernelProcess) -> None:
    path = egress_socket(main_kernel, "flooder")
    # Refusals past the agent's burst (20) are answered late, each holding one of its places.
    assert {http_get(path, "http://other.test:8080/").status for _ in range(25)} == {403}
    slowed = poll_for(
        lambda: [r for r in records(main_kernel, agent_name="flooder") if r["details"].get("slowed_ms")], 10, message="slowed refusals"
    )
    assert all(r["details"]["slowed_ms"] <= 1000 for r in slowed)
    # At its connection limit with no refusal left to spend, new connections wait in the
    # backlog (the proxy does not even accept them) until one of its connections ends.
    opened = [tunnel(path, f"web.test:{HTTP_PORT}") for _ in range(3)]
    assert [answer.status for _, answer in opened] == [200, 200, 200]
    waiting = None
    try:
        for _ in range(40):  # refusal tokens refill at 10/s: spend them until one is not answered
            sock = connect(path, timeout=0.5)
            try:  # too_many_connections is answered before the request is read: send none yet
                assert recv_exactly(sock, 12) == b"HTTP/1.1 403"
                sock.close()
            except TimeoutError:
                waiting = sock
                break
        assert waiting is not None, "the proxy kept accepting past the limit"
        opened.pop()[0].close()  # a place frees: the waiting connection is served
        waiting.settimeout(10)
        waiting.sendall(f"CONNECT web.test:{HTTP_PORT} HTTP/1.1\r\n\r\n".encode())
        assert recv_exactly(waiting, 12) == b"HTTP/1.1 200"
    finally:
        for sock, _ in opened:
            sock.close()
        if waiting is not None:
            waiting.close()


def test_proxy_killed_is_restarted_and_agents_carry_on(main_kernel: KernelProcess) -> None:
    path = egress_socket(main_kernel, "net")
    before = poll_for(lambda: (row := agent_row(main_kernel, "net"))["state"] == "running" and row, 15, message="net running")
    started = records(main_kernel, "egress.proxy_started")[-1]["details"]
    pid, cgroup = started["pid"], started["cgroup"]
    assert isinstance(cgroup, str) or (cgroup["memory"]["requested"], cgroup["pids"]["requested"]) == (256 << 20, 64)
    os.kill(pid, signal.SIGKILL)
    poll_for(lambda: not _alive(pid), 10, message="the proxy to die")
    # The kernel holds the agent's listening socket: a request made now waits in its backlog
    # for the next proxy instead of being refused.
    assert http_get(path, f"http://web.test:{HTTP_PORT}/hello").status == 200
    ready = poll_for(lambda: [r for r in records(main_kernel, "egress.proxy_ready") if r["details"]["pid"] != pid], 10, message="the new proxy's ready")
    assert ready[-1]["details"]["agents"] >= 2
    assert records(main_kernel, "egress.proxy_down")[-1]["details"]["reason"] == "signal 9"
    after = agent_row(main_kernel, "net")
    assert (after["state"], after["pid"], after["restarts"]) == ("running", before["pid"], before["restarts"])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# ---- limits that need a kernel of their own ---------------------------------------------------------------


@pytest.fixture
def tight_kernel(upstream: Upstream, make_kernel: Callable[..., KernelProcess]) -> KernelProcess:
    private = [f"{upstream.address}/32"]
    rules = [f"web.test:{HTTP_PORT}"]
    return make_kernel(
        _config(
            upstream,
            'connect_rate = 0.05\nconnect_burst = 2\nidle_timeout = 0.5\nbytes_budget = "100K"',
            _agent("ratey", rules, private) + _agent("idler", rules, private) + _agent("spender", rules, private),
        )
    )


def test_rate_idle_and_byte_budget(tight_kernel: KernelProcess) -> None:
    k = tight_kernel
    ratey = egress_socket(k, "ratey")
    assert [http_get(ratey, f"http://web.test:{HTTP_PORT}/hello").status for _ in range(2)] == [200, 200]
    third = http_get(ratey, f"http://web.test:{HTTP_PORT}/hello")
    assert third.status == 403 and third.headers["x-clove-egress-refused"] == "rate_limited"
    assert "faster than 0.05/s" in third.body.decode()

    idler = egress_socket(k, "idler")
    sock, answer = tunnel(idler, f"web.test:{HTTP_PORT}")
    assert answer.status == 200
    assert sock.recv(1) == b""  # closed by the proxy once idle for 0.5 s (the socket's own timeout is 10 s)
    sock.close()
    assert wait_record(k, agent_name="idler")["details"]["egress_code"] == "idle_timeout"

    spender = egress_socket(k, "spender")
    cut = http_get(spender, f"http://web.test:{HTTP_PORT}/bytes/400000")
    assert cut.status == 200 and len(cut.body) < 400_000  # cut at the budget
    record = wait_record(k, agent_name="spender", method="GET")
    assert record["details"]["egress_code"] == "bytes_exhausted"
    after = http_get(spender, f"http://web.test:{HTTP_PORT}/hello")
    assert after.status == 403 and after.headers["x-clove-egress-refused"] == "bytes_exhausted"


def test_a_garbage_client_gets_an_answer_and_the_proxy_dies_with_its_kernel(tight_kernel: KernelProcess) -> None:
    path = egress_socket(tight_kernel, "ratey")
    with connect(path) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert recv_exactly(sock, 13) == b"HTTP/1.1 400 "
    pid = records(tight_kernel, "egress.proxy_started")[-1]["details"]["pid"]
    assert tight_kernel.stop() == 0
    poll_for(lambda: not _alive(pid), 10, message="the proxy to end with its kernel")
    assert not os.path.exists(path)  # the kernel removed the agent's socket


def test_spawn_carries_network_and_egress(main_kernel: KernelProcess) -> None:
    k = main_kernel
    script = agent_script("healthy.py")
    with pytest.raises(InvalidArguments, match='network must be true, false or "full"'):
        k.call("agent.spawn", name="bad-net", script=script, network="half")
    with pytest.raises(InvalidArguments, match="egress: 'a b': not a host name"):
        k.call("agent.spawn", name="bad-rule", script=script, network=True, egress=["a b"])
    with pytest.raises(InvalidArguments, match="egress_private"):
        k.call("agent.spawn", name="bad-range", script=script, network=True, egress_private=["300.0.0.0/8"])
    with pytest.raises(InvalidArguments, match="egress applies to network = true only"):
        k.call("agent.spawn", name="bad-full", script=script, network="full", egress=["other.test:443"])
    k.call("agent.spawn", name="spawned", script=script, network=True, egress=["other.test:443"])
    path = egress_socket(k, "spawned")
    sock, answer = tunnel(path, f"web.test:{HTTP_PORT}")
    sock.close()
    assert answer.status == 403 and answer.headers["x-clove-egress-refused"] == "not_allowed"
    k.call("agent.kill", name="spawned")  # killed and forgotten: its socket goes with it
    poll_for(lambda: not os.path.exists(path), 10, message="the removed agent's egress.sock to go")


# ---- a real sandboxed agent, unchanged urllib code through HTTP(S)_PROXY --------------------------------

_AGENT = """
import json, os, socket, ssl, sys, time, urllib.error, urllib.request
import httpx
import requests

cafile, address = sys.argv[1], sys.argv[2]
out = {"proxy": os.environ.get("HTTPS_PROXY")}
out["http"] = urllib.request.urlopen("http://web.test:HTTP_PORT/hello", timeout=10).read().decode()
ctx = ssl.create_default_context(cafile=cafile)
out["https"] = urllib.request.urlopen("https://secure.test:HTTPS_PORT/hello", context=ctx, timeout=10).read().decode()
out["requests"] = requests.get("https://secure.test:HTTPS_PORT/hello", verify=cafile, timeout=10).text
out["httpx"] = httpx.get("https://secure.test:HTTPS_PORT/hello", verify=ctx, timeout=10).text
try:
    urllib.request.urlopen("http://other.test:HTTP_PORT/", timeout=10)
except urllib.error.HTTPError as err:
    out["refused"] = [err.code, err.headers.get("X-Clove-Egress-Refused"), err.read().decode()]
try:
    urllib.request.urlopen("https://other.test/", context=ctx, timeout=10)
except urllib.error.URLError as err:
    out["refused_tls"] = str(err.reason)
try:
    socket.create_connection((address, HTTP_PORT), timeout=3).close()
    out["direct"] = "connected"
except OSError as err:
    out["direct"] = type(err).__name__
print("REPORT " + json.dumps(out), flush=True)
time.sleep(120)
""".replace("HTTPS_PORT", str(HTTPS_PORT)).replace("HTTP_PORT", str(HTTP_PORT))


def test_a_sandboxed_agent_reaches_only_what_it_may(main_kernel: KernelProcess, upstream: Upstream) -> None:
    k = main_kernel
    script, cafile = k.dir / "egress_agent.py", k.dir / "upstream.crt"
    script.write_text(_AGENT)
    cafile.write_bytes(Path(upstream.cafile).read_bytes())
    for path in (script, cafile):
        path.chmod(0o644)
    rules = [f"web.test:{HTTP_PORT}", f"secure.test:{HTTPS_PORT}"]
    reply = k.call("agent.spawn", name="urllib", script=str(script), args=[str(cafile), upstream.address], network=True, egress=rules, egress_private=[f"{upstream.address}/32"])
    report = read_report(k, "urllib", timeout=30)
    assert report["proxy"] == "http://127.0.0.1:3128"
    assert report["http"].startswith("hello from upstream: GET /hello host=web.test")
    assert report["https"].startswith("hello from upstream: GET /hello host=secure.test")
    code, header, text = report["refused"]
    assert (code, header) == (403, "not_allowed") and 'agent "urllib"' in text
    assert "403" in report["refused_tls"]
    assert report["direct"] != "connected"  # its own network namespace: no route but the proxy
    for client in ("requests", "httpx"):
        assert report[client].startswith("hello from upstream: GET /hello host=secure.test"), client
    assert (reply["isolation"]["network"], reply["isolation"]["relays"]) == ("proxy", [3128])  # the sandbox half's report
    k.call("agent.kill", name="urllib")


_PARENT = """
import json, sys
from clove_sdk import CloveClient

child, rule = sys.argv[1], sys.argv[2]
out = {}
with CloveClient(timeout=20) as c:
    for name, extra in (("within", {"egress": [rule]}), ("beyond", {"egress": [rule, "evil.test:443"]}),
                        ("full", {"network": "full"}), ("ranges", {"egress_private": ["10.0.0.0/8"]})):
        body = {"name": f"kid-{name}", "script": child, "network": True, **extra}
        try:
            out[name] = c.call("agent.spawn", **body)["status"]
        except Exception as err:  # the refusal is the point
            out[name] = getattr(err, "code", repr(err))
print("REPORT " + json.dumps(out), flush=True)
"""


def test_an_agents_child_gets_no_more_egress_than_it_has(main_kernel: KernelProcess) -> None:
    k = main_kernel
    script = k.dir / "egress_parent.py"
    script.write_text(_PARENT)
    script.chmod(0o644)
    rule = f"web.test:{HTTP_PORT}"
    k.call("agent.spawn", name="parent", script=str(script), args=[agent_script("healthy.py"), rule],
           network=True, egress=[rule], permissions={"can_spawn": True, "max_children": 4})  # fmt: skip
    report = read_report(k, "parent", timeout=30)
    assert report == {"within": "running", "beyond": "perm.denied", "full": "perm.denied", "ranges": "perm.denied"}
    k.call("agent.kill", name="parent")


def test_a_hung_proxy_is_killed_and_replaced(upstream: Upstream, make_kernel: Callable[..., KernelProcess]) -> None:
    k = make_kernel(_config(upstream, "heartbeat_timeout = 2.0", _agent("net", [f"web.test:{HTTP_PORT}"], [f"{upstream.address}/32"])))
    path = egress_socket(k, "net")
    pid = wait_record(k, event="egress.proxy_ready")["details"]["pid"]
    os.kill(pid, signal.SIGSTOP)  # alive, but silent
    try:
        hung = wait_record(k, event="egress.proxy_hung", timeout=15)
        assert hung["details"]["pid"] == pid
        poll_for(lambda: any(r["details"]["pid"] != pid for r in records(k, "egress.proxy_ready")), 15, message="a new proxy")
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGCONT)
    assert http_get(path, f"http://web.test:{HTTP_PORT}/hello").status == 200


def test_the_egress_example_agent_fetches_what_it_may_and_reads_why_not(main_kernel: KernelProcess, upstream: Upstream) -> None:
    """examples/egress_agent: unchanged urllib, one allowed URL and one refused, with the reason."""
    example = Path(__file__).resolve().parents[2] / "examples" / "egress_agent" / "agent.py"
    allowed, refused = f"http://web.test:{HTTP_PORT}/hello", f"http://other.test:{HTTP_PORT}/hello"
    main_kernel.call("agent.spawn", name="fetcher", script=str(example), args=[allowed, refused], network=True,
                     egress=[f"web.test:{HTTP_PORT}"], egress_private=[f"{upstream.address}/32"])  # fmt: skip
    report = read_report(main_kernel, "fetcher", timeout=30)
    assert report[allowed]["status"] == 200 and report[allowed]["text"].startswith("hello from upstream")
    assert report[refused]["status"] == 403 and report[refused]["refused"] == "not_allowed"
    assert f"other.test:{HTTP_PORT} is not in the allowed domains" in report[refused]["text"]
    main_kernel.call("agent.kill", name="fetcher")
