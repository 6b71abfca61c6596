"""The MCP pieces that need no kernel: output bounds, JSON-safe replies, and the message link's
chunking, sender check and mailbox back-off (a fake client stands in for the kernel)."""

from __future__ import annotations

from typing import Any

import pytest

from clove_sdk import mcp_bridge
from clove_sdk.errors import CloveError
from clove_sdk.mcp_bridge import CHUNK, MessageLink, PeerGone
from clove_sdk.mcp_server import MAX_TEXT, clip, jsonable


class MailboxFull(CloveError):
    code = "ipc.mailbox_full"


class FakeClient:
    """Two principals' mailboxes: sends go out to ``sent``; ``inbox`` is what ipc.recv returns."""

    def __init__(self, full_times: int = 0) -> None:
        self.sent: list[dict[str, Any]] = []
        self.inbox: list[dict[str, Any]] = []
        self.full_times = full_times

    def call(self, syscall: str, **body: Any) -> Any:
        if syscall == "ipc.send":
            if self.full_times:
                self.full_times -= 1
                raise MailboxFull("mailbox full")
            self.sent.append(body)
            return {"success": True}
        if syscall == "ipc.recv":
            items, self.inbox = self.inbox[: body["max_messages"]], self.inbox[body["max_messages"] :]
            return {"success": True, "messages": items}
        raise AssertionError(syscall)


def test_clip_bounds_text_and_says_what_was_cut() -> None:
    assert clip("short") == "short"
    long = "x" * (MAX_TEXT + 10)
    cut = clip(long)
    assert cut.startswith("x" * MAX_TEXT) and f"cut at {MAX_TEXT} of {MAX_TEXT + 10}" in cut


def test_jsonable_turns_bytes_into_base64_everywhere() -> None:
    assert jsonable({"frame": {"data": b"\x00\x01"}, "list": [b"a"]}) == {"frame": {"data": {"base64": "AAE="}}, "list": [{"base64": "YQ=="}]}


def test_long_lines_go_in_chunks_and_come_back_whole() -> None:
    client = FakeClient()
    link = MessageLink(client, peer=7)  # type: ignore[arg-type]
    line = ("é" * CHUNK).encode()  # 2 bytes a character: several chunks
    link.send_line(line)
    assert len(client.sent) > 1 and all(m["to"] == 7 for m in client.sent)
    assert all(m["message"].get("more") for m in client.sent[:-1]) and "more" not in client.sent[-1]["message"]
    receiver = FakeClient()
    receiver.inbox = [{"from_id": 7, "message": m["message"]} for m in client.sent]
    assert MessageLink(receiver, peer=7).receive_lines(timeout=0) == [line]  # type: ignore[arg-type]


def test_lines_from_anyone_but_the_peer_are_ignored() -> None:
    client = FakeClient()
    client.inbox = [
        {"from_id": 8, "message": {"mcp": '{"jsonrpc": "2.0"}'}},  # another agent or operator
        {"from_id": 7, "message": "not a dict"},
        {"from_id": 7, "message": {"mcp": "ours"}},
    ]
    link = MessageLink(client, peer=7)  # type: ignore[arg-type]
    assert link.receive_lines(timeout=0) == [b"ours"] and link.ignored == 2


def test_a_full_mailbox_is_retried_then_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("clove_sdk.mcp_bridge.time.sleep", lambda s: None)
    client = FakeClient(full_times=3)
    MessageLink(client, peer=1).send_line(b"x")  # type: ignore[arg-type]
    assert len(client.sent) == 1
    monkeypatch.setattr(mcp_bridge, "SEND_PATIENCE", -1.0)
    with pytest.raises(PeerGone, match="ipc.mailbox_full"):
        MessageLink(FakeClient(full_times=10**6), peer=1).send_line(b"x")  # type: ignore[arg-type]


def test_an_endless_line_is_refused() -> None:
    client = FakeClient()
    client.inbox = [{"from_id": 7, "message": {"mcp": "x" * CHUNK, "more": True}}] * (mcp_bridge.MAX_LINE // CHUNK + 2)
    link = MessageLink(client, peer=7)  # type: ignore[arg-type]

    def drain() -> None:
        while client.inbox:
            assert link.receive_lines(timeout=0) == []

    with pytest.raises(PeerGone, match="over"):
        drain()
