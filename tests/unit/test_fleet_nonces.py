"""The accepted-nonce file of a board (clove/fleet/nonces.py): survives a restart, stays
bounded, and refuses safely when it cannot be trusted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clove.fleet import nonces
from clove.fleet.commands import CommandPolicy, OperatorKey, sign
from clove.fleet.nonces import COMPACT_MIN_LINES, SeenNonces

NOW = 1_800_000_000.0
WINDOW = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def nonce(i: int) -> str:
    return f"nonce-{i:012d}"


def store(path: Path, clock: Clock, max_nonces: int = 100, boot_id: str | None = "boot-1") -> SeenNonces:
    return SeenNonces(window=WINDOW, max_nonces=max_nonces, path=path, clock=clock, boot_id=boot_id)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_accepted_nonces_survive_a_restart(tmp_path: Path) -> None:
    path, clock = tmp_path / "fleet" / "nonces.jsonl", Clock()
    first = store(path, clock)
    assert first.problem is None
    clock.now += 1
    assert first.refusal(nonce(1), clock.now, clock.now) is None
    first.remember(nonce(1), clock.now)

    clock.now += 5  # restarted inside the window
    second = store(path, clock)
    assert second.problem is None
    assert second.refusal(nonce(1), NOW + 1, clock.now) == "this command was already received"
    assert second.refusal(nonce(2), NOW + 2, clock.now) is None  # unseen, issued after the first start
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_file_from_before_the_machine_rebooted_is_not_trusted(tmp_path: Path) -> None:
    """Writes are not fsynced (the page cache survives a process restart); an OS crash may
    have lost the last ones, so after a reboot nothing issued before the start is taken."""
    path, clock = tmp_path / "nonces.jsonl", Clock()
    seen = store(path, clock)
    clock.now += 1
    seen.remember(nonce(1), clock.now)
    assert lines(path)[0] == {"boot": "boot-1"}
    clock.now += 5

    same_boot = store(path, clock)
    assert same_boot.refusal(nonce(2), NOW + 2, clock.now) is None  # a process restart: trusted
    rebooted = store(path, clock, boot_id="boot-2")
    assert rebooted.problem is None  # a reboot is not damage
    assert rebooted.refusal(nonce(1), NOW + 1, clock.now) == "this command was already received"
    why = rebooted.refusal(nonce(2), NOW + 2, clock.now)
    assert why is not None and "before the machine last started" in why
    assert rebooted.refusal(nonce(2), clock.now + 0.1, clock.now + 0.2) is None
    assert lines(path)[0] == {"boot": "boot-2"}


def test_without_a_boot_id_every_write_is_synced_and_trusted_later(tmp_path: Path) -> None:
    path, clock = tmp_path / "nonces.jsonl", Clock()
    seen = store(path, clock, boot_id=None)
    clock.now += 1
    seen.remember(nonce(1), clock.now)
    assert lines(path)[0] == {"boot": "synced"}
    clock.now += 5
    later = store(path, clock, boot_id="boot-9")
    assert later.refusal(nonce(2), NOW + 2, clock.now) is None  # synced entries survive any reboot
    assert later.refusal(nonce(1), NOW + 1, clock.now) == "this command was already received"


def test_a_first_start_refuses_only_commands_issued_before_it(tmp_path: Path) -> None:
    clock = Clock()
    seen = store(tmp_path / "nonces.jsonl", clock)
    assert seen.problem is None  # a missing file is not reported, but it is not trusted either
    why = seen.refusal(nonce(1), NOW - 1, NOW)
    assert why is not None and "start" in why
    assert seen.refusal(nonce(1), NOW + 0.5, NOW + 1) is None


def test_a_torn_last_line_is_ignored_and_tidied_away(tmp_path: Path) -> None:
    path, clock = tmp_path / "nonces.jsonl", Clock()
    seen = store(path, clock)
    clock.now += 1
    seen.remember(nonce(1), clock.now)
    with open(path, "ab") as f:
        f.write(b'{"n": "nonce-0000000')  # a crash during the next append: its command never ran

    again = store(path, clock)
    assert again.problem is None
    assert again.refusal(nonce(1), NOW + 1, clock.now) == "this command was already received"
    assert again.refusal(nonce(2), NOW + 1.5, clock.now) is None
    assert path.read_bytes().endswith(b"\n") and all(e.keys() in ({"n", "t"}, {"h"}, {"boot"}) for e in lines(path))
    again.remember(nonce(2), NOW + 1.5)  # appends after the tidy file, not onto the torn piece
    assert [e["n"] for e in lines(path) if "n" in e] == [nonce(1), nonce(2)]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b'{"n": "nonce-000000000001", "t": 1}\nGARBAGE\n{"n": "x", "t": 2}\n'), id="garbage-line"),
        pytest.param(lambda p: p.write_bytes(b'{"n": 7, "t": "soon"}\n'), id="wrong-types"),
        pytest.param(lambda p: p.write_bytes(b"[1, 2]\n"), id="not-an-object"),
        pytest.param(lambda p: p.write_bytes(b'{"n": "a", "t": NaN}\n'), id="not-a-time"),
        pytest.param(lambda p: (p.unlink(), p.mkdir()), id="unreadable"),
    ],
)
def test_an_unusable_file_refuses_everything_issued_before_the_start(tmp_path: Path, damage: object) -> None:
    path, clock = tmp_path / "nonces.jsonl", Clock()
    seen = store(path, clock)
    clock.now += 1
    seen.remember(nonce(9), clock.now)
    damage(path)  # type: ignore[operator]
    clock.now += 5

    restarted = store(path, clock)
    assert restarted.problem is not None and "commands issued before this start are refused" in restarted.problem
    assert str(path) in restarted.problem
    for issued in (NOW + 1, NOW + 5.9, clock.now):  # anything up to the start may be a replay
        why = restarted.refusal(nonce(42), issued, clock.now)
        assert why is not None and "could not be read" in why
    assert restarted.refusal(nonce(42), clock.now + 0.1, clock.now + 0.2) is None  # issued after it: decided as usual


def test_an_oversized_file_is_not_read_whole(tmp_path: Path) -> None:
    path, clock = tmp_path / "nonces.jsonl", Clock()
    with open(path, "wb") as f:
        f.truncate((2 * 3 + COMPACT_MIN_LINES + 3) * 512)  # past the bound for max_nonces=3
    seen = store(path, clock, max_nonces=3)
    assert seen.problem is not None and "over its bound" in seen.problem
    assert seen.refusal(nonce(1), NOW, NOW) is not None
    assert path.stat().st_size < 100  # rewritten: the horizon alone


def test_the_file_stays_bounded_and_keeps_the_horizon_of_what_it_forgot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compact_min = 128  # the same logic as the real 1024, in fewer steps
    monkeypatch.setattr(nonces, "COMPACT_MIN_LINES", compact_min)
    path, clock = tmp_path / "nonces.jsonl", Clock()
    seen = store(path, clock, max_nonces=50)
    for i in range(5 * compact_min):  # ten a second for 64 s, two windows
        clock.now = NOW + 1 + i / 10
        assert seen.refusal(nonce(i), clock.now, clock.now) is None
        seen.remember(nonce(i), clock.now)
        assert len(seen.entries) <= 50
        assert len(path.read_bytes().splitlines()) <= compact_min + 2
    last = 5 * compact_min - 1
    assert seen.horizon == NOW + 1 + (last - 50) / 10  # the bound (50 in 5 s) forced nonces out before the window did

    restarted = store(path, clock, max_nonces=50)
    assert restarted.problem is None and len(restarted.entries) == 50
    assert len(lines(path)) == 52  # the boot, the horizon and the live entries, nothing else
    assert restarted.refusal(nonce(last), NOW + 1 + last / 10, clock.now) == "this command was already received"
    forgotten = restarted.refusal(nonce(last - 60), NOW + 1 + (last - 60) / 10, clock.now)
    assert forgotten is not None and "forget" in forgotten  # its nonce is gone, the horizon is not


def test_expired_nonces_leave_the_file(tmp_path: Path) -> None:
    path, clock = tmp_path / "nonces.jsonl", Clock()
    seen = store(path, clock)
    clock.now += 1
    seen.remember(nonce(1), clock.now)
    clock.now += WINDOW + 5
    restarted = store(path, clock)
    assert restarted.entries == {} and [e for e in lines(path) if "n" in e] == []


def test_a_policy_refuses_what_it_cannot_record(tmp_path: Path) -> None:
    """Accepting a command whose nonce is not on disk would let a restart accept it again."""
    clock, key = Clock(), Ed25519PrivateKey.generate()
    path = tmp_path / "nonces.jsonl"
    policy = CommandPolicy("b", [OperatorKey("site", key.public_key(), frozenset({"estop"}))], clock=clock, nonce_file=path)
    clock.now += 1
    first = sign(key, "estop", board="b", now=clock.now)
    assert policy.decide(first).accepted
    path.unlink()
    path.mkdir()  # the next append fails (EISDIR)
    second = sign(key, "estop", board="b", now=clock.now)
    verdict = policy.decide(second)
    assert (verdict.accepted, verdict.code) == (False, "fleet.unavailable") and "nonce" in verdict.reason
    path.rmdir()
    assert policy.decide(second).accepted  # not remembered when refused: the same bytes may come again
    assert policy.decide(first).code == "fleet.replayed"
    assert {e["n"] for e in lines(path) if "n" in e} >= {json.loads(first.payload)["nonce"], json.loads(second.payload)["nonce"]}
    assert not os.path.exists(str(path) + ".tmp")
