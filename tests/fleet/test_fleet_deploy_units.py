"""Fleet deploys without a hub: the board's decision on a signed desired state, the reconcile
plan, and a deploy config read into spawn bodies (docs/fleet.md, "Deploy")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clove.errors import ConfigError
from clove.fleet.commands import OperatorKey, SignedCommand, sign
from clove.fleet.deploy import MAX_AGENTS, MAX_DESIRED_BYTES, Applied, DeployPolicy, digest, sign_desired
from clove.fleet.deploy_config import read_deploy_config
from clove.kernel.services.fleet_deploy_reconcile import Deployed, plan, spec_digest

DEPLOYER = Ed25519PrivateKey.generate()
SITE = Ed25519PrivateKey.generate()
STRANGER = Ed25519PrivateKey.generate()


def _policy() -> DeployPolicy:
    keys = [OperatorKey("release", DEPLOYER.public_key(), frozenset({"deploy"})), OperatorKey("site", SITE.public_key(), frozenset({"estop"}))]
    return DeployPolicy("board-a", keys)


def _agent(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "script": "/opt/agents/a.py", **extra}


def _wire(private: Ed25519PrivateKey = DEPLOYER, *, board: str = "board-a", generation: int = 1, agents: list[Any] | None = None) -> bytes:
    return sign_desired(private, board=board, generation=generation, agents=[_agent("a")] if agents is None else agents).to_wire()


def test_a_board_accepts_only_a_current_signed_state_for_itself_from_a_key_that_may_deploy() -> None:
    policy = _policy()
    ok = policy.decide(_wire(generation=3), None)
    assert (ok.accepted, ok.code, ok.operator, ok.generation, ok.again) == (True, "ok", "release", 3, False)
    assert ok.agents == [_agent("a")]
    applied = Applied(3, str(ok.digest))
    again = policy.decide(_wire(generation=3), applied)  # the same bytes? no: issued_at differs, so a new digest
    assert (again.accepted, again.code) == (False, "fleet.stale"), again
    same = SignedCommand.from_wire(_wire(generation=4))
    assert policy.decide(same.to_wire(), Applied(4, digest(same.payload))).again is True

    tampered = json.loads(_wire())
    tampered["payload"] = tampered["payload"].replace('"generation":1', '"generation":9')
    command = sign(DEPLOYER, "estop", board="board-a").to_wire()  # a command is not a desired state
    cases = [
        (_wire(generation=2), Applied(5, "x"), "fleet.stale"),
        (_wire(STRANGER), None, "fleet.unknown_key"),
        (json.dumps(tampered).encode(), None, "fleet.bad_signature"),
        (_wire(board="board-b"), None, "fleet.wrong_board"),
        (_wire(SITE), None, "fleet.not_allowed"),
        (_wire(agents=[_agent(f"a{i}") for i in range(MAX_AGENTS + 1)]), None, "deploy.too_many"),
        (_wire(agents=[_agent("a"), _agent("a")]), None, "fleet.malformed"),
        (_wire(agents=[_agent("bad name!")]), None, "fleet.malformed"),
        (_wire(agents=[_agent("x" * 100_000)]), None, "fleet.malformed"),
        (_wire(agents=["not a table"]), None, "fleet.malformed"),
        (_wire(generation=0), None, "fleet.malformed"),
        (b"garbage", None, "fleet.malformed"),
        (command, None, "fleet.malformed"),
        (b"x" * (MAX_DESIRED_BYTES + 1), None, "deploy.too_big"),
    ]
    for wire, last, code in cases:
        verdict = policy.decide(wire, last)
        assert (verdict.accepted, verdict.code) == (False, code), (code, verdict)
    assert policy.decide(_wire(STRANGER), None).key_id is not None  # the journal names the unknown key
    assert len(policy.decide(_wire(agents=[_agent("x" * 100_000)]), None).reason) < 200  # what it quotes is bounded


def test_the_plan_leaves_starts_replaces_stops_and_never_touches_agents_no_deploy_started() -> None:
    same, changed = _agent("same"), _agent("changed", args=["2"])
    deployed = {
        "same": Deployed(1, spec_digest(same)), "changed": Deployed(2, spec_digest(_agent("changed"))),
        "dropped": Deployed(3, "d"), "crashed": Deployed(4, spec_digest(_agent("crashed"))),
    }  # fmt: skip
    live = {"same": 1, "changed": 2, "dropped": 3, "local": 9}  # crashed is no longer live; local is the board's own
    desired = [same, changed, _agent("crashed"), _agent("new"), _agent("local"), _agent("odd", script="relative.py"), _agent("x", detached=True)]
    p = plan(desired, deployed, live=live.get, running=lambda i: i in live.values())
    actions = {name: o["action"] for name, o in p.outcomes.items()}
    assert actions == {
        "same": "left", "changed": "replaced", "crashed": "started", "new": "started", "local": "refused",
        "odd": "refused", "x": "refused", "dropped": "stopped",
    }  # fmt: skip
    assert p.outcomes["local"]["code"] == "deploy.name_taken" and p.outcomes["odd"]["code"] == "deploy.bad_spec"
    assert "detached" in p.outcomes["x"]["message"]
    assert len(plan([_agent("y", **{"k" * 10_000: 1})], {}, live=lambda _n: None, running=lambda _i: False).outcomes["y"]["message"]) < 120
    assert sorted(p.stops) == [("changed", 2, True), ("dropped", 3, False)]
    assert sorted(name for name, _spec, _r in p.starts) == ["changed", "crashed", "new"]


def test_a_deploy_config_becomes_spawn_bodies_and_its_errors_name_the_file_and_key(tmp_path: Path) -> None:
    good = tmp_path / "agents.toml"
    good.write_text('[agents.ticker]\nscript = "t.py"\nargs = ["1"]\nmemory = "64M"\ncpu = "20%"\nrestart = "on-failure"\n')
    (body,) = read_deploy_config(str(good))
    assert body["name"] == "ticker" and body["script"] == str(tmp_path / "t.py") and body["args"] == ["1"]
    assert body["limits"] == {"memory": 64 << 20, "cpu_quota": 20000} and body["restart_policy"] == "on-failure"
    for text, message in [
        ('[agents.ticker]\nscript = "t.py"\nmemroy = "64M"\n', "[agents.ticker].memroy"),
        ('[agents.ticker]\nargs = []\n', "[agents.ticker].script: required"),
        ('[kernel]\nlog_level = "debug"\n[agents.t]\nscript = "t.py"\n', "[kernel]: a deploy config holds [agents] tables"),
        ("[agents\n", "invalid TOML"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=f"^{bad}: .*" + message.replace("[", r"\[").replace("]", r"\]")):
            read_deploy_config(str(bad))
    # Device grants travel as written (the board checks them against its own [devices]).
    grants = tmp_path / "grants.toml"
    grants.write_text('[devices.loop]\ndriver = "loopback"\n[agents.user]\nscript = "u.py"\n[agents.user.devices.loop]\nops = ["write", "recv"]\ntags = ["ok"]\n')
    (user,) = read_deploy_config(str(grants))
    assert user["devices"] == {"loop": {"ops": ["write", "recv"], "tags": ["ok"]}}
    many = tmp_path / "many.toml"
    many.write_text("".join(f'[agents.a{i}]\nscript = "t.py"\n' for i in range(MAX_AGENTS + 1)))
    with pytest.raises(ConfigError, match=f"at most {MAX_AGENTS}"):
        read_deploy_config(str(many))
