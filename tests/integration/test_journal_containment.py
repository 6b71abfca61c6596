"""One agent cannot fill the disk with the journal, and the journal never silently loses a record:
a real kernel whose state dir is a 40 MB tmpfs, flooded with denials and then with allowed calls."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clove.cli.main import main
from clove.kernel.audit.files import journal_files, read_journal
from clove.kernel.audit.format import canonical_bytes
from clove.kernel.audit.verify import verify_journal
from clove.testing.kernel import poll_for
from tests.conftest import agent_row, agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]

MAX_FILE = 256 << 10
KEEP_FILES = 3
RESERVE = 8 << 20
JOURNAL_TOML = f"""
[journal]
max_file_bytes = {MAX_FILE}
keep_files = {KEEP_FILES}
denial_burst = 20
denial_window = 1.0
disk_reserve_bytes = {RESERVE}
"""


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A 40 MB tmpfs to be a kernel's state dir; unmounted at teardown whatever happened.
    (Request it before ``make_kernel``, so the kernel stops before the unmount.)"""
    base = Path(tempfile.mkdtemp(prefix="clvj", dir="/tmp"))
    os.chmod(base, 0o755)  # agents (other uids) reach their dirs under the state dir
    mount = base / "state"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m,mode=0711", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def journal_bytes(state: Path) -> int:
    total = 0
    for file in state.glob("journal*.jsonl"):
        with contextlib.suppress(FileNotFoundError):  # retention deletes rotated files meanwhile
            total += file.stat().st_size
    return total


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def denial_totals(records: Any, agent_id: int) -> tuple[int, int]:
    """(denials written one by one, denials counted in ``denials.aggregated`` records)."""
    single = counted = 0
    for record in records:
        if record["agent_id"] == agent_id and record["decision"] == "denied":
            if record["event_type"] == "denials.aggregated":
                counted += record["details"]["count"]
            else:
                single += 1
    return single, counted


def test_a_denial_flood_stays_bounded_and_the_journal_stays_verifiable(small_fs, make_kernel, capsys):
    k = make_kernel(JOURNAL_TOML, state_dir=small_fs)
    journal = small_fs / "journal.jsonl"
    assert k.call("kernel.info")["journal"] == str(journal)

    # 1. A denial flood: the first 20 denials are written, the rest are counted, exactly.
    k.call("agent.spawn", name="flood", script=agent_script("denial_flood.py"), args=["1000000", "4"])
    report = read_report(k, "flood", timeout=30)
    assert report["failed"] == report["sent"] > 1000
    assert set(report["codes"]) == {"proto.unknown_syscall"}
    flood_id = agent_row(k, "flood")["id"]
    # The last window is written when it ends, with no further denial to trigger it.
    single, counted = poll_for(lambda: (t := denial_totals(read_journal(journal), flood_id))[0] + t[1] == report["sent"] and t,
                               15, message="every denial accounted for")  # fmt: skip
    assert single <= 20 * 2  # a stall of the agent past a window may grant one more burst
    # The flood's own records (the test's polling is journaled too, as agent.logs calls).
    flood_bytes = sum(len(canonical_bytes(r)) + 1 for r in read_journal(journal) if r["agent_id"] == flood_id)
    rate = flood_bytes / report["elapsed"]
    print(f"denial flood: {report['sent']} denials in {report['elapsed']:.1f} s, journal +{flood_bytes} bytes ({rate:.0f} B/s)")
    assert rate < 10_000, f"{flood_bytes} journal bytes for {report['sent']} denials"

    # 2. A flood of allowed calls (each one journaled): files rotate, and retention keeps them few.
    bound = (KEEP_FILES + 2) * MAX_FILE  # kept files, the active one, and one rotated before its deletion
    seen = [0]

    def done() -> bool:
        seen[0] = max(seen[0], journal_bytes(small_fs))
        logs = k.call("agent.logs", name="chatty", offset=0, max_bytes=1 << 20)["data"].decode()
        return "REPORT " in logs

    k.call("agent.spawn", name="chatty", script=agent_script("denial_flood.py"), args=["12000", "30", "noop"])
    poll_for(done, 60, interval=0.05, message="the allowed-call flood")
    chatty = read_report(k, "chatty")
    assert chatty["failed"] == 0 and chatty["sent"] == 12000
    last_id = k.call("audit.query", since_id=0, limit=1)["entries"]  # the ring answers across rotation
    assert last_id
    assert seen[0] <= bound, f"journal reached {seen[0]} bytes (bound {bound})"
    files = journal_files(journal)
    assert 2 <= len(files) <= KEEP_FILES + 1
    assert all(file.stat().st_size <= MAX_FILE for file in files)
    assert free_bytes(small_fs) > RESERVE  # the disk did not fill

    # 3. Work after the flood is journaled (and on disk, not just in the ring).
    k.call("agent.spawn", name="after", script=agent_script("exit_code.py"), args=["0"])
    poll_for(lambda: any(r["event_type"] == "agent.created" and r["agent_name"] == "after" for r in read_journal(journal)),
             10, message="the spawn after the flood on disk")  # fmt: skip

    # 4. The disk nearing its reserve is an event, once per change, and a journal record.
    with k.client() as c:
        c.subscribe("KERNEL_RESOURCE_LOW")
        ballast = small_fs / "ballast"
        with ballast.open("wb") as stream:
            stream.write(b"\0" * (free_bytes(small_fs) - RESERVE // 2))
        low = c.poll_events(max_events=10, timeout=5)["events"]
        assert [(e["type"], e["data"]["low"], e["data"]["resource"]) for e in low] == [("KERNEL_RESOURCE_LOW", True, "journal_disk")]
        assert low[0]["data"]["free_bytes"] < RESERVE and low[0]["source_agent_id"] is None
        # While low, an agent's new work is refused (not accepted and then lost); it may still
        # drain what the kernel holds for it.
        ops = [["store", {"key": "k", "value": 1}], ["noop", {}], ["poll_events", {}]]
        k.call("agent.spawn", name="starved", script=agent_script("exec_ops.py"), args=[json.dumps(ops)])
        stored, noop, polled = (item for item in read_report(k, "starved"))
        assert stored["value"]["code"] == "resource.exhausted", stored  # the SDK's store() answers in its dict
        assert noop["ok"] and polled["ok"] and polled["value"]["success"]
        ballast.unlink()
        ok = c.poll_events(max_events=10, timeout=5)["events"]
        assert [(e["type"], e["data"]["low"]) for e in ok] == [("KERNEL_RESOURCE_LOW", False)]

    # 5. After a clean stop the remaining files verify; the deleted head is an acknowledged truncation.
    assert k.stop() == 0
    records = list(read_journal(journal))
    assert [r["event_type"] for r in records if r["event_type"].startswith("journal.space_")] == ["journal.space_low", "journal.space_ok"]
    result = verify_journal(journal)
    assert result.ok and result.complete, result.reason
    assert result.truncated_before is not None and result.truncation_recorded
    assert not result.gaps and not result.warnings
    capsys.readouterr()  # (the figures printed above)
    assert main(["audit", "--verify", "--file", str(journal), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["ok"] and verdict["complete"] and verdict["truncated_before"] == result.truncated_before
    assert main(["audit", "--verify", "--file", str(journal)]) == 0
    out = capsys.readouterr().out
    assert "chain intact" in out and "deleted by retention" in out
