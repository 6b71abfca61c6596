"""Signed fleet commands: what a board accepts and what it refuses, with the code it journals."""

from __future__ import annotations

import base64
import json
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clove.config.fleet import FleetOperator, parse_operators
from clove.config.values import Table
from clove.errors import ConfigError
from clove.fleet.commands import (
    CommandPolicy,
    OperatorKey,
    SignedCommand,
    generate_key,
    key_id,
    load_private_key,
    operator_keys,
    public_key_text,
    sign,
)

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys() -> dict[str, Ed25519PrivateKey]:
    return {"site": Ed25519PrivateKey.generate(), "release": Ed25519PrivateKey.generate(), "stranger": Ed25519PrivateKey.generate()}


@pytest.fixture
def policy(keys: dict[str, Ed25519PrivateKey]) -> CommandPolicy:
    return CommandPolicy(
        "press-07",
        [OperatorKey("site-team", keys["site"].public_key(), frozenset({"estop", "estop.release"})),
         OperatorKey("release", keys["release"].public_key(), frozenset({"kill", "pause"}))],
        window=30.0, clock=Clock(),
    )  # fmt: skip


def test_a_command_within_the_keys_rights_is_accepted_once(policy: CommandPolicy, keys: dict[str, Ed25519PrivateKey]) -> None:
    cmd = sign(keys["site"], "estop", board="press-07", args={"reason": "smoke"}, now=NOW)
    verdict = policy.decide(SignedCommand.from_wire(cmd.to_wire()))
    assert verdict.accepted and verdict.command == "estop" and verdict.args == {"reason": "smoke"}
    assert verdict.key_id == key_id(keys["site"].public_key()) and verdict.operator == "site-team"
    again = policy.decide(cmd)
    assert not again.accepted and again.code == "fleet.replayed"
    assert policy.decide(sign(keys["site"], "estop", now=NOW)).accepted  # to every board, a new nonce


@pytest.mark.parametrize(
    ("who", "command", "board", "issued", "code"),
    [
        ("stranger", "estop", "press-07", NOW, "fleet.unknown_key"),
        ("site", "kill", "press-07", NOW, "fleet.not_allowed"),
        ("release", "estop", "press-07", NOW, "fleet.not_allowed"),
        ("site", "estop", "press-08", NOW, "fleet.wrong_board"),
        ("site", "estop", "press-07", NOW - 31, "fleet.stale"),
        ("site", "estop", "press-07", NOW + 31, "fleet.stale"),
    ],
)
def test_refusals_carry_their_code(policy: CommandPolicy, keys: dict[str, Ed25519PrivateKey], who: str, command: str, board: str, issued: float, code: str) -> None:
    verdict = policy.decide(sign(keys[who], command, board=board, now=issued))
    assert not verdict.accepted and verdict.code == code, verdict
    assert verdict.key_id == key_id(keys[who].public_key())


def test_a_tampered_payload_or_signature_is_refused(policy: CommandPolicy, keys: dict[str, Ed25519PrivateKey]) -> None:
    cmd = sign(keys["site"], "estop.release", board="press-07", now=NOW)
    widened = cmd.payload.replace(b'"press-07"', b'"*"')
    assert policy.decide(SignedCommand(widened, cmd.signature)).code == "fleet.bad_signature"
    # Someone else's signature over the same payload: the key named inside decides.
    forged = SignedCommand(cmd.payload, keys["stranger"].sign(cmd.payload))
    assert policy.decide(forged).code == "fleet.bad_signature"


@pytest.mark.parametrize(
    "wire",
    [b"", b"[]", b'{"payload": 1, "sig": "AA=="}', b'{"payload": "{}", "sig": "not base64!"}', b"x" * (2 << 20)],
)
def test_garbage_on_the_wire_is_a_value_error(wire: bytes) -> None:
    with pytest.raises(ValueError, match="signed command|at most"):
        SignedCommand.from_wire(wire)


def test_a_payload_missing_fields_is_malformed(policy: CommandPolicy, keys: dict[str, Ed25519PrivateKey]) -> None:
    payload = json.dumps({"v": 1, "key_id": key_id(keys["site"].public_key()), "command": "estop"}).encode()
    assert policy.decide(SignedCommand(payload, keys["site"].sign(payload))).code == "fleet.malformed"
    assert policy.decide(SignedCommand(b"not json", b"")).code == "fleet.malformed"


def test_the_nonce_memory_is_bounded_and_never_lets_a_forgotten_command_back(keys: dict[str, Ed25519PrivateKey]) -> None:
    clock = Clock()
    policy = CommandPolicy("b", [OperatorKey("site", keys["site"].public_key(), frozenset({"estop"}))], clock=clock, max_nonces=3)
    sent = [sign(keys["site"], "estop", now=NOW + i) for i in range(5)]
    assert all(policy.decide(c).accepted for c in sent)
    assert len(policy._seen) <= 3
    assert all(policy.decide(c).code == "fleet.replayed" for c in sent)  # remembered, or older than what was forgotten
    clock.now = NOW + 100  # everything has left the window: stale now, and the memory empties
    assert policy.decide(sign(keys["site"], "estop", now=clock.now)).accepted and len(policy._seen) == 1


def test_keys_on_disk_and_in_config(tmp_path: Path) -> None:
    path = tmp_path / "op.key"
    private = generate_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_id(load_private_key(path).public_key()) == key_id(private.public_key())
    with pytest.raises(FileExistsError):
        generate_key(path)  # never overwrites a key
    (tmp_path / "bad.key").write_text("nope")
    with pytest.raises(ValueError, match="bad.key"):
        load_private_key(tmp_path / "bad.key")

    def parse(operators: object) -> tuple[FleetOperator, ...]:
        return parse_operators(Table("board.toml", "fleet", {"operators": operators}))

    text = public_key_text(private.public_key())
    (op,) = parse({"ops": {"public_key": text, "may": ["estop"]}})
    assert op.name == "ops" and op.may == {"estop"} and len(op.public_key) == 32
    (key,) = operator_keys([op])
    assert key.id == key_id(private.public_key()) and key.may == {"estop"}
    for table, message in [
        ({"ops": {"public_key": "AAAA", "may": ["estop"]}}, "[fleet].operators.ops.public_key"),
        ({"ops": {"public_key": 7, "may": ["estop"]}}, "[fleet].operators.ops.public_key"),
        ({"ops": {"public_key": text, "may": []}}, "[fleet].operators.ops.may"),
        ({"ops": {"public_key": text, "may": ["reboot"]}}, "unknown command 'reboot'"),
        ({"ops": {"public_key": text, "may": ["estop"], "extra": 1}}, "[fleet].operators.ops.extra"),
        ({"a": {"public_key": text, "may": ["estop"]}, "b": {"public_key": text, "may": ["kill"]}}, "listed twice"),
        ({"ops": "key"}, "expected a table"),
        ("not a table", "[fleet].operators: expected table"),
    ]:
        with pytest.raises(ConfigError, match="^board.toml: .*" + re.escape(message)):
            parse(table)
    assert base64.b64decode(text) and len(base64.b64decode(text)) == 32


def test_the_fleet_table_takes_operators_and_a_window(tmp_path: Path) -> None:
    from clove.config import load_config

    text = public_key_text(Ed25519PrivateKey.generate().public_key())
    path = tmp_path / "board.toml"
    fleet = '[fleet]\nservers = ["nats://127.0.0.1:4222"]\nboard = "b1"\n'
    path.write_text(fleet + f'command_window = 5\n[fleet.operators.site]\npublic_key = "{text}"\nmay = ["estop", "kill"]\n')
    section = load_config(str(path)).fleet
    assert section is not None and section.command_window == 5.0
    assert [(o.name, o.may) for o in section.operators] == [("site", frozenset({"estop", "kill"}))]
    path.write_text(fleet + "command_window = -1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: [fleet].command_window")):
        load_config(str(path))
