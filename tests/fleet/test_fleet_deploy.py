"""``clove fleet deploy`` end to end: desired states through a real nats-server (the example hub
config's permissions) to real kernels, each deciding, reconciling and reporting for itself
(docs/fleet.md, "Deploy")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clove.fleet.commands import generate_key, key_id, load_private_key, public_key_text
from clove.fleet.deploy import MAX_AGENTS, MAX_DESIRED_BYTES, DeployNames, sign_desired
from clove.fleet.deploy_store import read_status
from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_script, requires_root
from tests.fleet.conftest import PASSWORDS, Hub, journal_events

pytestmark = [pytest.mark.integration, requires_root]

WAITER = agent_script("msg_wait.py")  # blocks in a receive: a quiet agent that runs until stopped
NAMES = DeployNames("clove")


def _keys(tmp_path: Path) -> dict[str, Path]:
    keys = {name: tmp_path / f"{name}.pem" for name in ("release", "site")}
    for path in keys.values():
        generate_key(path)
    return keys


def _board(hub: Hub, board: str, keys: dict[str, Path], extra: str = "") -> str:
    def public(name: str) -> str:
        return public_key_text(load_private_key(keys[name]).public_key())

    return hub.board_config(board, lost_after=15.0) + f"""
[fleet.operators.release]
public_key = "{public("release")}"
may = ["deploy"]

[fleet.operators.site-team]
public_key = "{public("site")}"
may = ["estop"]
{extra}"""


def _config(tmp_path: Path, name: str, agents: dict[str, str]) -> str:
    """A deploy config: agent name → its one argument."""
    path = tmp_path / name
    path.write_text("".join(f'[agents.{a}]\nscript = "{WAITER}"\nargs = ["{arg}"]\n' for a, arg in agents.items()))
    return str(path)


def _running(k: KernelProcess) -> dict[str, int]:
    """Live agents: name → id."""
    return {a["name"]: a["id"] for a in k.call("agent.list")["agents"] if a["state"] in ("running", "starting")}


def _watching(k: KernelProcess) -> bool:
    return "fleet.connected" in journal_events(k.state_dir)


def _deploy_records(k: KernelProcess) -> list[dict[str, Any]]:
    lines = (k.state_dir / "journal.jsonl").read_bytes().split(b"\n")[:-1]
    return [r for r in map(json.loads, lines) if r["event_type"] == "fleet.deploy"]


def _on_hub(hub: Hub, body: Callable[[Any], Any]) -> Any:
    async def main() -> Any:
        nc = await nats.connect(hub.url, user="operator", password=PASSWORDS["operator"], allow_reconnect=False)
        try:
            return await body(nc.jetstream(timeout=5))
        finally:
            await nc.close()

    return asyncio.run(main())


def _status(hub: Hub, board: str) -> dict[str, Any] | None:
    async def body(js: Any) -> dict[str, Any] | None:
        return await read_status(js, NAMES, board)

    return _on_hub(hub, body)  # type: ignore[no-any-return]


def _put(hub: Hub, board: str, wire: bytes) -> int:
    """Write ``wire`` as the board's desired state, as the operator user could; its revision."""

    async def body(js: Any) -> int:
        return int((await js.publish(NAMES.subject(NAMES.desired_key(board)), wire)).seq)

    return _on_hub(hub, body)  # type: ignore[no-any-return]


def _report_for(hub: Hub, board: str, revision: int) -> dict[str, Any]:
    def reported() -> dict[str, Any]:
        status = _status(hub, board)
        return status if status is not None and status.get("revision", 0) >= revision else {}

    return poll_for(reported, 15, interval=0.1, message=f"{board}'s report on revision {revision}")


def test_deploy_starts_replaces_stops_and_leaves_the_boards_own_agents(hub: Hub, make_kernel: Callable[..., KernelProcess], tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    own = f'\n[agents.local]\nscript = "{WAITER}"\nargs = ["600"]\n'  # started by board-a's own config
    boards = {"board-a": make_kernel(_board(hub, "board-a", keys, own)), "board-b": make_kernel(_board(hub, "board-b", keys))}
    for k in boards.values():
        poll_for(lambda k=k: _watching(k), 15, message="the board's deploy watcher up")

    v1 = _config(tmp_path, "v1.toml", {"ticker": "600", "worker": "600"})
    first = hub.fleet_cli("deploy", v1, "--boards", "board-a,board-b", "--key", str(keys["release"]))
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].split() == ["BOARD", "GEN", "AGENT", "ACTION", "DETAIL"]
    assert sorted(line.split()[:4] for line in lines[1:]) == [[b, "1", a, "started"] for b in ("board-a", "board-b") for a in ("ticker", "worker")]
    before = {b: _running(k) for b, k in boards.items()}
    assert before["board-a"].keys() == {"local", "ticker", "worker"} and before["board-b"].keys() == {"ticker", "worker"}

    # v2: ticker changes, worker goes, local is the board's own on board-a (refused there), new on board-b.
    v2 = _config(tmp_path, "v2.toml", {"ticker": "601", "local": "600"})
    second = hub.fleet_cli("deploy", v2, "--boards", "board-a,board-b", "--key", str(keys["release"]), "--json")
    assert second.returncode == 1, second.stdout + second.stderr  # one agent refused
    out = json.loads(second.stdout)
    actions = {b: {a["name"]: a["action"] for a in out["reports"][b]["agents"]} for b in ("board-a", "board-b")}
    assert actions == {
        "board-a": {"ticker": "replaced", "local": "refused", "worker": "stopped"},
        "board-b": {"ticker": "replaced", "local": "started", "worker": "stopped"},
    }, actions
    refused = next(a for a in out["reports"]["board-a"]["agents"] if a["name"] == "local")
    assert refused["code"] == "deploy.name_taken"
    assert out["generations"] == {"board-a": 2, "board-b": 2}
    after = {b: _running(k) for b, k in boards.items()}
    assert after["board-a"].keys() == after["board-b"].keys() == {"local", "ticker"}
    assert after["board-a"]["local"] == before["board-a"]["local"]  # the board's own agent untouched
    assert all(after[b]["ticker"] != before[b]["ticker"] for b in boards)  # replaced: a new agent

    # v3 with nothing changed on board-b: everything left alone.
    third = hub.fleet_cli("deploy", v2, "--boards", "board-b", "--key", str(keys["release"]), "--json")
    assert third.returncode == 0, third.stdout + third.stderr
    assert {a["action"] for a in json.loads(third.stdout)["reports"]["board-b"]["agents"]} == {"left"}

    # Two states written back to back: the board ends on the newer one (a state that arrives
    # while a reconcile runs waits, and only the newest waits).
    release = load_private_key(keys["release"])
    _put(hub, "board-b", sign_desired(release, board="board-b", generation=4, agents=[{"name": "x1", "script": WAITER, "args": ["600"]}]).to_wire())
    last = _put(hub, "board-b", sign_desired(release, board="board-b", generation=5, agents=[{"name": "x2", "script": WAITER, "args": ["600"]}]).to_wire())
    assert _report_for(hub, "board-b", last)["generation"] == 5
    assert poll_for(lambda: _running(boards["board-b"]).keys() == {"x2"}, 10, message="board-b on the newest state")
    done = [r["details"]["generation"] for r in _deploy_records(boards["board-b"]) if r["details"]["phase"] == "done"]
    assert done[-1] == 5 and done == sorted(done), done

    status = hub.fleet_cli("deploy", "--status")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = [line.split()[:4] for line in status.stdout.splitlines()[1:]]  # every board's last report
    assert ["board-b", "5", "x2", "started"] in rows and ["board-a", "2", "local", "REFUSED"] in rows, status.stdout

    # Journaled on the board with the key's id: the decision, then what happened; each spawn
    # and stop is an operator syscall of its own, marked as the fleet's.
    records = _deploy_records(boards["board-a"])
    release_id = key_id(load_private_key(keys["release"]).public_key())
    assert [(r["details"]["phase"], r["decision"], r["details"]["generation"]) for r in records] == [
        ("decided", "allowed", 1), ("done", "allowed", 1), ("decided", "allowed", 2), ("done", "allowed", 2),
    ]  # fmt: skip
    assert {r["details"]["key_id"] for r in records} == {release_id}
    assert records[-1]["details"]["counts"] == {"replaced": 1, "refused": 1, "stopped": 1}
    entries = boards["board-a"].call("audit.query", limit=2000)["entries"]
    calls = [r for r in entries if r.get("syscall") in ("agent.spawn", "agent.kill")]
    assert sorted(r["syscall"] for r in calls) == ["agent.kill"] * 2 + ["agent.spawn"] * 3, calls  # local was never tried
    assert all(r["details"].get("fleet") is True for r in calls), calls


def test_an_offline_board_reconciles_when_it_comes_back(hub: Hub, make_kernel: Callable[..., KernelProcess], tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    config = _board(hub, "board-c", keys)
    v1 = _config(tmp_path, "v1.toml", {"ticker": "600"})
    deploy = hub.fleet_cli("deploy", v1, "--boards", "board-c", "--key", str(keys["release"]), "--wait", "0.5")  # board-c is not up
    assert deploy.returncode == 1 and "NO REPORT" in deploy.stdout, deploy.stdout + deploy.stderr

    c = make_kernel(config)
    poll_for(lambda: _running(c).keys() == {"ticker"}, 20, message="the board to reconcile when it comes up")
    report = poll_for(lambda: _status(hub, "board-c") or {}, 10, message="its report")
    assert (report["accepted"], report["generation"], report["again"], [a["action"] for a in report["agents"]]) == (True, 1, False, ["started"])
    assert json.loads((c.state_dir / "fleet" / "deploy.json").read_text())["generation"] == 1

    # Restarted: its deployed agents died with the kernel; the same state is applied again.
    c.stop()
    back = make_kernel(config, state_dir=c.state_dir)
    poll_for(lambda: _running(back).keys() == {"ticker"}, 20, message="the restarted board to reconcile again")
    poll_for(lambda: (_status(hub, "board-c") or {}).get("received_at", 0) > report["received_at"], 10, message="a new report")
    again = _status(hub, "board-c") or {}
    assert (again["generation"], again["again"], [a["action"] for a in again["agents"]]) == (1, True, ["started"]), again


def test_bad_desired_states_are_refused_with_a_code_and_bad_configs_are_never_published(
    hub: Hub, make_kernel: Callable[..., KernelProcess], tmp_path: Path
) -> None:
    keys = _keys(tmp_path)
    a = make_kernel(_board(hub, "board-a", keys))
    poll_for(lambda: _watching(a), 15, message="the deploy watcher up")
    release = load_private_key(keys["release"])
    site = load_private_key(keys["site"])
    agent = {"name": "ticker", "script": WAITER, "args": ["600"]}

    good = _put(hub, "board-a", sign_desired(release, board="board-a", generation=5, agents=[agent]).to_wire())
    assert _report_for(hub, "board-a", good)["accepted"] is True
    started = _running(a)
    assert started.keys() == {"ticker"}
    big_agent = {**agent, "env": {"PAD": "x" * MAX_DESIRED_BYTES}}
    cases = [
        (sign_desired(release, board="board-a", generation=4, agents=[agent]).to_wire(), "fleet.stale"),
        (sign_desired(site, board="board-a", generation=9, agents=[]).to_wire(), "fleet.not_allowed"),
        (sign_desired(Ed25519PrivateKey.generate(), board="board-a", generation=9, agents=[]).to_wire(), "fleet.unknown_key"),
        (sign_desired(release, board="board-b", generation=9, agents=[]).to_wire(), "fleet.wrong_board"),
        (sign_desired(release, board="board-a", generation=9, agents=[agent] * 2).to_wire(), "fleet.malformed"),
        (sign_desired(release, board="board-a", generation=9, agents=[{**agent, "name": f"t{i}"} for i in range(MAX_AGENTS + 1)]).to_wire(), "deploy.too_many"),
        (sign_desired(release, board="board-a", generation=9, agents=[big_agent]).to_wire(), "deploy.too_big"),
        (b"not a desired state", "fleet.malformed"),
    ]
    for wire, code in cases:
        report = _report_for(hub, "board-a", _put(hub, "board-a", wire))
        assert (report["accepted"], report["code"]) == (False, code), (code, report)
    assert _running(a) == started  # none of them changed anything
    denied = [r for r in _deploy_records(a) if r["decision"] == "denied"]
    assert [r["code"] for r in denied] == [code for _w, code in cases]

    # A spawn the board's policy refuses (memory over its ceiling) and a script it has not got.
    limits = _put(hub, "board-a", sign_desired(release, board="board-a", generation=10, agents=[
        agent, {**agent, "name": "hog", "limits": {"memory": 64 << 30}}, {**agent, "name": "ghost", "script": "/nonexistent/x.py"},
    ]).to_wire())  # fmt: skip
    outcomes = {o["name"]: o for o in _report_for(hub, "board-a", limits)["agents"]}
    assert (outcomes["ticker"]["action"], outcomes["hog"]["action"], outcomes["hog"]["code"]) == ("left", "refused", "proto.invalid_args")
    assert outcomes["ghost"]["action"] in ("failed", "refused") and outcomes["ghost"]["code"], outcomes["ghost"]

    # Operator mistakes stop at the CLI: nothing reaches the hub.
    bad = tmp_path / "bad.toml"
    bad.write_text('[agents.ticker]\nscript = "t.py"\nmemroy = "64M"\n')
    before = _status(hub, "board-a")
    wrong = hub.fleet_cli("deploy", str(bad), "--boards", "board-a", "--key", str(keys["release"]))
    assert wrong.returncode == 1 and f"{bad}: [agents.ticker].memroy" in wrong.stderr and "Traceback" not in wrong.stderr, wrong.stderr
    nokey = hub.fleet_cli("deploy", _config(tmp_path, "ok.toml", {"t": "1"}), "--boards", "board-a", "--key", str(tmp_path / "none.pem"))
    assert nokey.returncode == 1 and "none.pem" in nokey.stderr
    assert _status(hub, "board-a") == before


def test_a_board_reads_only_its_own_desired_state_and_reports_only_its_own_status(hub: Hub) -> None:
    """The hub's permissions (configs/fleet-hub.conf): board-a's NATS user cannot read board-b's
    desired state, write board-b's report, or write any desired state; the operator cannot
    write a report."""
    release = Ed25519PrivateKey.generate()
    revision = _put(hub, "board-b", sign_desired(release, board="board-b", generation=1, agents=[]).to_wire())

    async def as_user(user: str, inbox: str, body: Callable[[Any], Any]) -> Any:
        errors: list[str] = []

        async def seen(err: Exception) -> None:
            errors.append(str(err))

        nc = await nats.connect(hub.url, user=user, password=PASSWORDS[user], inbox_prefix=inbox, allow_reconnect=False, error_cb=seen)
        try:
            return await body(nc.jetstream(timeout=1)), errors
        finally:
            await nc.close()

    async def try_all(js: Any) -> list[str]:
        outcomes = []
        for attempt in (
            js.get_last_msg(NAMES.stream, NAMES.subject(NAMES.desired_key("board-a")), direct=True),  # its own: allowed (not found)
            js.get_last_msg(NAMES.stream, NAMES.subject(NAMES.desired_key("board-b")), direct=True),
            js.publish(NAMES.subject(NAMES.status_key("board-b")), b'{"forged": true}'),
            js.publish(NAMES.subject(NAMES.desired_key("board-a")), b"{}"),
        ):
            try:
                await attempt
                outcomes.append("ok")
            except Exception as err:
                outcomes.append(type(err).__name__)
        return outcomes

    outcomes, errors = asyncio.run(as_user("board-a", "_INBOX_board-a", try_all))
    assert outcomes[0] == "NotFoundError" and all(o != "ok" for o in outcomes[1:]), outcomes
    assert sum("permissions violation" in e.lower() for e in errors) >= 3, errors

    async def forge(js: Any) -> str:
        try:
            await js.publish(NAMES.subject(NAMES.status_key("board-b")), b'{"forged": true}')
            return "ok"
        except Exception as err:
            return type(err).__name__

    assert asyncio.run(as_user("operator", "_INBOX_operator", forge))[0] != "ok"
    assert _status(hub, "board-b") is None  # nothing was stored under board-b's report
    assert revision >= 1
