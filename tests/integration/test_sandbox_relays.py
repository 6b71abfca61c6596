"""Loopback relays with a real kernel and real sandboxed agents, started fresh and from a claimed
spare: ``127.0.0.1:PORT`` in the agent's own network namespace leads to a Unix socket in its
channel dir (here a small echo service of the test's own, standing in for the kernel's egress
proxy and LLM gateway), and to nothing else.

The echo service echoes until EOF, then sends ``BYE`` and closes: an agent that half-closes
after a large payload gets all of it back, and the end. The kernel's own services bind the same
paths (the egress proxy when it has started, the LLM endpoint at ``agent.created``): the test
waits for theirs, then puts its own in its place (:func:`take_over`)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clove.sandbox.landlock import abi_version
from clove.sandbox.relays import (
    EGRESS_PORT,
    EGRESS_SOCKET,
    LLM_KEY_PLACEHOLDER,
    LLM_PORT,
    LLM_SOCKET,
    MAX_CONNECTIONS,
)
from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_row, agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]

LLM_CONFIG = """
[llm]
plugins = ["scripted"]
[llm.providers.main]
kind = "scripted"
model = "scripted-1"
"""


class EchoService:
    """A Unix stream server at ``path`` (replacing whatever is there): echoes, then ``BYE``."""

    def __init__(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.accepted = 0
        self.ended = 0  # connections that reached EOF or an error
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            with conn:
                while data := conn.recv(1 << 16):
                    conn.sendall(data)
                conn.sendall(b"BYE")
        except OSError:
            pass
        self.ended += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def wait_for_kernels_own(path: Path) -> None:
    """Wait (a few seconds at most) for the kernel's own service to bind ``path``: the egress
    proxy does so once its process is up, after the spawn's reply. A kernel without that
    service binds nothing there, and the test goes on."""
    with contextlib.suppress(TimeoutError):
        poll_for(lambda: path.exists(), 10, message=f"the kernel's own {path.name}")


@pytest.fixture
def services() -> Iterator[Callable[..., EchoService]]:
    """``take_over(path)``: the kernel's service at ``path`` replaced by an echo service."""
    made: list[EchoService] = []

    def make(path: Path, *, theirs_first: bool = True) -> EchoService:
        if theirs_first:
            wait_for_kernels_own(path)
        made.append(EchoService(path))
        return made[-1]

    yield make
    for service in made:
        service.close()


@pytest.fixture
def host_listener() -> Iterator[tuple[int, list[Any]]]:
    """A TCP listener on every host address, counting what it accepts."""
    srv = socket.create_server(("0.0.0.0", 0))
    srv.settimeout(0.1)
    accepted: list[Any] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = srv.accept()
            except TimeoutError:
                continue
            accepted.append(peer)
            with conn:
                conn.sendall(b"host")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    thread.join()
    srv.close()


def host_address() -> str:
    """A non-loopback address of this host (the source address of a route out)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent
        except OSError:
            pytest.skip("this host has no route out to take an address from")
        return str(probe.getsockname()[0])


@pytest.fixture(params=["fresh", "spare"])
def path_kernel(request: pytest.FixtureRequest, make_kernel: Callable[..., KernelProcess]) -> tuple[KernelProcess, int]:
    """A kernel whose next sandboxed spawn is forked anew, or served by a prepared spare; and
    how many spares that spawn is to claim."""
    if request.param == "fresh":
        return make_kernel(sandbox="spares_max = 0\nspares_min = 0\n"), 0
    kernel = make_kernel(sandbox="spares_max = 1\nspares_min = 1\n")
    poll_for(lambda: kernel.call("kernel.info")["spares"]["ready"] == 1, 30, message="a made spare")
    return kernel, 1


def channel_dir(kernel: KernelProcess, agent_id: int) -> Path:
    return kernel.state_dir / "agents" / str(agent_id) / "ipc"


def step(kernel: KernelProcess, name: str, step_name: str, timeout: float = 20.0) -> Any:
    """The result the agent printed for one step (``STEP name result``)."""

    def find() -> tuple[Any] | None:
        data = kernel.call("agent.logs", name=name, offset=0, max_bytes=1 << 20)["data"].decode()
        for line in data.splitlines():
            if line.startswith(f"STEP {step_name} "):
                return (json.loads(line.split(" ", 2)[2].rsplit(" ", 1)[0]),)
        return None

    return poll_for(find, timeout, message=f"{name}'s step {step_name}")[0]


def spawn_probe(kernel: KernelProcess, name: str, steps: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    with kernel.client(timeout=30) as c:
        reply: dict[str, Any] = c.call("agent.spawn", name=name, script=agent_script("relay_probe.py"), args=[json.dumps(steps)], **kw)
    assert reply["success"], reply
    return reply


def test_a_proxied_agent_reaches_its_relay_and_nothing_else(path_kernel, services, host_listener) -> None:
    kernel, claims = path_kernel
    served_before = kernel.call("kernel.info")["spares"]["served"]
    host_port, host_accepted = host_listener
    address = host_address()
    steps = [
        {"op": "env", "name": "env"},
        {"op": "wait", "name": "go1", "path": "GO1"},
        {"op": "connect", "name": "absent", "host": "127.0.0.1", "port": EGRESS_PORT},
        {"op": "wait", "name": "go2", "path": "GO2"},
        {"op": "echo", "name": "large", "port": EGRESS_PORT, "size": 5 << 20},
        {"op": "echo", "name": "empty", "port": EGRESS_PORT, "size": 0},
        {"op": "connect", "name": "host_lo", "host": "127.0.0.1", "port": host_port},
        {"op": "connect", "name": "host_addr", "host": address, "port": host_port},
        {"op": "connect", "name": "host_addr_relay_port", "host": address, "port": EGRESS_PORT},
        {"op": "connect", "name": "llm_port", "host": "127.0.0.1", "port": LLM_PORT},
        {"op": "bind", "name": "bind", "port": 4000},
    ]
    reply = spawn_probe(kernel, "proxied", steps, network=True)
    ipc = channel_dir(kernel, reply["id"])  # the agent waits for files the test makes here
    # -- the relay's Unix side absent: a clean reset, not a hang
    wait_for_kernels_own(ipc / EGRESS_SOCKET)
    with contextlib.suppress(FileNotFoundError):
        (ipc / EGRESS_SOCKET).unlink()
    (ipc / "GO1").touch()
    absent = step(kernel, "proxied", "absent")
    assert not absent["ok"] and absent["error"] == "ConnectionResetError", absent
    # -- present: bytes both ways
    service = services(ipc / EGRESS_SOCKET, theirs_first=False)  # theirs is gone already
    (ipc / "GO2").touch()
    report = read_report(kernel, "proxied", timeout=60)
    assert report["env"]["HTTP_PROXY"] == report["env"]["https_proxy"] == f"http://127.0.0.1:{EGRESS_PORT}"
    assert report["env"]["NO_PROXY"] == "127.0.0.1,localhost" and report["env"]["OPENAI_BASE_URL"] is None
    assert report["large"]["ok"] and report["large"]["value"]["same"], report["large"]
    assert report["empty"]["ok"] and report["empty"]["value"]["received"] == 3, json.dumps(report["empty"])
    assert service.accepted == 2
    poll_for(lambda: service.ended == 2, 10, message="both relayed connections to end")
    # -- nothing else: the host's loopback and addresses are not in its namespace
    for name in ("host_lo", "host_addr", "host_addr_relay_port", "llm_port"):
        assert not report[name]["ok"], (name, report[name])
    assert host_accepted == []
    assert report["net_ns"] != os.readlink("/proc/self/ns/net")
    assert report["inherited_sockets"] == []  # the relays' listeners stay with its init
    if abi_version() >= 4:
        assert report["bind"]["error"] == "PermissionError", report["bind"]  # Landlock: no bind
        assert report["host_lo"]["error"] == "PermissionError"  # Landlock: only the relay ports
        assert report["llm_port"]["error"] == "PermissionError"
    isolation = agent_row(kernel, "proxied")["isolation"]
    assert isolation["network"] == "proxy" and isolation["relays"] == [EGRESS_PORT], isolation
    assert "net" in isolation["namespaces"] and isolation["seccomp"] is True
    assert kernel.call("kernel.info")["spares"]["served"] - served_before == claims


def test_an_agent_without_relays_still_has_no_ip_sockets(kernel, host_listener) -> None:
    port, accepted = host_listener
    spawn_probe(kernel, "plain", [{"op": "connect", "name": "tcp", "host": "127.0.0.1", "port": port}])
    report = read_report(kernel, "plain")
    isolation = agent_row(kernel, "plain")["isolation"]
    assert not report["tcp"]["ok"] and accepted == []
    if isolation["seccomp"]:
        assert report["tcp"]["errno"] == 1, report["tcp"]  # EPERM: no AF_INET socket at all
    assert isolation["network"] == "none" and isolation["relays"] == []


def test_the_connection_bound_resets_the_extra_one_and_g_carries_on(kernel, services) -> None:
    steps = [
        {"op": "wait", "name": "go", "path": "GO"},
        {"op": "hold", "name": "held", "port": EGRESS_PORT, "count": MAX_CONNECTIONS},
        {"op": "connect", "name": "extra", "host": "127.0.0.1", "port": EGRESS_PORT},
        {"op": "recheck", "name": "recheck"},
        {"op": "echo", "name": "after", "port": EGRESS_PORT, "size": 1 << 20},
    ]
    reply = spawn_probe(kernel, "greedy", steps, network=True)
    ipc = channel_dir(kernel, reply["id"])
    service = services(ipc / EGRESS_SOCKET)
    (ipc / "GO").touch()
    report = read_report(kernel, "greedy", timeout=60)
    assert report["held"] == {"ok": True, "value": MAX_CONNECTIONS}, report["held"]
    assert not report["extra"]["ok"] and report["extra"]["error"] == "ConnectionResetError", report["extra"]
    assert report["recheck"] == {"ok": True, "value": True}
    # the held ones still count: the next connection is over the bound as well
    assert not report["after"]["ok"], report["after"]
    assert service.accepted == MAX_CONNECTIONS
    assert agent_row(kernel, "greedy")["state"] == "running"  # G (its init) survived


def test_an_agent_that_kills_itself_leaves_nothing_behind(make_kernel, services) -> None:
    kernel = make_kernel(sandbox="spares_max = 0\nspares_min = 0\n")
    steps = [
        {"op": "wait", "name": "go", "path": "GO"},
        {"op": "hold", "name": "held", "port": EGRESS_PORT, "count": 3},
        {"op": "wait", "name": "armed", "path": "DIE"},
        {"op": "die"},
    ]
    reply = spawn_probe(kernel, "suicidal", steps, network=True)
    ipc = channel_dir(kernel, reply["id"])
    service = services(ipc / EGRESS_SOCKET)
    (ipc / "GO").touch()
    assert step(kernel, "suicidal", "held")["ok"]
    agent_pid = agent_row(kernel, "suicidal")["pid"]
    init_pid = int(next(line.split()[1] for line in Path(f"/proc/{agent_pid}/status").read_text().splitlines() if line.startswith("PPid:")))
    # the relay runs in G, which is in the agent's cgroups: its cost is the agent's
    assert Path(f"/proc/{init_pid}/cgroup").read_text() == Path(f"/proc/{agent_pid}/cgroup").read_text()
    (ipc / "DIE").touch()
    row = poll_for(lambda: (r := agent_row(kernel, "suicidal"))["state"] not in ("running", "starting") and r, 20, message="the agent's end")
    assert row["exit_signal"] == 9, row
    # G went with it, and with G the relayed connections: each reached its end at the service
    poll_for(lambda: not Path(f"/proc/{init_pid}").exists(), 10, message="the sandbox's init to go")
    poll_for(lambda: service.ended == 3, 10, message="the relayed connections to end")
    # (the fixture checks that no process of the agent's uid and no cgroup is left)


def test_the_llm_relay_and_its_environment(make_kernel, services) -> None:
    kernel = make_kernel(LLM_CONFIG)
    steps = [
        {"op": "env", "name": "env"},
        {"op": "wait", "name": "go", "path": "GO"},
        {"op": "echo", "name": "llm", "port": LLM_PORT, "size": 100_000},
        {"op": "connect", "name": "egress", "host": "127.0.0.1", "port": EGRESS_PORT},
    ]
    reply = spawn_probe(kernel, "thinker", steps)  # no network: the LLM relay only
    ipc = channel_dir(kernel, reply["id"])
    services(ipc / LLM_SOCKET)
    (ipc / "GO").touch()
    report = read_report(kernel, "thinker")
    assert report["env"]["OPENAI_BASE_URL"] == f"http://127.0.0.1:{LLM_PORT}/v1"
    assert report["env"]["OPENAI_API_KEY"] == LLM_KEY_PLACEHOLDER and report["env"]["HTTP_PROXY"] is None
    assert report["llm"]["ok"] and report["llm"]["value"]["same"], report["llm"]
    assert not report["egress"]["ok"]
    isolation = agent_row(kernel, "thinker")["isolation"]
    assert isolation["network"] == "none" and isolation["relays"] == [LLM_PORT]
    # The operator's own settings win; an agent without the llm right gets no relay.
    spawn_probe(kernel, "own-key", [{"op": "env", "name": "env"}], env={"OPENAI_BASE_URL": "http://elsewhere/v1", "OPENAI_API_KEY": "k"})
    spawn_probe(kernel, "no-llm", [{"op": "env", "name": "env"}], level="readonly")
    own, none = read_report(kernel, "own-key")["env"], read_report(kernel, "no-llm")["env"]
    assert (own["OPENAI_BASE_URL"], own["OPENAI_API_KEY"]) == ("http://elsewhere/v1", "k")
    assert none["OPENAI_BASE_URL"] is None and agent_row(kernel, "no-llm")["isolation"]["relays"] == []


def test_a_full_network_agent_has_the_hosts_network_and_no_relays(kernel, host_listener) -> None:
    port, accepted = host_listener
    steps = [{"op": "env", "name": "env"}, {"op": "connect", "name": "host", "host": "127.0.0.1", "port": port}]
    spawn_probe(kernel, "full", steps, network="full")
    report = read_report(kernel, "full")
    assert report["host"] == {"ok": True, "value": "host"}, report["host"]
    assert len(accepted) == 1
    assert report["env"]["HTTP_PROXY"] is None and report["net_ns"] == os.readlink("/proc/self/ns/net")
    isolation = agent_row(kernel, "full")["isolation"]
    assert isolation["network"] == "full" and isolation["relays"] == [] and "net" not in isolation["namespaces"]
