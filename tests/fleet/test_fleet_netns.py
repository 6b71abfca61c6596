"""Three boards, each in its own network namespace on a bridge where the hub listens
(:mod:`clove.testing.netfleet`): one has its cable pulled for 30 s and must keep running,
keep its journal, and catch up (docs/fleet.md, "Tests and figures")."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clove.fleet.chain import ChainCheck
from clove.fleet.commands import generate_key, load_private_key, public_key_text
from clove.kernel.audit.format import GENESIS_HASH, record_hash
from clove.testing.kernel import KernelProcess, poll_for
from clove.testing.netfleet import NetFabric, unavailable
from tests.conftest import agent_script, requires_root
from tests.fleet.conftest import Hub, journal_ids, running_hub

pytestmark = [pytest.mark.integration, requires_root, pytest.mark.timeout(180)]

BOARDS = ("board-a", "board-b", "board-c")
CUT = "board-c"
CUT_SECONDS = 30.0
#: Short, so the hub's readers call the cut board lost well inside the cut.
LOST_AFTER = 8.0
#: Short too: a command the hub could not deliver in time is refused, not acted on late.
COMMAND_WINDOW = 10.0


@pytest.fixture
def fabric() -> Iterator[NetFabric]:
    why = unavailable()
    if why is not None:
        pytest.skip(why)
    with NetFabric() as f:
        yield f
        f.close()
        assert f.leftovers() == []


@pytest.fixture
def net_hub(fabric: NetFabric) -> Iterator[Hub]:
    with running_hub(fabric.hub_address) as h:
        yield h


def _config(hub: Hub, board: str, site_key: Path) -> str:
    public = public_key_text(load_private_key(site_key).public_key())
    return hub.board_config(board, heartbeat=0.5, lost_after=LOST_AFTER) + f"""command_window = {COMMAND_WINDOW}

[fleet.operators.site-team]
public_key = "{public}"
may = ["estop", "estop.release"]

[interlocks.halt]
trigger = {{ event = "HALT" }}
actions = [{{ pause = ["nobody"] }}]
"""


@pytest.fixture
def boards(
    fabric: NetFabric, net_hub: Hub, make_kernel: Callable[..., KernelProcess], tmp_path: Path
) -> dict[str, KernelProcess]:
    """Three boards in their namespaces, each running a ticker (a real agent making ~100
    syscalls a second, each a journal record). Torn down before the hub and the fabric."""
    site_key = tmp_path / "site.pem"
    generate_key(site_key)
    made = {}
    for board in BOARDS:
        fabric.add_board(board)
        config = _config(net_hub, board, site_key)
        k = fabric.run_in(board, lambda config=config: make_kernel(config))  # type: ignore[misc]
        with k.client() as c:
            c.spawn("ticker", agent_script("healthy.py"))
        made[board] = k
    return made


def _report(hub: Hub, board: str) -> dict[str, Any]:
    check = ChainCheck(record_hash, GENESIS_HASH)
    for record in hub.records(board):
        check.add(record)
    return check.report.to_dict()


def _central_last(hub: Hub, board: str) -> int:
    return int(_report(hub, board)["last_id"] or 0)


def _engaged(k: KernelProcess) -> list[bool]:
    return [i["engaged"] for i in k.call("interlock.list")["interlocks"]]


def _command_records(k: KernelProcess) -> list[dict[str, Any]]:
    lines = (k.state_dir / "journal.jsonl").read_bytes().split(b"\n")[:-1]
    return [r["details"] for r in map(json.loads, lines) if r["event_type"] == "fleet.command"]


def _fleet_events(k: KernelProcess) -> list[tuple[str, dict[str, Any]]]:
    lines = (k.state_dir / "journal.jsonl").read_bytes().split(b"\n")[:-1]
    return [(r["event_type"], r["details"]) for r in map(json.loads, lines) if r["event_type"].startswith("fleet.")]


def _running(k: KernelProcess) -> bool:
    with k.client() as c:
        return {r["name"]: r["state"] for r in c.list_agents()}.get("ticker") == "running"


def test_a_board_cut_off_for_30_s_keeps_running_and_catches_up(
    fabric: NetFabric, net_hub: Hub, boards: dict[str, KernelProcess], tmp_path: Path
) -> None:
    hub, cut = net_hub, boards[CUT]

    def all_up() -> dict[str, Any] | None:
        rows = hub.boards()
        ready = all(rows.get(b, {}).get("state") == "up" and {a["name"]: a["state"] for a in rows[b]["entry"]["agents"]}.get("ticker") == "running" for b in BOARDS)
        return rows if ready else None

    poll_for(all_up, 30, interval=0.2, message="every board's inventory with its ticker running")
    poll_for(lambda: all(_central_last(hub, b) > 50 for b in BOARDS), 20, interval=0.3, message="every board shipping")

    fabric.cut(CUT)
    cut_at = time.monotonic()
    written_at_cut = journal_ids(cut.state_dir)[-1]
    others_at_cut = {b: _central_last(hub, b) for b in BOARDS if b != CUT}

    # The hub's readers call it lost; the others stay up.
    seen: list[dict[str, tuple[str, float]]] = []

    def cut_lost_others_up() -> bool:
        rows = hub.boards()
        seen.append({b: (rows[b]["state"], round(rows[b]["heartbeat_age"], 1)) for b in BOARDS})
        return all(rows[b]["state"] == ("lost" if b == CUT else "up") for b in BOARDS)

    try:
        poll_for(cut_lost_others_up, LOST_AFTER + 15, interval=0.2, message="the cut board shown lost, the others up")
    except TimeoutError as err:
        raise AssertionError(f"{err}; the last readings (state, heartbeat age): {seen[-3:]}") from None

    # An e-stop for the whole fleet while it is cut off: the reachable boards engage at once.
    site_key = str(tmp_path / "site.pem")
    during = hub.fleet_cli("estop", "--all", "--reason", "during the cut", "--key", site_key, "--wait", "5")
    assert during.returncode == 0, during.stdout + during.stderr  # it waits only for boards shown up
    assert during.stdout.splitlines() == [f"{b}: accepted estop: interlock.engage ok" for b in BOARDS if b != CUT], during.stdout
    assert all(_engaged(boards[b]) == [True] for b in BOARDS if b != CUT) and _engaged(cut) == [False]

    # Until the cable is back: the cut board runs its agent and journals; it ships nothing.
    while time.monotonic() - cut_at < CUT_SECONDS:
        assert _running(cut)
        time.sleep(1.0)
    written_at_restore = journal_ids(cut.state_dir)[-1]
    assert written_at_restore > written_at_cut + 300, (written_at_cut, written_at_restore)  # the ticker kept going (~100/s idle)
    central_during = _central_last(hub, CUT)
    assert central_during < written_at_cut + 600, (central_during, written_at_cut)  # at most what was in flight
    for b, before in others_at_cut.items():
        assert _central_last(hub, b) > before + 300, b  # the others kept shipping

    fabric.restore(CUT)
    restored_at = time.monotonic()
    poll_for(lambda: _central_last(hub, CUT) >= written_at_restore, 60, interval=0.2, message="the cut board to catch up")
    catch_up = time.monotonic() - restored_at
    backlog = written_at_restore - central_during
    print(f"\ncatch-up after a {CUT_SECONDS:.0f} s cut: {catch_up:.2f} s for {backlog} records ({backlog / catch_up:.0f} records/s)")

    # Sent after it is back, an e-stop reaches every board. The one sent during the cut has not
    # engaged the cut board: commands are not queued (core NATS, not the stream). If the hub
    # had written it into the board's connection and that connection outlived the cut, it
    # arrives late and is refused as stale; if the connection was replaced, it never arrives.
    poll_for(lambda: hub.boards()[CUT]["state"] == "up", 10, interval=0.2, message="the cut board shown up again")
    assert _engaged(cut) == [False]
    after = hub.fleet_cli("estop", "--all", "--reason", "after the cut", "--key", site_key, "--wait", "10")
    assert after.returncode == 0, after.stdout + after.stderr
    assert after.stdout.splitlines() == [f"{b}: accepted estop: interlock.engage ok" for b in BOARDS], after.stdout
    assert all(_engaged(k) == [True] for k in boards.values())

    # Every record once, in order: stop the ticker, then the stream equals the board's journal.
    with cut.client() as c:
        c.kill("ticker")

    def stream_equals_journal() -> list[int]:
        local = journal_ids(cut.state_dir)
        return local if local == [r["id"] for r in hub.records(CUT)] else []

    ids = poll_for(stream_equals_journal, 30, interval=0.3, message="the stream to equal the board's journal")
    report = _report(hub, CUT)
    assert report["ok"] and report["duplicates"] == 0 and report["missing"] == 0, report
    assert (report["first_id"], report["last_id"], report["records"]) == (1, ids[-1], len(ids))
    audit = hub.fleet_cli("audit", "--board", CUT, "--verify", "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert json.loads(audit.stdout)["ok"] is True

    # The board knew it was not shipping (journaled), and the e-stop from during the cut, if it
    # arrived at all, was refused as stale: the only e-stop it carried out is the later one.
    events = _fleet_events(cut)
    assert any(e == "fleet.error" and "no acknowledgement" in d.get("message", "") for e, d in events), events
    decided = [(d["decision"], d["code"], d["args"].get("reason")) for e, d in events if e == "fleet.command"]
    assert decided in ([("allowed", "ok", "after the cut")], [("denied", "fleet.stale", "during the cut"), ("allowed", "ok", "after the cut")]), decided
    print("the e-stop sent during the cut:", "arrived late, refused as stale" if len(decided) == 2 else "never arrived")
    replaced = any(e == "fleet.disconnected" for e, _ in events)
    assert len(decided) == 2 or replaced, events  # it is lost only with the connection that held it
    hub_closed = any("Slow Consumer" in line and f"clove-{CUT}" in line for line in (hub.dir / "hub.log").read_text().splitlines())
    print(f"the cut board's connection: {'replaced' if replaced else 'kept'}{' (the hub closed it: write deadline)' if hub_closed else ''}")


def test_the_fabric_removes_what_it_made_even_after_a_failure() -> None:
    """Namespaces, veths, the bridge and the processes left in them go, also when the test
    body fails; a fabric whose creator died without cleaning up goes with the next one."""
    import subprocess

    from clove.testing import netfleet

    why = unavailable()
    if why is not None:
        pytest.skip(why)
    creator = subprocess.Popen(["true"])  # a pid that has exited: a creator that died
    creator.wait()
    stale = f"clv{creator.pid}x0"
    netfleet._ip("netns", "add", f"{stale}-board-z")
    netfleet._ip("link", "add", f"{stale}b", "type", "bridge")
    sleeper: list[subprocess.Popen[bytes]] = []
    made: list[NetFabric] = []

    def failing_test() -> None:
        with NetFabric() as fabric:
            made.append(fabric)
            assert f"{stale}-board-z" not in netfleet._our_names() and f"{stale}b" not in netfleet._our_names()
            fabric.add_board("board-a")
            fabric.add_board("board-b")
            sleeper.append(fabric.run_in("board-a", lambda: subprocess.Popen(["sleep", "600"])))
            assert sleeper[0].pid in fabric.pids("board-a") and fabric.pids("board-b") == []
            t = fabric.tag  # the bridge, the veth ends in the root namespace, the namespaces
            assert sorted(fabric.leftovers()) == sorted([f"{t}b", f"{t}h0", f"{t}h1", f"{t}-board-a", f"{t}-board-b"])
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        failing_test()
    assert made[0].leftovers() == []
    assert sleeper[0].wait(10) == -9  # ended by its pid, found in the namespace
