"""``make demo``: a short deployment that shows Clove's guarantees, then exits by itself.

A healthy worker runs beside a CPU hog, a memory leak, a segfaulting agent, a fork bomb and a
snoop that tries to escape. Each misbehaviour is contained by the kernel; the worker carries on.
The demo checks every claim it prints and exits non-zero if one does not hold.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

from clove.cli import render
from clove.kernel.audit.journal import verify_journal
from clove.testing.kernel import KernelProcess, poll_for

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.toml"
WATCH_SECONDS = 8.0


def say(text: str = "") -> None:
    print(text, flush=True)


def narrate(entry: dict[str, Any]) -> None:
    name, d = entry.get("agent_name"), entry.get("details") or {}
    if entry["event_type"] == "agent.exited":
        reason = d.get("reason")
        extra = f" ({d['message']})" if d.get("message") else ""
        say(f"  [{entry['id']:>4}] {name}: {reason}{extra}")
    elif entry["event_type"] == "agent.state" and d.get("state") == "backoff":
        say(f"  [{entry['id']:>4}] {name}: restart in {d['delay']:g} s (policy on-failure)")
    elif entry["event_type"] == "agent.escalated":
        say(f"  [{entry['id']:>4}] {name}: {d['restarts_in_window']} restarts in {d['window']:g} s -> failed")


def main() -> int:
    say("Clove demo: six agents, five of them misbehaving, one kernel.\n")
    kernel = KernelProcess(config_file=str(CONFIG))
    kernel.start()
    failures: list[str] = []
    try:
        with kernel.client() as c:
            info = c.kernel_info()
            say(f"kernel pid {info['pid']}, sandbox backend {info['sandbox_backend']}, Landlock ABI {info['landlock_abi']}")
            poll_for(lambda: all(a["state"] != "starting" for a in c.list_agents()) and len(c.list_agents()) == 6, 30, message="agents")
            say(render.agents_table(c.list_agents()))
            say(f"\nwatching for {WATCH_SECONDS:g} s...")
            hog = next(a for a in c.list_agents() if a["name"] == "hog")
            cpu0, t0 = hog["stats"].get("cpu_usage_us", 0), time.monotonic()
            last_id = 0
            end = time.monotonic() + WATCH_SECONDS
            while time.monotonic() < end:
                for entry in c.get_audit_log(category="AGENT_LIFECYCLE", since_id=last_id, limit=1000)["entries"]:
                    narrate(entry)
                    last_id = entry["id"]
                time.sleep(0.2)
            agents = {a["name"]: a for a in c.list_agents()}
            hog_share = (agents["hog"]["stats"].get("cpu_usage_us", 0) - cpu0) / 1e6 / (time.monotonic() - t0)
            logs = {name: c.logs(name=name)["data"].decode(errors="replace") for name in ("worker", "bomb", "snoop")}
            say("\nwhat happened:")
            checks = [
                (f"hog held to {hog_share:.1%} of a core (limit 20%)", hog_share <= 0.23 and agents["hog"]["state"] == "running"),
                ("leak OOM-killed at 64 MiB, restarted twice, then marked failed", agents["leak"]["state"] == "failed" and agents["leak"]["exit_reason"] == "oom_killed"),
                (f"crasher died alone: {render.exit_cell(agents['crasher'])}", agents["crasher"]["exit_signal"] == signal.SIGSEGV),
                (f"bomb stopped at its PIDs limit: {_last(logs['bomb'], 'fork refused')}", "fork refused" in logs["bomb"] and agents["bomb"]["state"] == "running"),
                ("snoop refused everything: " + "; ".join(line for line in logs["snoop"].splitlines()), "ALLOWED" not in logs["snoop"] and logs["snoop"].count("refused") == 5),
                (f"worker kept answering: {_last(logs['worker'], 'syscalls=')}", agents["worker"]["state"] == "running" and "syscalls=" in logs["worker"]),
            ]
            for text, ok in checks:
                say(f"  {'ok ' if ok else 'FAIL'} {text}")
                if not ok:
                    failures.append(text)
            say("\n" + render.agents_table(c.list_agents()))
            journal = info["journal"]
        kernel.stop()
        result = verify_journal(Path(journal))
        say(f"\naudit journal: {result.records} records, hash chain {'intact' if result.ok else 'BROKEN: ' + result.reason}")
        if not result.ok:
            failures.append("journal chain")
    finally:
        kernel.cleanup()
    say("\nall guarantees held." if not failures else f"\n{len(failures)} guarantee(s) did not hold.")
    return 0 if not failures else 1


def _last(text: str, marker: str) -> str:
    lines = [line for line in text.splitlines() if marker in line]
    return lines[-1].strip() if lines else "(nothing yet)"


if __name__ == "__main__":
    sys.exit(main())
