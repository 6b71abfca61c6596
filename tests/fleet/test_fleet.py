"""Boards in a fleet: real kernels joined to a real nats-server (JetStream) through the example
hub config's per-board users; read back as an operator (docs/fleet.md)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from collections.abc import Callable

import pytest

from clove.fleet.chain import ChainCheck
from clove.kernel.audit.format import GENESIS_HASH, record_hash
from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_script, requires_root
from tests.fleet.conftest import Hub, free_port, journal_events, journal_ids

pytestmark = [pytest.mark.integration, requires_root]


def _agents(row: dict) -> dict[str, str]:
    return {a["name"]: a["state"] for a in (row.get("entry") or {}).get("agents", [])}


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def _verified(hub: Hub, board: str) -> dict:
    check = ChainCheck(record_hash, GENESIS_HASH)
    for record in hub.records(board):
        check.add(record)
    return check.report.to_dict()


def _caught_up(hub: Hub, board: str, last_id: int) -> dict | None:
    report = _verified(hub, board)
    return report if (report["last_id"] or 0) >= last_id else None


def test_inventory_appears_and_a_stopped_board_is_lost(hub: Hub, make_kernel: Callable[..., KernelProcess]) -> None:
    metrics_port = free_port()
    # board-a must read "up" throughout, even with a heartbeat late on a loaded machine; board-b
    # must read "lost" soon after it stops.
    a = make_kernel(hub.board_config("board-a", lost_after=15.0) + f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\ninterval = 0.2\n')
    b = make_kernel(hub.board_config("board-b"))
    with a.client() as c:
        c.spawn("ticker", agent_script("healthy.py"))

    def inventory() -> dict | None:
        boards = hub.boards()
        ready = "board-a" in boards and "board-b" in boards and _agents(boards["board-a"]).get("ticker") == "running"
        return boards if ready else None

    boards = poll_for(inventory, 20, interval=0.2, message="both boards' inventory with the ticker running")
    entry_a, entry_b = boards["board-a"]["entry"], boards["board-b"]["entry"]
    assert boards["board-a"]["state"] == "up" and boards["board-b"]["state"] == "up"
    assert _agents(boards["board-b"]) == {}
    assert entry_a["kernel"]["pid"] == a.pid and entry_b["kernel"]["pid"] == b.pid
    assert entry_a["isolation"]["backend"] and entry_a["interlocks_engaged"] == {} and entry_a["journal_last_id"] > 0
    assert entry_a["lost_after"] == 15.0 and entry_b["lost_after"] == 2.0
    # The Prometheus exporter reads the link's state (clove_fleet_connected).
    poll_for(lambda: "clove_fleet_connected 1.0" in _metrics(metrics_port), 10, interval=0.1, message="clove_fleet_connected 1")

    b.stop()
    boards = poll_for(lambda: (r := hub.boards()) and r["board-b"]["state"] == "lost" and r, 15, interval=0.2, message="board-b to show as lost")
    assert boards["board-a"]["state"] == "up"
    ps = hub.fleet_cli("ps")
    assert ps.returncode == 0, ps.stderr
    line_b = next(line for line in ps.stdout.splitlines() if line.startswith("board-b"))
    assert "LOST" in line_b
    line_a = next(line for line in ps.stdout.splitlines() if line.startswith("board-a"))
    assert "ticker:running" in line_a and "up" in line_a


def test_journal_ships_in_order_and_verifies_through_a_hub_crash(hub: Hub, make_kernel: Callable[..., KernelProcess]) -> None:
    a = make_kernel(hub.board_config("board-a"))
    with a.client() as c:
        c.spawn("ticker", agent_script("healthy.py"))  # ~100 journal records a second
    poll_for(lambda: _caught_up(hub, "board-a", 50), 20, interval=0.2, message="50 records shipped")

    hub.kill()  # mid-stream: the board keeps journaling
    poll_for(lambda: "fleet.disconnected" in journal_events(a.state_dir), 10, message="the board to journal the loss")
    with a.client() as c:
        assert {r["name"]: r["state"] for r in c.list_agents()}["ticker"] == "running"
    written = journal_ids(a.state_dir)[-1]
    poll_for(lambda: journal_ids(a.state_dir)[-1] > written + 100, 10, message="100 more records while the hub is down")

    hub.start()  # the same port and store
    target = journal_ids(a.state_dir)[-1] + 20
    report = poll_for(lambda: _caught_up(hub, "board-a", target), 30, interval=0.3, message="the board to catch up")
    assert report["ok"], report["problems"]
    assert report["duplicates"] == 0 and report["missing"] == 0 and report["first_id"] == 1 and report["records"] == report["last_id"]
    events = [r["event_type"] for r in hub.records("board-a")]
    assert "fleet.disconnected" in events and events.count("fleet.connected") >= 2

    cli = hub.fleet_cli("audit", "--board", "board-a", "--verify", "--json")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert json.loads(cli.stdout)["ok"] is True


def test_a_restarted_board_resumes_without_duplicates(hub: Hub, make_kernel: Callable[..., KernelProcess]) -> None:
    config = hub.board_config("board-c")
    first = make_kernel(config)
    poll_for(lambda: "fleet.connected" in journal_events(first.state_dir), 15, message="the board to connect")
    written = journal_ids(first.state_dir)[-1]
    poll_for(lambda: _caught_up(hub, "board-c", written), 20, interval=0.2, message="the first run's records shipped")
    first.stop()
    position = json.loads((first.state_dir / "fleet" / "shipped.json").read_text())
    assert position["board"] == "board-c" and position["seq"] >= written

    second = make_kernel(config, state_dir=first.state_dir)  # the same state dir: the same journal
    poll_for(lambda: "fleet.connected" in journal_events(second.state_dir)[position["seq"]:], 15, message="the restarted board to connect")
    target = journal_ids(second.state_dir)[-1]
    report = poll_for(lambda: _caught_up(hub, "board-c", target), 20, interval=0.2, message="the restarted board to ship the rest")
    assert report["ok"], report["problems"]
    assert report["duplicates"] == 0 and report["records"] == report["last_id"] and report["first_id"] == 1
    assert "kernel.stopped" in [r["event_type"] for r in hub.records("board-c")]  # written after the first run's link stopped


def test_a_board_with_no_hub_boots_and_runs_agents(make_kernel: Callable[..., KernelProcess]) -> None:
    port = free_port()  # nothing listens there
    k = make_kernel(f'[fleet]\nservers = ["nats://127.0.0.1:{port}"]\nboard = "lonely"\n')
    with k.client() as c:
        c.spawn("ticker", agent_script("healthy.py"))
        poll_for(lambda: {r["name"]: r["state"] for r in c.list_agents()}.get("ticker") == "running", 15, message="the ticker to run")
    poll_for(lambda: "fleet.unreachable" in journal_events(k.state_dir), 10, message="fleet.unreachable in the journal")
    with k.client() as c:
        assert c.noop("still here") is not None

    # The link's helper process dies: journaled, and another takes its place.
    helper = _link_helper(k.pid)
    os.kill(helper, signal.SIGKILL)
    poll_for(lambda: "fleet.error" in journal_events(k.state_dir), 10, message="the helper's death journaled")
    poll_for(lambda: (pid := _link_helper(k.pid)) and pid != helper, 10, message="a new link helper")
    with k.client() as c:
        assert {r["name"]: r["state"] for r in c.list_agents()}["ticker"] == "running"


def _link_helper(kernel_pid: int) -> int | None:
    """The pid of the kernel's fleet link helper (``python -m clove.kernel.services.fleet``)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[1]) == kernel_pid and b"clove.kernel.services.fleet" in cmdline:
            return int(entry)
    return None


def test_a_board_user_cannot_write_another_boards_subjects(hub: Hub) -> None:
    import nats
    from nats.js.errors import NoStreamResponseError

    async def attempt() -> tuple[bool, int]:
        errors: list[Exception] = []

        async def on_error(err: Exception) -> None:
            errors.append(err)

        nc = await nats.connect(hub.url, user="board-a", password="change-me-board-a", inbox_prefix="_INBOX_board-a", error_cb=on_error, allow_reconnect=False)
        js = nc.jetstream(timeout=1.5)
        ack = await js.publish("clove.audit.board-a", b"{}")  # its own subject: stored
        refused = False
        try:
            await js.publish("clove.audit.board-b", b'{"id": 1}')
        except (TimeoutError, asyncio.TimeoutError, NoStreamResponseError, nats.errors.TimeoutError):
            refused = True
        await nc.close()
        return refused and any("ermissions" in str(e) for e in errors), ack.seq

    refused, seq = asyncio.run(attempt())
    assert refused and seq >= 1
    assert hub.records("board-b") == []
