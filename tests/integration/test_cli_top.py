"""``clove top`` against a real kernel with real agents: the live view in a pseudo-terminal
(pexpect), read as a person sees it (pyte renders the terminal's output into a screen), and
the plain output a pipe gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pyte
import pytest

from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_script, read_report, requires_root

REPO = Path(__file__).resolve().parents[2]
COLUMNS, LINES = 160, 40

# An e-stop here pauses "alpha": what the operator pressed is visible in the agent's state.
CONFIG = """
[interlocks.halt]
trigger = { event = "HALT" }
actions = [{ pause = ["alpha"] }]
"""


class Terminal:
    """``clove top`` in a pseudo-terminal, its output rendered into a screen."""

    def __init__(self, socket: str) -> None:
        self.child = pexpect.spawn(
            sys.executable, ["-m", "clove", "top", "--socket", socket, "--interval", "0.3"],
            dimensions=(LINES, COLUMNS), cwd=str(REPO), env={**os.environ, "TERM": "xterm-256color"},
        )  # fmt: skip
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.ByteStream(self.screen)

    def pump(self) -> None:
        """Feed whatever the program wrote so far into the screen."""
        while True:
            try:
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.05))
            except (pexpect.TIMEOUT, pexpect.EOF):
                return

    def lines(self) -> list[str]:
        self.pump()
        return list(self.screen.display)

    def text(self) -> str:
        return "\n".join(self.lines())

    def wait_text(self, needle: str, timeout: float = 20.0) -> str:
        return poll_for(lambda: needle in (t := self.text()) and t, timeout, message=f"{needle!r} on screen:\n{self.text()}")

    def agent(self, name: str) -> tuple[int, list[str]] | None:
        """The screen line of agent ``name`` and its cells, or None when it is not shown."""
        for index, line in enumerate(self.lines()):
            cells = line.split()
            if cells[:1] == [">"]:
                cells = cells[1:]
            if len(cells) > 3 and cells[0].isdigit() and cells[1] == name:
                return index, cells
        return None

    def wait_agent(self, name: str, state: str, timeout: float = 20.0) -> int:
        found = poll_for(lambda: (row := self.agent(name)) is not None and row[1][2] == state and row, timeout,
                         message=f"{name} {state} on screen:\n{self.text()}")  # fmt: skip
        return int(found[0])

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


def _state(k: KernelProcess, name: str) -> str | None:
    return next((a["state"] for a in k.call("agent.list")["agents"] if a["name"] == name), None)


pytestmark = [pytest.mark.integration, requires_root]


def test_live_view_sorts_filters_pauses_kills_only_after_yes_and_e_stops(make_kernel) -> None:
    k = make_kernel(CONFIG)
    with k.client() as op:
        op.spawn("zeta", agent_script("healthy.py"), limits={"memory": "128M", "cpu_quota": "20%"})
        op.spawn("alpha", agent_script("healthy.py"))
    term = Terminal(k.socket)
    try:
        # Agents appear with their state; the CPU quota and memory limit are shown against usage.
        zeta, alpha = term.wait_agent("zeta", "running"), term.wait_agent("alpha", "running")
        assert zeta < alpha  # by id: zeta was spawned first
        cells = term.agent("zeta")[1]  # type: ignore[index]
        assert cells[3].endswith("/20%") and "/128.0M" in cells[4]
        poll_for(lambda: term.agent("zeta")[1][-3] not in ("-", "0.0"), 20, message="zeta's syscalls/s")  # type: ignore[index]

        term.child.send("s")  # sort by name
        term.wait_text("sort: name ↑")
        assert term.wait_agent("alpha", "running") < term.wait_agent("zeta", "running")
        term.child.send("S")  # reversed
        term.wait_text("sort: name ↓")
        assert term.wait_agent("zeta", "running") < term.wait_agent("alpha", "running")

        term.child.send("/zet\r")  # filter: only zeta is left, so it is the selected agent
        term.wait_text("(1 shown)")
        assert term.agent("alpha") is None and term.agent("zeta") is not None

        term.child.send("p")
        term.wait_agent("zeta", "paused")
        assert _state(k, "zeta") == "paused"
        term.child.send("r")
        term.wait_agent("zeta", "running")
        assert _state(k, "zeta") == "running"

        term.child.send("k")  # asks first; anything but "y" cancels
        term.wait_text("kill zeta (id")
        term.child.send("n")
        term.wait_text("kill zeta cancelled")
        assert _state(k, "zeta") == "running"
        term.child.send("k")
        term.wait_text("kill zeta (id")
        term.child.send("y")
        term.wait_text("killed zeta")
        poll_for(lambda: _state(k, "zeta") is None, message="zeta gone from the kernel")
        poll_for(lambda: term.agent("zeta") is None, message="zeta gone from the screen")

        term.child.send("/")  # clear the filter: backspace over it, keep the empty one
        term.child.send("\x7f\x7f\x7f\r")
        term.wait_agent("alpha", "running")
        term.child.send("E")  # e-stop: every interlock, no question asked
        term.wait_text("halt ENGAGED")
        term.wait_agent("alpha", "paused")
        assert [i["engaged"] for i in k.call("interlock.list")["interlocks"]] == [True]

        term.child.send("q")
        term.child.expect(pexpect.EOF, timeout=10)
        term.child.close()
        assert term.child.exitstatus == 0
    finally:
        term.close()


def _top(k: KernelProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clove", "top", "--socket", k.socket, *args],
        capture_output=True, text=True, timeout=60, cwd=str(REPO), stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_plain_output_when_not_a_terminal_with_kernel_time_and_denials(make_kernel) -> None:
    k = make_kernel(CONFIG + '[devices.bus]\ndriver = "loopback"\n')
    poll_for(lambda: k.call("device.info", device="bus")["device"]["state"] == "ready", 20, message="bus ready")
    with k.client() as op:
        op.spawn("flooder", agent_script("denial_flood.py"), args=["40", "10"])
        op.spawn("ticker", agent_script("healthy.py"))
    assert read_report(k, "flooder")["failed"] == 40

    # The figures top shows, straight from metrics.agents: calls, kernel time, denials.
    rows = {r["name"]: r for r in k.call("metrics.agents")["agents"]}
    assert rows["flooder"]["kernel"]["denied"] == 40 and rows["flooder"]["kernel"]["calls"] >= 40
    assert rows["flooder"]["kernel"]["kernel_time_us"] > 0 and rows["ticker"]["kernel"]["denied"] == 0

    once = _top(k)  # stdout is a pipe: one plain snapshot, no escape codes
    assert once.returncode == 0, once.stderr
    assert "\x1b" not in once.stdout
    lines = once.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "STATE"]
    flooder = next(line.split() for line in lines if " flooder " in line)
    assert flooder[2] == "running" and flooder[-1] == "40"
    assert "interlocks: 1 armed, none engaged" in once.stdout and "llm: gateway disabled" in once.stdout
    assert next(line.split() for line in lines if line.startswith("bus "))[:3] == ["bus", "loopback", "ready"]

    two = _top(k, "--iterations", "2", "--interval", "0.2", "--json", "--filter", "tick")
    assert two.returncode == 0, two.stderr
    snaps = [json.loads(line) for line in two.stdout.splitlines()]
    assert len(snaps) == 2 and [[a["name"] for a in s["agents"]] for s in snaps] == [["ticker"], ["ticker"]]
    assert snaps[0]["agents"][0]["syscalls_per_s"] is None  # a rate needs two snapshots
    assert snaps[1]["agents"][0]["syscalls_per_s"] > 0 and snaps[1]["interlocks"][0]["name"] == "halt"

    # A picture of the screen for a report: an SVG that parses and shows the agents.
    import xml.etree.ElementTree as ET

    svg = Path(k.dir) / "top.svg"
    shot = _top(k, "--svg", str(svg), "--interval", "0.2")
    assert shot.returncode == 0 and f"wrote {svg}" in shot.stdout, shot.stderr
    root = ET.parse(svg).getroot()
    text = "".join(root.itertext()).replace("\u00a0", " ")
    assert root.tag.endswith("svg") and "flooder" in text and "ticker" in text and "SYSCALLS/S" in text
    unwritable = _top(k, "--svg", str(Path(k.dir) / "no-such-dir" / "top.svg"), "--interval", "0.2")
    assert unwritable.returncode == 1 and "cannot write" in unwritable.stderr and "Traceback" not in unwritable.stderr


def test_bad_arguments_and_no_kernel_are_one_line_errors(tmp_path: Path) -> None:
    bad = subprocess.run([sys.executable, "-m", "clove", "top", "--interval", "0"], capture_output=True, text=True, timeout=30, cwd=str(REPO))
    assert bad.returncode == 2 and "expected seconds between 0.1 and 3600" in bad.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "clove", "top", "--socket", str(tmp_path / "none.sock")],
        capture_output=True, text=True, timeout=30, cwd=str(REPO),
    )  # fmt: skip
    assert missing.returncode == 1 and missing.stderr.startswith("clove: no kernel running") and "Traceback" not in missing.stderr
