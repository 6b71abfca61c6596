"""A reply the caller saw has its journal record on disk: state changes are journaled before
their reply leaves (group commit), so even ``kill -9`` of the kernel loses no acknowledged
record."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from clove.errors import CloveError
from clove.kernel.audit.journal import read_journal
from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import requires_root

pytestmark = [pytest.mark.integration, requires_root]

WRITERS = 4


def _store_until_gone(k: KernelProcess, writer: int, acknowledged: list[int], started: threading.Event) -> None:
    """Store keys w<writer>-<n> for n = 0, 1, ...; remember the last n the kernel answered."""
    try:
        with k.client(timeout=5) as c:
            n = 0
            while True:
                c.store(f"w{writer}-{n}", n)
                acknowledged[writer] = n
                if n == 50:
                    started.set()
                n += 1
    except CloveError:  # the kernel is gone: the point of the test
        return


@pytest.mark.parametrize("round_", range(3))
def test_every_acknowledged_state_change_survives_a_kernel_kill(round_: int) -> None:
    k = KernelProcess("").start()
    try:
        acknowledged = [-1] * WRITERS
        started = [threading.Event() for _ in range(WRITERS)]
        threads = [
            threading.Thread(target=_store_until_gone, args=(k, w, acknowledged, started[w]), daemon=True)
            for w in range(WRITERS)
        ]
        for thread in threads:
            thread.start()
        for event in started:
            assert event.wait(30), "a writer did not get going"
        os.kill(k.pid, signal.SIGKILL)
        for thread in threads:
            thread.join(30)
        assert k.proc is not None and k.proc.wait(10) == -signal.SIGKILL
        journal = k.state_dir / "journal.jsonl"
        stored = {
            r["args"]["key"]
            for r in read_journal(journal)
            if r.get("syscall") == "state.store" and r.get("code") == "ok" and isinstance(r.get("args"), dict)
        }
        missing = [f"w{w}-{n}" for w in range(WRITERS) for n in range(acknowledged[w] + 1) if f"w{w}-{n}" not in stored]
        assert not missing, f"{len(missing)} acknowledged stores have no journal record, e.g. {missing[-3:]}"
    finally:
        poll_for(lambda: k.proc is None or k.proc.poll() is not None, 10, message="the killed kernel to be reaped")
        k.cleanup()
