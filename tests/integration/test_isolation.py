"""What a sandboxed agent can and cannot do: network, files, /tmp, secrets, other processes."""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]


@pytest.fixture
def tcp_server():
    """A loopback server that counts the connections it accepts."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            accepted.append(conn.getpeername())
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    thread.join()
    srv.close()


def test_sandboxed_agent_is_confined_but_reaches_the_kernel(kernel, tcp_server, tmp_path):
    port, accepted = tcp_server
    outside = tmp_path / "outside.txt"
    with kernel.client() as c:
        r = c.spawn("probe", agent_script("probe.py"), args=[str(port), str(outside)])
    report = read_report(kernel, "probe")
    assert report["hello"]["ok"] and report["hello"]["value"]["agent_id"] == r["id"]
    assert not report["tcp"]["ok"] and accepted == []
    assert not report["write_outside"]["ok"] and not outside.exists()
    assert not report["shadow"]["ok"] and "PermissionError" in report["shadow"]["error"]
    assert report["write_work"]["ok"] and report["write_tmp"]["ok"]
    # /tmp holds only what the agent wrote plus the mount points of its own exposed paths
    # (its script's directory when that lives under /tmp).
    assert "agent-tmp.txt" in report["tmp_listing"]["value"]
    exposed_under_tmp = {
        Path(p).parts[2] for p in (str(kernel.dir), agent_script("probe.py"), sys.prefix) if p.startswith("/tmp/")
    }  # the kernel's dir, and the checkout and venv when they live under /tmp (a CI runner)
    assert set(report["tmp_listing"]["value"]) - {"agent-tmp.txt"} <= exposed_under_tmp
    assert report["uid"] == r["isolation"]["uid"] and report["uid"] >= 300_000
    assert report["hostname"] == "clove-probe"
    assert report["pid"] == 2  # pid 1 is the sandbox's init
    assert not report["kill_init"]["ok"]  # cannot signal its own init (root-owned), let alone others
    assert r["isolation"]["seccomp"] is True
    assert not report["inet_socket"]["ok"] and "Operation not permitted" in report["inet_socket"]["error"]


def test_private_tmp_is_not_the_hosts(kernel, tmp_path):
    marker = "/tmp/clove-host-marker-visible"
    open(marker, "w").close()
    try:
        with kernel.client() as c:
            c.spawn("probe", agent_script("probe.py"), args=["1", str(tmp_path / "x")])
        report = read_report(kernel, "probe")
        assert "clove-host-marker-visible" not in report["tmp_listing"]["value"]
        assert not os.path.exists("/tmp/agent-tmp.txt")
    finally:
        os.unlink(marker)


@pytest.mark.parametrize("kernel_cwd", ["/tmp", "/"])
def test_agents_start_and_keep_a_private_tmp_whatever_the_kernels_working_directory(make_kernel, tmp_path, kernel_cwd):
    """``python -m clove`` puts its working directory on sys.path; from /tmp that directory was
    bound over the sandbox's private /tmp (read-only) and every sandboxed spawn failed."""
    marker = "/tmp/clove-host-marker-visible"
    open(marker, "w").close()
    try:
        k = make_kernel(cwd=kernel_cwd)
        with k.client() as c:
            reply = c.spawn("probe", agent_script("probe.py"), args=["1", str(tmp_path / "x")])
        assert reply.get("success"), reply
        report = read_report(k, "probe")
        assert "clove-host-marker-visible" not in report["tmp_listing"]["value"]
    finally:
        os.unlink(marker)


def test_full_network_grant_allows_tcp(kernel, tcp_server, tmp_path):
    port, accepted = tcp_server
    with kernel.client() as c:
        r = c.spawn("netprobe", agent_script("probe.py"), args=[str(port), str(tmp_path / "x")], network="full")
    report = read_report(kernel, "netprobe")
    assert report["tcp"]["ok"], report["tcp"]
    assert report["inet_socket"]["ok"]
    assert "net" not in r["isolation"]["namespaces"] and r["isolation"]["network"] == "full"
    assert not report["write_outside"]["ok"]


def test_script_anywhere_is_visible_read_only_and_custom_interpreter_works(kernel, tmp_path):
    # pytest's tmp_path sits under a 0700 directory the agent's uid cannot traverse on the host.
    script = tmp_path / "deep" / "agent.py"
    script.parent.mkdir()
    script.write_text(
        "import json, sys\n"
        "from clove_sdk import CloveClient\n"
        "try:\n    open(__file__, 'a').write('#')\n    ro = False\n"
        "except OSError:\n    ro = True\n"
        "with CloveClient(timeout=10) as c:\n    who = c.hello()['agent_id']\n"
        "print('REPORT ' + json.dumps({'ro': ro, 'who': who, 'exe': sys.executable, 'argv': sys.argv[1:]}), flush=True)\n"
    )
    original = script.read_text()
    with kernel.client() as c:
        fast = c.spawn("fast", str(script), args=["a", "b"])
        slow = c.spawn("slow", str(script), interpreter=sys.executable, args=["c"])
    for name, r, argv in (("fast", fast, ["a", "b"]), ("slow", slow, ["c"])):
        report = read_report(kernel, name)
        assert report == {"ro": True, "who": r["id"], "exe": report["exe"], "argv": argv}
    assert read_report(kernel, "slow")["exe"] == sys.executable
    assert script.read_text() == original
