"""``/metrics`` on a real kernel, scraped by a real Prometheus server (Debian's ``prometheus``,
installed by ``make ops-setup``) and queried back through its HTTP API; plus the
exporter's bounds seen from outside: invented syscall names, dead agents' series, a taken port."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_script, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics_config(port: int, **extra: object) -> str:
    lines = [f'listen = "127.0.0.1:{port}"', "interval = 0.2", *(f"{k} = {v}" for k, v in extra.items())]
    return "[metrics]\n" + "\n".join(lines) + "\n"


def get(url: str, timeout: float = 5.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a loopback URL the test built
            return str(response.read().decode())
    except OSError:
        return None


def series(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


class Prometheus:
    """A Prometheus server on a temp dir and a free port, scraping one target."""

    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
            f"scrape_configs:\n  - job_name: clove\n    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def api(self, path: str, **params: str) -> dict | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.proc.returncode}")
        body = get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        return json.loads(body) if body else None

    def query(self, expr: str) -> list[dict]:
        answer = self.api("query", query=expr)
        return answer["data"]["result"] if answer and answer.get("status") == "success" else []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no prometheus binary: install the Debian package 'prometheus' (make ops-setup)")
    return binary


@pytest.fixture
def start_prometheus(prometheus_binary: str, tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        p = Prometheus(prometheus_binary, tmp_path, target)
        started.append(p)

        def ready() -> bool:
            if p.proc.poll() is not None:
                log = (tmp_path / "prometheus.log").read_text(errors="replace")[-2000:]
                pytest.skip(f"prometheus cannot run here (exit {p.proc.returncode}): {log}")
            return get(f"{p.url}/-/ready") is not None

        poll_for(ready, 30, interval=0.1, message="prometheus to be ready")
        return p

    yield start
    for p in started:
        p.stop()


def test_prometheus_scrapes_the_kernel_and_sees_two_running_agents(make_kernel, start_prometheus) -> None:  # noqa: ANN001
    port = free_port()
    k: KernelProcess = make_kernel(metrics_config(port))
    prom = start_prometheus(f"127.0.0.1:{port}")

    def target_up() -> bool:
        answer = prom.api("targets")
        targets = answer["data"]["activeTargets"] if answer else []
        return any(t["health"] == "up" for t in targets)

    poll_for(target_up, 30, interval=0.2, message="prometheus to scrape the kernel")
    with k.client() as op:
        for name in ("pa", "pb"):
            op.spawn(name, agent_script("healthy.py"))

    def running(expr: str) -> float:
        result = prom.query(expr)
        return float(result[0]["value"][1]) if result else -1.0

    poll_for(lambda: running('clove_agents{state="running"}') == 2.0, 30, interval=0.2, message="2 running agents in prometheus")
    # A syscall series by name and result, and each agent's own series, read back the same way.
    poll_for(lambda: running('clove_syscalls_total{syscall="agent.spawn",result="ok"}') == 2.0, 15, interval=0.2, message="spawns counted")
    names = {r["metric"]["name"] for r in prom.query('clove_agent_live{job="clove"} == 1')}
    assert names == {"pa", "pb"}
    poll_for(lambda: running('sum(clove_agent_memory_bytes{name=~"pa|pb"})') > 1 << 20, 15, interval=0.2, message="agents' memory")


def test_invented_syscall_names_become_one_label(make_kernel) -> None:  # noqa: ANN001
    port = free_port()
    # Past the journal's denial burst the rest are counted into one record per window: short
    # windows, so the aggregate (and with it the count) arrives within a second.
    k = make_kernel(metrics_config(port) + "[journal]\ndenial_window = 1.0\n")
    with k.client() as op:
        for i in range(200):
            with pytest.raises(Exception, match="unknown syscall"):
                op.call(f"made.up.{i}")

    def counted() -> str | None:
        text = get(f"http://127.0.0.1:{port}/metrics")
        return text if text and 'clove_syscalls_total{result="proto.unknown_syscall",syscall="other"} 200.0' in text else None

    text = poll_for(counted, 15, message="200 unknown syscalls under one label")
    assert "made.up" not in text


def test_a_dead_agents_series_are_dropped_after_forget_after(make_kernel) -> None:  # noqa: ANN001
    port = free_port()
    k = make_kernel(metrics_config(port, forget_after=1.0))
    url = f"http://127.0.0.1:{port}/metrics"
    with k.client() as op:
        op.spawn("brief", agent_script("exit_code.py"), args=["0", "0.5"])
    poll_for(lambda: 'clove_agent_live{agent_id' in (get(url) or "") and 'name="brief"} 0.0' in (get(url) or ""), 20,
             message="the ended agent's series, frozen")  # fmt: skip
    poll_for(lambda: 'name="brief"' not in (get(url) or 'name="brief"'), 20, message="its series to be dropped")
    assert 'clove_agents{state="exited"} 1.0' in (get(url) or "")  # still counted by state
    assert 'clove_agent_exits_total{reason="exited"} 1.0' in (get(url) or "")


def test_a_taken_port_does_not_stop_the_kernel_and_is_retried(make_kernel) -> None:  # noqa: ANN001
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = int(blocker.getsockname()[1])
    try:
        k = make_kernel(metrics_config(port))
        assert k.call("hello")
        entries = k.call("audit.query", category="RESOURCE", limit=1000)["entries"]
    finally:
        blocker.close()
    unavailable = [e for e in entries if e["event_type"] == "metrics.unavailable"]
    assert len(unavailable) == 1 and unavailable[0]["details"]["listen"] == f"127.0.0.1:{port}"  # journaled once, with the reason
    poll_for(lambda: get(f"http://127.0.0.1:{port}/metrics"), 15, message="the exporter to bind on retry")


WIRED = """
[devices.loop]
driver = "loopback"

[interlocks.estop]
trigger = { event = "OBSTACLE" }
actions = [{ device = "loop", op = "write", args = { tag = "safe" } }]
"""


def _value(text: str, line_prefix: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_devices_interlocks_and_an_oom_kill_reach_the_page(make_kernel) -> None:  # noqa: ANN001
    port = free_port()
    k = make_kernel(metrics_config(port) + WIRED)
    url = f"http://127.0.0.1:{port}/metrics"
    poll_for(lambda: 'clove_device_state{device="loop",driver="loopback",state="ready"} 1.0' in (get(url) or ""), 20, message="the device ready")
    with k.client() as op:
        op.call("interlock.engage", name="estop", reason="test")
        op.spawn("hog", agent_script("mem_hog.py"), limits={"memory": "64M"}, restart_policy="on-failure", max_restarts=1)

        def page_shows(prefix: str, least: float) -> bool:
            got = _value(get(url) or "", prefix)
            return got is not None and got >= least

        poll_for(lambda: page_shows('clove_interlock_engaged{interlock="estop"}', 1), 15, message="the interlock engaged")
        assert page_shows('clove_interlock_engagements_total{interlock="estop"}', 1)
        poll_for(lambda: page_shows('clove_device_calls_total{device="loop"}', 1), 15, message="the safe write counted")
        poll_for(lambda: page_shows('clove_agent_exits_total{reason="oom_killed"}', 2), 60, message="two OOM kills (a restart)")
        text = get(url) or ""
        hog = next(line for line in text.splitlines() if line.startswith("clove_agent_restarts_total{") and 'name="hog"' in line)
        assert float(hog.rsplit(" ", 1)[1]) == 1.0
        assert any(line.startswith("clove_agent_oom_kills_total{") and 'name="hog"' in line and line.endswith(" 2.0") for line in text.splitlines())
        op.call("interlock.release", name="estop")
    poll_for(lambda: _value(get(url) or "", 'clove_interlock_engaged{interlock="estop"}') == 0.0, 15, message="the release")


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError("no Threads line")


def test_a_connection_flood_cannot_grow_the_kernel(make_kernel) -> None:  # noqa: ANN001
    from clove.kernel.services.prometheus_http import MAX_CONNECTIONS

    port = free_port()
    k = make_kernel(metrics_config(port))
    url = f"http://127.0.0.1:{port}/metrics"
    poll_for(lambda: get(url), 10, message="the exporter")
    before = _threads(k.pid)
    held: list[socket.socket] = []
    try:
        for _ in range(100):  # connections that never send a request
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                pass
        assert len(held) >= 50  # a connect may time out while the backlog is full: fine, fewer to hold

        def closed_by_server() -> bool:
            return sum(_at_eof(s) for s in held) >= len(held) - MAX_CONNECTIONS

        poll_for(closed_by_server, 15, message="the server to close the connections beyond its bound")
        assert k.call("hello")  # the kernel's loop carries on
        assert _threads(k.pid) <= before + MAX_CONNECTIONS
    finally:
        for s in held:
            s.close()
    expected = len(held) - MAX_CONNECTIONS

    def refused_counted() -> float | None:  # the page is reused for up to an interval: poll
        text = get(url)
        refused = _value(text, "clove_metrics_refused_connections_total") if text is not None else None
        return refused if refused is not None and refused >= expected else None

    poll_for(refused_counted, 20, message=f"a scrape once the flood is gone counting at least {expected} refused connections")


def _at_eof(sock: socket.socket) -> bool:
    sock.setblocking(False)  # a socket with a timeout would wait for data first
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False  # open, nothing to read: a connection the server holds
    except ConnectionError:
        return True  # reset by the server: closed too
