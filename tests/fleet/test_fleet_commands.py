"""Signed fleet commands end to end: `clove fleet ...` (or raw signed bytes) through a real
nats-server with the example hub config's permissions to real kernels, each deciding for
itself (docs/fleet.md, "Commands")."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clove.fleet.commands import generate_key, key_id, public_key_text, sign
from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_script, requires_root
from tests.fleet.conftest import PASSWORDS, Hub, journal_events

pytestmark = [pytest.mark.integration, requires_root]


def _keys(tmp_path: Path) -> dict[str, Path]:
    """Two operators' key files: the site team (e-stop) and release engineering (agents)."""
    keys = {name: tmp_path / f"{name}.pem" for name in ("site", "release")}
    for path in keys.values():
        generate_key(path)
    return keys


def _board(hub: Hub, board: str, keys: dict[str, Path]) -> str:
    from clove.fleet.commands import load_private_key

    def public(name: str) -> str:
        return public_key_text(load_private_key(keys[name]).public_key())

    return hub.board_config(board, lost_after=15.0) + f"""command_window = 30.0

[fleet.operators.site-team]
public_key = "{public("site")}"
may = ["estop", "estop.release"]

[fleet.operators.release]
public_key = "{public("release")}"
may = ["kill", "pause", "resume"]

[interlocks.halt]
trigger = {{ event = "HALT" }}
actions = [{{ pause = ["nobody"] }}]
"""


def _engaged(k: KernelProcess) -> list[bool]:
    return [i["engaged"] for i in k.call("interlock.list")["interlocks"]]


def _connected(k: KernelProcess) -> bool:
    return "fleet.connected" in journal_events(k.state_dir)


def _command_records(k: KernelProcess) -> list[dict[str, Any]]:
    lines = (k.state_dir / "journal.jsonl").read_bytes().split(b"\n")[:-1]
    return [r["details"] for r in map(json.loads, lines) if r["event_type"] == "fleet.command"]


def _ask(hub: Hub, subject: str, *wires: bytes) -> list[dict[str, Any]]:
    """Publish each wire message as the operator user and return the one answer to each."""

    async def main() -> list[dict[str, Any]]:
        nc = await nats.connect(hub.url, user="operator", password=PASSWORDS["operator"], inbox_prefix="_INBOX_operator", allow_reconnect=False)
        try:
            return [json.loads((await nc.request(subject, wire, timeout=10)).data) for wire in wires]
        finally:
            await nc.close()

    return asyncio.run(main())


def test_fleet_estop_engages_and_releases_every_board(hub: Hub, make_kernel: Callable[..., KernelProcess], tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    boards = {name: make_kernel(_board(hub, name, keys)) for name in ("board-a", "board-b")}
    for k in boards.values():
        poll_for(lambda k=k: _connected(k), 15, message="the board to join the fleet")
    poll_for(lambda: {"board-a", "board-b"} <= {b for b, row in hub.boards().items() if row["state"] == "up"}, 15, interval=0.1, message="both boards up in the bucket")

    estop = hub.fleet_cli("estop", "--all", "--reason", "smoke", "--key", str(keys["site"]))
    assert estop.returncode == 0, estop.stdout + estop.stderr
    assert estop.stdout.splitlines() == [f"{b}: accepted estop: interlock.engage ok" for b in ("board-a", "board-b")], estop.stdout
    for k in boards.values():  # --all returned once both answered, each after engaging
        assert _engaged(k) == [True]
    engaged = boards["board-a"].call("interlock.list")["interlocks"][0]
    assert "fleet estop by site-team: smoke" in json.dumps(engaged)
    (record,) = _command_records(boards["board-b"])
    assert record["key_id"] == key_id(Ed25519PrivateKey.from_private_bytes(_raw(keys["site"])).public_key())
    assert (record["operator"], record["command"], record["decision"], record["code"]) == ("site-team", "estop", "allowed", "ok")
    # The action itself is journaled as a syscall, marked as a fleet command's (not a replay's).
    engage = [r for r in boards["board-b"].call("audit.query", limit=1000)["entries"] if r.get("syscall") == "interlock.engage"]
    assert engage and engage[-1]["details"].get("fleet") is True and "rerun" not in engage[-1]["details"], engage

    release = hub.fleet_cli("estop", "--board", "board-b", "--release", "--key", str(keys["site"]), "--json")
    assert release.returncode == 0, release.stdout + release.stderr
    assert json.loads(release.stdout)["answers"]["board-b"]["results"] == [{"call": "interlock.release", "ok": True}]
    poll_for(lambda: _engaged(boards["board-b"]) == [False], 5, message="board-b released")
    assert _engaged(boards["board-a"]) == [True]  # addressed to board-b only

    refused = hub.fleet_cli("estop", "--all", "--release", "--key", str(keys["release"]))  # a key without the right
    assert refused.returncode == 1
    assert refused.stdout.count("refused fleet.not_allowed: key 'release' may not give 'estop.release'") == 2, refused.stdout
    assert _engaged(boards["board-a"]) == [True]


def _raw(path: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization

    from clove.fleet.commands import load_private_key

    return load_private_key(path).private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def test_refused_commands_are_journaled_and_kill_stops_one_agent(hub: Hub, make_kernel: Callable[..., KernelProcess], tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    a = make_kernel(_board(hub, "board-a", keys))
    with a.client() as c:
        c.spawn("worker-1", agent_script("healthy.py"))
        c.spawn("worker-2", agent_script("healthy.py"))
    poll_for(lambda: _connected(a), 15, message="the board to join the fleet")
    subject = "clove.cmd.board.board-a"
    site = Ed25519PrivateKey.from_private_bytes(_raw(keys["site"]))
    stranger = Ed25519PrivateKey.generate()

    once = sign(site, "estop", board="board-a", args={"reason": "once"}).to_wire()
    first, replayed = _ask(hub, subject, once, once)  # the same signed bytes, twice
    assert first["accepted"] is True and _engaged(a) == [True]
    assert (replayed["accepted"], replayed["code"], replayed["board"]) == (False, "fleet.replayed", "board-a")

    (unknown,) = _ask(hub, subject, sign(stranger, "estop", board="board-a").to_wire())
    assert (unknown["accepted"], unknown["code"]) == (False, "fleet.unknown_key")
    (stale,) = _ask(hub, subject, sign(site, "estop.release", board="board-a", now=time.time() - 120).to_wire())
    assert stale["code"] == "fleet.stale" and "window ±30 s" in stale["reason"]
    (kill,) = _ask(hub, subject, sign(site, "kill", board="board-a", args={"agent": "worker-1"}).to_wire())
    assert kill["code"] == "fleet.not_allowed"
    (garbage,) = _ask(hub, subject, b"not a command")
    assert garbage["code"] == "fleet.malformed"
    (bad_args,) = _ask(hub, subject, sign(site, "estop", board="board-a", args={"reason": 7}).to_wire())
    assert bad_args["code"] == "fleet.malformed" and "'reason'" in bad_args["reason"]
    assert _engaged(a) == [True]  # none of the refused ones released it

    records = {(r["code"], r["decision"]): r for r in _command_records(a)}
    assert records[("fleet.unknown_key", "denied")]["key_id"] == key_id(stranger.public_key())
    assert records[("fleet.not_allowed", "denied")]["operator"] == "site-team"
    assert {("ok", "allowed"), ("fleet.replayed", "denied"), ("fleet.stale", "denied"), ("fleet.malformed", "denied")} <= set(records)

    killed = hub.fleet_cli("kill", "board-a/worker-1", "--key", str(keys["release"]))
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert killed.stdout.strip() == "board-a: accepted kill: agent.kill ok"
    with a.client() as c:
        states = {r["name"]: r["state"] for r in c.list_agents()}
    assert "worker-1" not in states or states["worker-1"] not in ("running", "starting"), states
    assert states["worker-2"] == "running"

    missing = hub.fleet_cli("pause", "board-a/nobody", "--key", str(keys["release"]))
    assert missing.returncode == 1 and "agent.pause failed (notfound" in missing.stdout, missing.stdout
    lost = hub.fleet_cli("kill", "board-z/worker-2", "--key", str(keys["release"]), "--wait", "0.5")
    assert lost.returncode == 1 and lost.stdout.strip() == "board-z: no answer within 0.5 s"
    bad_key = hub.fleet_cli("kill", "board-a/worker-2", "--key", str(tmp_path / "none.pem"))
    assert bad_key.returncode == 1 and "none.pem" in bad_key.stderr and "Traceback" not in bad_key.stderr


def test_the_link_drops_oversized_commands_and_says_so(hub: Hub, make_kernel: Callable[..., KernelProcess], tmp_path: Path) -> None:
    a = make_kernel(_board(hub, "board-a", _keys(tmp_path)))
    poll_for(lambda: _connected(a), 15, message="the board to join the fleet")

    async def flood() -> None:
        nc = await nats.connect(hub.url, user="operator", password=PASSWORDS["operator"], allow_reconnect=False)
        try:
            await nc.publish("clove.cmd.all", b"x" * (65 << 10))
            await nc.flush()
        finally:
            await nc.close()

    asyncio.run(flood())

    def dropped() -> list[dict[str, Any]]:
        lines = (a.state_dir / "journal.jsonl").read_bytes().split(b"\n")[:-1]
        return [r for r in map(json.loads, lines) if r["event_type"] == "fleet.error" and "dropped" in r["details"].get("message", "")]

    (record,) = poll_for(dropped, 10, message="the drop journaled")
    assert "over 65536 bytes" in record["details"]["message"] and record["details"]["dropped_commands"] == 1
    assert _command_records(a) == []
