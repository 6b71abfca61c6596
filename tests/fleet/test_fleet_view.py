"""`clove fleet top` and `clove fleet logs` against a real nats-server (the example hub config's
users and permissions) and real kernels as boards (docs/fleet.md, "top and logs"): the board
list from the watched bucket, as JSON lines and as the live screen in a pseudo-terminal (pexpect,
read through pyte as a person sees it), a stopped board turning lost; an agent's log read
through a signed `logs` command, refused for a key without the right, cut when too long."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pexpect
import pyte
import pytest
from nats.js.kv import KV_DEL, KeyValue
from rich.console import Console

from clove.cli.fleet_view import render
from clove.cli.fleet_view.controls import FleetControls, agents_view, boards_view
from clove.cli.fleet_view.model import board_row
from clove.cli.fleet_view.watch import MAX_ENTRY_BYTES, BoardEntries
from clove.fleet.actions import answer_value, plan
from clove.fleet.commands import generate_key, key_id, load_private_key, public_key_text
from clove.fleet.logs import MAX_ANSWER_BYTES, MAX_LINES
from clove.testing.kernel import KernelProcess, poll_for
from tests.conftest import agent_script, requires_root
from tests.fleet.conftest import Hub

REPO = Path(__file__).resolve().parents[2]
COLUMNS, LINES = 200, 40

# 2000 lines of 60 bytes (120 kB: more than one answer carries), then a tick every 0.2 s.
TALKER = """\
import time
from clove_sdk import CloveClient

with CloveClient(timeout=10) as c:
    c.hello()
    for i in range(2000):
        print(f"line-{i:05d} " + "x" * 48)
    print("burst-done", flush=True)
    n = 0
    while True:
        time.sleep(0.2)
        n += 1
        print(f"tick-{n}", flush=True)
"""


def _top_json(hub: Hub, *extra: str) -> dict[str, dict[str, Any]]:
    result = hub.fleet_cli("top", "--once", "--json", *extra)
    assert result.returncode == 0, result.stderr
    return {row["board"]: row for row in map(json.loads, result.stdout.splitlines())}


class Screen:
    """`clove fleet top` in a pseudo-terminal, its output rendered into a screen."""

    def __init__(self, hub: Hub) -> None:
        args = ["-m", "clove", "fleet", "top", "--server", hub.url, "--user", "operator",
                "--password-file", hub.password_file("operator"), "--interval", "0.3"]  # fmt: skip
        self.child = pexpect.spawn(sys.executable, args, dimensions=(LINES, COLUMNS), cwd=str(REPO), env={**os.environ, "TERM": "xterm-256color"})
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.ByteStream(self.screen)

    def text(self) -> str:
        while True:
            try:
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.05))
            except (pexpect.TIMEOUT, pexpect.EOF):
                break
        return "\n".join(self.screen.display)

    def line(self, cell: str, at: int = 0) -> list[str] | None:
        """The cells of the screen line whose cell ``at`` (after the selection mark) is ``cell``."""
        for line in self.text().splitlines():
            cells = line.split()
            cells = cells[1:] if cells[:1] == [">"] else cells
            if cells[at : at + 1] == [cell]:
                return cells
        return None

    def wait(self, check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
        try:
            return poll_for(check, timeout, interval=0.1, message=what)
        except TimeoutError:
            raise AssertionError(f"no {what} on screen within {timeout} s:\n{self.text()}") from None


@pytest.mark.integration
@requires_root
def test_fleet_top_shows_every_board_and_a_stopped_board_lost(hub: Hub, make_kernel: Callable[..., KernelProcess]) -> None:
    a = make_kernel(hub.board_config("board-a", lost_after=15.0))  # up throughout, even with a late beat
    b = make_kernel(hub.board_config("board-b"))  # lost 2 s after it stops
    with a.client() as c:
        c.spawn("ticker", agent_script("healthy.py"))

    def both() -> dict[str, dict[str, Any]] | None:
        rows = _top_json(hub)
        ready = {"board-a", "board-b"} <= set(rows) and [x["state"] for x in rows["board-a"]["agents"]] == ["running"]
        return rows if ready else None

    rows = poll_for(both, 20, interval=0.2, message="both boards, with board-a's ticker running")
    row_a, row_b = rows["board-a"], rows["board-b"]
    assert (row_a["state"], row_b["state"]) == ("up", "up")
    assert row_a["agents_by_state"] == {"running": 1} and row_a["agents_total"] == 1 and row_b["agents"] == []
    (ticker,) = row_a["agents"]
    assert ticker["name"] == "ticker" and ticker["restarts"] == 0
    assert row_a["version"] and row_a["uptime"] >= 0 and row_a["heartbeat_age"] < 15
    assert row_a["engaged"] == {} and row_a["isolation"]["backend"] and row_a["link_state"] == "connected"
    # A heartbeat re-sends the kernel's last inventory with the link's current shipped position,
    # which may be past that inventory's journal_last_id: the lag is then 0, never negative.
    assert row_a["journal_last_id"] > 0 and row_a["lag"] == max(0, row_a["journal_last_id"] - row_a["shipped_seq"])

    plain = hub.fleet_cli("top", "--once", "--board", "board-a")
    assert plain.returncode == 0, plain.stderr
    assert "2 boards (2 up, 0 lost)" in plain.stdout and "ticker" in plain.stdout and "journal: shipped" in plain.stdout
    unknown = hub.fleet_cli("top", "--once", "--board", "board-z")
    assert unknown.returncode == 1 and "no board 'board-z' in the fleet" in unknown.stderr and "Traceback" not in unknown.stderr

    screen = Screen(hub)
    try:
        screen.wait(lambda: (cells := screen.line("board-a")) is not None and cells[1] == "up" and "1/1" in cells, "board-a up with 1/1 agents")
        screen.wait(lambda: (cells := screen.line("board-b")) is not None and cells[1] == "up", "board-b up")
        screen.child.send("\r")  # open the selected board: board-a, first by name
        screen.wait(lambda: (cells := screen.line("ticker", at=1)) is not None and cells[2] == "running", "board-a's ticker running")
        assert "board board-a: up" in screen.text()
        screen.child.send("\x1b")  # back to the list
        screen.wait(lambda: screen.line("board-b") is not None, "the board list again")

        b.stop()
        screen.wait(lambda: (cells := screen.line("board-b")) is not None and cells[1] == "LOST", "board-b lost", timeout=15)
        assert screen.line("board-a")[1] == "up"  # type: ignore[index]
        screen.child.send("q")
        screen.child.expect(pexpect.EOF, timeout=10)
    finally:
        if screen.child.isalive():
            screen.child.terminate(force=True)
    screen.child.close()
    assert screen.child.exitstatus == 0
    rows = _top_json(hub)
    assert (rows["board-a"]["state"], rows["board-b"]["state"]) == ("up", "lost")


def _keys(tmp_path: Path) -> dict[str, Path]:
    keys = {name: tmp_path / f"{name}.pem" for name in ("reader", "site")}
    for path in keys.values():
        generate_key(path)
    return keys


def _public(path: Path) -> str:
    return public_key_text(load_private_key(path).public_key())


def _fleet_records(k: KernelProcess, event: str) -> list[dict[str, Any]]:
    lines = (k.state_dir / "journal.jsonl").read_bytes().split(b"\n")[:-1]
    return [r for r in map(json.loads, lines) if r["event_type"] == event]


@pytest.mark.integration
@requires_root
def _sigint_as_on_a_terminal() -> None:
    """Ctrl-C's default action in the child, whatever this run inherited: a suite started in the
    background by a non-interactive shell ignores SIGINT, and so would the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_fleet_logs_reads_an_agents_log_refuses_a_key_without_the_right_and_cuts(
    hub: Hub, make_kernel: Callable[..., KernelProcess], tmp_path: Path
) -> None:
    keys = _keys(tmp_path)
    a = make_kernel(hub.board_config("board-a", lost_after=15.0) + f"""
[fleet.operators.reader]
public_key = "{_public(keys["reader"])}"
may = ["logs"]

[fleet.operators.site-team]
public_key = "{_public(keys["site"])}"
may = ["estop"]
""")
    script = tmp_path / "agent" / "talker.py"  # tmp_path is 0700: the agent's uid could not enter it
    script.parent.mkdir(mode=0o755)
    script.write_text(TALKER)
    with a.client() as c:
        assert c.spawn("talker", str(script))["success"]
    poll_for(lambda: b"burst-done" in a.call("agent.logs", name="talker", offset=0, max_bytes=1 << 20)["data"], 20, message="the talker's burst")
    poll_for(lambda: "board-a" in hub.boards(), 15, interval=0.2, message="board-a in the bucket")

    def logs(*extra: str, key: str = "reader") -> subprocess.CompletedProcess[str]:
        return hub.fleet_cli("logs", *extra, "--key", str(keys[key]))

    five = logs("board-a/talker", "--lines", "5")
    assert five.returncode == 0, five.stderr
    assert len(five.stdout.splitlines()) == 5 and five.stdout.splitlines()[-1].startswith("tick-"), five.stdout
    assert "cut: showing the last 5 of" in five.stderr

    everything = logs("board-a/talker", "--lines", "10000", "--json")
    assert everything.returncode == 0, everything.stderr
    value = json.loads(everything.stdout)
    text = value["text"]
    assert len(text.encode()) <= MAX_ANSWER_BYTES and value["size"] > MAX_ANSWER_BYTES
    assert f"only its last {MAX_ANSWER_BYTES} were read" in value["cut"], value["cut"]
    assert "line-01999" in text and "line-00000" not in text and text.startswith("line-")  # the partial first line is dropped

    # The operator's signed command is journaled on the board with its key id, and the read as
    # the syscall `clove logs` makes, marked as a fleet command's.
    allowed = [r["details"] for r in _fleet_records(a, "fleet.command") if r["details"]["command"] == "logs"]
    assert allowed and allowed[0]["key_id"] == key_id(load_private_key(keys["reader"]).public_key()) and allowed[0]["calls"] == ["agent.logs"]
    reads = [r for r in a.call("audit.query", limit=1000)["entries"] if r.get("syscall") == "agent.logs" and r["details"].get("fleet")]
    assert reads, "the agent.logs call of the fleet command in the journal"

    refused = logs("board-a/talker", key="site")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "refused fleet.not_allowed: key 'site-team' may not give 'logs'" in refused.stderr, refused.stderr
    denied = [r for r in _fleet_records(a, "fleet.command") if r["details"]["code"] == "fleet.not_allowed"]
    assert denied and denied[0]["decision"] == "denied" and denied[0]["details"]["key_id"] == key_id(load_private_key(keys["site"]).public_key())

    ghost = logs("board-a/ghost")
    assert ghost.returncode == 1 and "fleet logs board-a/ghost: notfound" in ghost.stderr and "Traceback" not in ghost.stderr
    nowhere = logs("board-z/talker")
    assert nowhere.returncode == 1 and "no board 'board-z' in the fleet" in nowhere.stderr
    malformed = logs("board-a")
    assert malformed.returncode == 1 and "expected BOARD/AGENT" in malformed.stderr

    # --follow asks again from where the last answer ended: new ticks arrive, none twice.
    with (tmp_path / "follow.err").open("wb") as err:  # the child keeps its own copy
        follow = subprocess.Popen(
            [sys.executable, "-m", "clove", "fleet", "logs", "board-a/talker", "--lines", "1", "--follow", "--interval", "0.5",
             "--key", str(keys["reader"]), "--server", hub.url, "--user", "operator", "--password-file", hub.password_file("operator")],
            stdout=subprocess.PIPE, stderr=err, preexec_fn=_sigint_as_on_a_terminal,
        )  # fmt: skip
    out = b""
    try:
        assert follow.stdout is not None
        fd = follow.stdout.fileno()
        os.set_blocking(fd, False)

        def ticks() -> list[str] | None:
            nonlocal out
            try:
                out += os.read(fd, 65536)
            except BlockingIOError:
                pass
            lines = out.decode().split("\n")[:-1]
            return lines if len(lines) >= 4 else None

        seen = poll_for(ticks, 20, interval=0.2, message="four ticks followed")
    finally:
        os.kill(follow.pid, signal.SIGINT)  # how an operator stops following: Ctrl-C
        try:
            follow.wait(10)
        except subprocess.TimeoutExpired:  # say what it was doing, and leave nothing running
            follow.kill()
            follow.wait()
            raise AssertionError(
                f"fleet logs --follow still ran 10 s after Ctrl-C; read from it: {out[-400:]!r}; "
                f"its stderr: {(tmp_path / 'follow.err').read_text()[-3000:]}"
            ) from None
    assert follow.returncode == 130 and "Traceback" not in (tmp_path / "follow.err").read_text(), (tmp_path / "follow.err").read_text()
    numbers = [int(line.removeprefix("tick-")) for line in seen]
    assert all(line.startswith("tick-") for line in seen) and numbers == list(range(numbers[0], numbers[0] + len(numbers))), seen


# ---- the pure parts (no hub, no kernel): the log answer's bounds, the arguments, the entries,
# ---- the keys, the frame


def _plan(**args: Any) -> list[tuple[str, dict[str, Any]]]:
    return plan("logs", args, operator="op", engaged=[], exchanges=[])


def test_logs_arguments_are_checked_strictly() -> None:
    assert _plan(agent="talker") == [("agent.logs", {"name": "talker", "offset": -MAX_ANSWER_BYTES, "max_bytes": MAX_ANSWER_BYTES})]
    assert _plan(agent="talker", offset=42, lines=3)[0][1]["offset"] == 42
    for bad in ({"lines": 0}, {"lines": MAX_LINES + 1}, {"lines": True}, {"lines": "5"}, {"offset": -1}, {"offset": 1 << 60}, {"offset": 1.5}):
        with pytest.raises(ValueError, match="must be a whole number"):
            _plan(agent="talker", **bad)
    with pytest.raises(ValueError, match="unknown argument 'bytes'"):
        _plan(agent="talker", bytes=5)
    with pytest.raises(ValueError, match="'agent' is required"):
        _plan(lines=5)
    assert answer_value("kill", {"agent": "x"}, {"success": True}) is None  # acting commands answer with no value


def _answer(data: bytes, *, offset: int, size: int, **args: Any) -> dict[str, Any]:
    value = answer_value("logs", {"agent": "a", **args}, {"data": data, "offset": offset, "size": size, "state": "running"})
    assert isinstance(value, dict)
    return value


def test_a_log_answer_is_bounded_and_says_when_it_was_cut() -> None:
    tail = b"partial\none\ntwo\nthree\n"
    whole = _answer(tail[8:], offset=14, size=14)
    assert (whole["text"], whole["cut"], whole["lines"], whole["state"]) == ("one\ntwo\nthree\n", None, 3, "running")
    cut = _answer(tail, offset=1000, size=1000, lines=2)  # read from the middle: the first line is partial
    assert cut["text"] == "two\nthree\n" and cut["offset"] == 1000 and cut["pending"] == 0
    assert cut["cut"] == f"showing the last 2 of 3 lines read; the log is 1000 bytes: only its last {len(tail)} were read"
    # An agent that writes only control bytes, more than an answer carries: still under NATS's
    # default max_payload once JSON-escaped.
    hostile = _answer(b"\x01" * (4 * MAX_ANSWER_BYTES), offset=4 * MAX_ANSWER_BYTES, size=4 * MAX_ANSWER_BYTES, lines=MAX_LINES)
    assert len(hostile["text"]) <= MAX_ANSWER_BYTES and len(json.dumps(hostile)) < 1 << 20
    # Following: whole lines only when the piece is full, the rest is asked next time.
    full = (b"x" * 99 + b"\n") * (MAX_ANSWER_BYTES // 100) + b"y" * (MAX_ANSWER_BYTES % 100)
    follow = answer_value("logs", {"agent": "a", "offset": 10}, {"data": full, "offset": 10 + len(full), "size": 10 + len(full) + 5})
    assert follow["text"].endswith("\n") and follow["offset"] == 10 + len(follow["text"]) and follow["pending"] == len(full) - len(follow["text"]) + 5
    rotated = answer_value("logs", {"agent": "a", "offset": 5000}, {"data": b"new\n", "offset": 4, "size": 4})
    assert rotated["text"] == "new\n" and "rotated" in rotated["cut"]
    assert answer_value("logs", {"agent": "a"}, {"data": "not bytes"})["cut"] == "the board's answer held no log"


def _entry(key: str, value: bytes | None, operation: str | None = None) -> KeyValue.Entry:
    return KeyValue.Entry(bucket="clove_boards", key=key, value=value, revision=1, delta=0, created=None, operation=operation)


def test_the_view_holds_a_bounded_number_of_boards_and_distrusts_their_entries() -> None:
    boards = BoardEntries(max_boards=2)
    for name in ("a", "b", "c", "d"):
        boards.apply(_entry(name, json.dumps({"heartbeat_at": 100.0, "lost_after": 5}).encode()))
    assert set(boards.entries) == {"a", "b"} and boards.omitted == {"c", "d"}
    boards.apply(_entry("b", None, KV_DEL))
    boards.apply(_entry("a", b"[" * (MAX_ENTRY_BYTES + 1)))
    assert "b" not in boards.entries and boards.entries["a"].at(101.0).state == "invalid"
    assert board_row("x", {"heartbeat_at": 100.0, "lost_after": 5}, 104.0).state == "up"
    assert board_row("x", {"heartbeat_at": 100.0, "lost_after": 5}, 106.0).state == "lost"
    assert board_row("x", {"heartbeat_at": 100.0, "lost_after": 5}, 104.0, lost_after=3.0).state == "lost"
    odd = board_row("x", {"heartbeat_at": "soon", "agents": [7, {"id": "1", "name": None}], "kernel": 5, "devices": "no", "trading": [1]}, 0.0)
    assert odd.state == "lost" and [(a.id, a.name, a.state) for a in odd.agents] == [(0, "?", "?")] and odd.devices == () and odd.trading == {}


def test_fleet_top_keys_open_a_board_filter_and_go_back() -> None:
    rows = [board_row(name, {"heartbeat_at": 0.0, "agents": [{"id": 1, "name": "ticker", "state": "running"}]}, 1.0) for name in ("b", "a")]
    controls = FleetControls(boards_view(), agents_view(), shown_boards=lambda: controls.boards.visible(rows), shown_agents=lambda: controls.agents.visible(list(rows[0].agents)))
    assert [r.name for r in controls.shown_boards()] == ["a", "b"]
    controls.on_key("down")
    controls.on_key("enter")
    assert controls.board == "b" and controls.view is controls.agents
    for key in ("/", "t", "i", "enter"):
        controls.on_key(key)
    assert controls.agents.filter == "ti" and not controls.filtering
    controls.on_key("esc")
    assert controls.board is None
    for key in ("/", "z", "esc"):
        controls.on_key(key)
    assert controls.boards.filter == ""  # Esc put the old filter back
    controls.on_key("s")
    assert controls.boards.sort == "state"
    assert controls.on_key("q") is True


def test_a_frame_lays_out_only_the_rows_that_fit_and_keeps_the_selection_in_them() -> None:
    rows = [board_row(f"b{i:04d}", {"heartbeat_at": 0.0, "lost_after": 5}, 1.0) for i in range(1000)]
    view = boards_view()
    view.selected_id = "b0500"
    fits, where = render.window(view.visible(rows), view.selected(view.visible(rows)), 34)
    assert len(fits) == 34 and "b0500" in [r.id for r in fits] and where == "   rows 484-517 of 1000"
    assert render.window(rows[:3], None, 34) == (rows[:3], "")
    console = Console(file=io.StringIO(), width=200, height=40, force_terminal=True)
    console.print(render.board_list(rows, view, omitted=0, hub="hub", status="", prompt="", height=40))
    screen = console.file.getvalue()  # type: ignore[attr-defined]
    assert "rows 484-517 of 1000" in screen and "b0500" in screen and "b0000" not in screen
