"""The fleet's pieces without a hub: the [fleet] table, the journal cursor the shipper reads
with (over a real journal that rotates), and the central chain check."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from clove.config import load_config
from clove.config.model import JournalSection
from clove.errors import ConfigError
from clove.fleet.chain import ChainCheck
from clove.fleet.position import ShippedPosition
from clove.kernel.audit.format import GENESIS_HASH, record_hash
from clove.kernel.audit.journal import Category, Journal
from clove.kernel.services.fleet import JournalCursor


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "kernel.toml"
    path.write_text(text)
    return load_config(path)


def test_no_fleet_table_means_no_fleet(tmp_path: Path) -> None:
    assert _load(tmp_path, "[kernel]\n").fleet is None  # type: ignore[attr-defined]


def test_a_fleet_table_is_read(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    config = _load(tmp_path, '[fleet]\nservers = ["nats://hub:4222"]\nboard = "press-07"\nuser = "press-07"\npassword_file = "pw"\nheartbeat = 2\nlost_after = 9\n')
    fleet = config.fleet  # type: ignore[attr-defined]
    assert fleet.servers == ("nats://hub:4222",) and fleet.board == "press-07" and fleet.password_file == str(tmp_path / "pw")
    assert fleet.heartbeat == 2.0 and fleet.lost_after == 9.0 and fleet.subject_prefix == "clove"


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ("", "servers", "required"),
        ('servers = ["http://x"]', "servers", "nats://"),
        ('servers = ["nats://h:1"]\nboard = "a.b"', "board", "[A-Za-z0-9_-]"),
        ('servers = ["nats://h:1"]\nsubject_prefix = "x.>"', "subject_prefix", "token"),
        ('servers = ["nats://h:1"]\ncredentials = "nope.creds"', "credentials", "no such file"),
        ('servers = ["nats://h:1"]\ntls_ca = "nope.pem"', "tls_ca", "no such file"),
        ('servers = ["nats://h:1"]\nheartbeat = 5\nlost_after = 5', "lost_after", "longer than heartbeat"),
        ('servers = ["nats://h:1"]\nheartbeat = -1', "heartbeat", "positive"),
        ('servers = ["nats://h:1"]\nbogus = 1', "bogus", "unknown key"),
    ],
)
def test_fleet_errors_name_the_file_and_key(tmp_path: Path, body: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, f"[fleet]\n{body}\n")
    message = info.value.message
    assert f"kernel.toml: [fleet].{key}:" in message and words in message, message


def _journal(tmp_path: Path) -> Journal:
    journal = Journal(tmp_path / "journal.jsonl", settings=JournalSection(max_file_bytes=64 << 10, keep_files=100))
    journal.open()
    return journal


def _append(journal: Journal, count: int) -> None:
    for n in range(count):
        journal.append(Category.SYSCALL, "test.record", decision="n/a", details={"n": n, "pad": "x" * 200})
        journal.tick()


def test_the_cursor_reads_in_order_across_rotations_within_its_bounds(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    _append(journal, 1200)  # ~300 KiB: several rotations of 64 KiB files
    journal.close()
    assert len(list(tmp_path.glob("journal.*-*.jsonl"))) >= 3
    cursor = JournalCursor(tmp_path / "journal.jsonl")
    shipped, seen = 0, []
    while True:
        batch = cursor.read_after(shipped, 100, 16 << 10)
        if not batch:
            break
        assert len(batch) <= 100 and sum(len(line) for _, line in batch) < (16 << 10) + 1024  # one record past the bound at most
        seen.extend(record_id for record_id, _ in batch)
        shipped = batch[-1][0]
    assert seen == list(range(1, journal.last_id + 1))
    check = ChainCheck(record_hash, GENESIS_HASH)
    for _id, line in JournalCursor(tmp_path / "journal.jsonl").read_after(0, 10_000, 1 << 30):
        check.add(json.loads(line))
    assert check.report.ok and check.report.records == journal.last_id


def test_the_cursor_follows_a_live_journal_and_resumes_anywhere(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    cursor = JournalCursor(tmp_path / "journal.jsonl")
    shipped = 0
    deadline = time.monotonic() + 10
    for _ in range(5):
        _append(journal, 300)
        journal.hand_off()
        target = journal.last_id
        while shipped < target:  # the writer thread writes soon after hand_off
            assert time.monotonic() < deadline, f"stuck at {shipped} of {target}"
            batch = cursor.read_after(shipped, 64, 1 << 20)
            if batch:
                assert batch[0][0] == shipped + 1
                shipped = batch[-1][0]
            else:
                time.sleep(0.01)
    journal.close()
    # A fresh cursor (a restarted board) resumes from a persisted position, in a rotated file.
    position = ShippedPosition(tmp_path / "fleet" / "shipped.json", "b1")
    position.save(777)
    assert ShippedPosition(tmp_path / "fleet" / "shipped.json", "b1").load() == 777
    assert ShippedPosition(tmp_path / "fleet" / "shipped.json", "renamed").load() == 0
    batch = JournalCursor(tmp_path / "journal.jsonl").read_after(777, 3, 1 << 20)
    assert [record_id for record_id, _ in batch] == [778, 779, 780]


def test_the_chain_check_names_duplicates_gaps_and_edits(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    _append(journal, 6)
    journal.close()
    records = [json.loads(line) for _, line in JournalCursor(tmp_path / "journal.jsonl").read_after(0, 100, 1 << 20)]

    def check(sequence: list[dict]) -> dict:
        c = ChainCheck(record_hash, GENESIS_HASH)
        for r in sequence:
            c.add(r)
        return c.report.to_dict()

    assert check(records)["ok"]
    twice = check([*records[:4], records[3], *records[4:]])
    assert not twice["ok"] and twice["duplicates"] == 1
    hole = check([*records[:2], *records[3:]])
    assert not hole["ok"] and hole["missing"] == 1
    edited = [dict(r) for r in records]
    edited[2]["decision"] = "allowed"
    assert not check(edited)["ok"]
    late = check(records[2:])
    assert late["ok"] and late["starts_after_genesis"]


def test_the_example_board_config_matches_a_user_of_the_example_hub() -> None:
    root = Path(__file__).resolve().parents[2]
    fleet = load_config(root / "configs" / "fleet-board.toml").fleet
    assert fleet is not None
    hub = (root / "configs" / "fleet-hub.conf").read_text()
    password = Path(fleet.password_file or "").read_text().strip()
    assert f'user: {fleet.user},' in hub and f'password: "{password}"' in hub
    assert f'"clove.audit.{fleet.board}", "$KV.clove_boards.{fleet.board}"' in hub and f'"_INBOX_{fleet.board}.>"' in hub


def test_fleet_commands_fail_in_one_line_when_the_hub_is_unreachable() -> None:
    import subprocess
    import sys

    from tests.fleet.conftest import free_port

    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "clove", "fleet", "ps", "--server", url, "--timeout", "2"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"clove: fleet: cannot connect to {url}") and "Traceback" not in done.stderr and done.stderr.count("\n") == 1
