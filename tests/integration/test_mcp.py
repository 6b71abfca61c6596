"""MCP through a real kernel: the ``mcp`` package's own client drives ``clove mcp``, whose tools
run in a new sandboxed agent as that agent's syscalls (checked against its grants, journaled as
its own); the agent goes when the client does."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from clove.testing.kernel import poll_for
from tests.conftest import requires_root

mcp = pytest.importorskip("mcp", reason="the mcp package (test extra) is not installed")
from mcp import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

pytestmark = [pytest.mark.integration, requires_root, pytest.mark.timeout(120)]


def text_of(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


async def drive(kernel: Any, name: str) -> dict[str, Any]:
    """One MCP session against ``clove mcp``; returns what each step saw."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "clove", "mcp", "--socket", kernel.socket, "--name", name, "--memory", "256M",
              "--read", "/etc/hostname", "--exec", "/bin/echo"],
    )  # fmt: skip
    seen: dict[str, Any] = {}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        seen["tools"] = sorted(t.name for t in tools.tools)
        seen["whoami"] = json.loads(text_of(await session.call_tool("whoami", {})))
        seen["set"] = await session.call_tool("state_set", {"key": "mcp-key", "value": {"n": 42}})
        seen["get"] = await session.call_tool("state_get", {"key": "mcp-key"})
        seen["hostname"] = await session.call_tool("read_file", {"path": "/etc/hostname"})
        seen["shadow"] = await session.call_tool("read_file", {"path": "/etc/shadow"})
        seen["echo"] = await session.call_tool("exec_command", {"command": ["/bin/echo", "from-mcp"]})
        seen["cat"] = await session.call_tool("exec_command", {"command": ["/bin/cat", "/etc/hostname"]})
        seen["bad"] = await session.call_tool("exec_command", {"command": []})
        seen["message"] = await session.call_tool("send_message", {"message": {"x": 1}})
    return seen


def test_mcp_client_uses_a_sandboxed_agents_syscalls(kernel) -> None:
    seen = anyio.run(drive, kernel, "mcp-tools")
    assert {"whoami", "read_file", "write_file", "exec_command", "http_request", "state_get", "state_set",
            "send_message", "receive_messages", "emit_event", "list_devices", "device_call"} <= set(seen["tools"])  # fmt: skip
    me = seen["whoami"]
    assert me["role"] == "agent" and me["name"] == "mcp-tools"
    agent_id = me["agent_id"]

    # Allowed calls work, as the agent.
    assert not seen["set"].is_error
    assert not seen["get"].is_error and '"n": 42' in text_of(seen["get"])
    assert not seen["hostname"].is_error and text_of(seen["hostname"]) == open("/etc/hostname").read()
    assert not seen["echo"].is_error and "from-mcp" in text_of(seen["echo"])
    # Forbidden ones come back as tool errors carrying the kernel's code; the server carries on.
    assert seen["shadow"].is_error and "perm.denied: reading /etc/shadow" in text_of(seen["shadow"])
    assert seen["cat"].is_error and "perm.denied:" in text_of(seen["cat"])
    assert seen["bad"].is_error and "non-empty list" in text_of(seen["bad"])
    assert seen["message"].is_error and "exactly one of" in text_of(seen["message"])

    with kernel.client() as op:
        # Journaled as the agent's own syscalls, the refusals included.
        records = op.call("audit.query", agent_id=agent_id, limit=1000)["entries"]
        calls = {(r["syscall"], r["decision"]) for r in records if r.get("syscall")}
        assert {("state.store", "allowed"), ("fs.read", "allowed"), ("exec", "allowed")} <= calls, calls
        assert ("fs.read", "denied") in calls and ("exec", "denied") in calls, calls
        assert all(r["agent_id"] == agent_id for r in records)
        # The client went away: the agent was stopped with it.
        poll_for(
            lambda: all(a["id"] != agent_id or a["status"] not in ("starting", "running", "paused") for a in op.list_agents()),
            timeout=30, message="the MCP agent to stop",
        )  # fmt: skip


def test_mcp_refuses_bad_limits_with_a_clear_message(kernel) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "clove", "mcp", "--socket", kernel.socket, "--name", "x", "--cpu", "lots"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--cpu takes a percentage" in done.stderr and "Traceback" not in done.stderr


def test_a_sandboxed_agent_uses_its_tools_over_mcp(kernel) -> None:
    """The example agent starts the stdio MCP server as its own child, inside its sandbox."""
    from tests.conftest import read_report

    example = Path(__file__).resolve().parents[2] / "examples" / "mcp_agent" / "agent.py"
    with kernel.client() as op:
        agent_id = op.call("agent.spawn", name="mcp-agent", script=str(example), limits={"memory": 512 << 20})["id"]
    report = read_report(kernel, "mcp-agent", timeout=60)
    assert "state_set" in report["tools"] and "exec_command" in report["tools"]
    assert report["stored"] and "hello" in report["fetched"]
    assert report["refused"] and "perm.denied" in report["refusal"]
    with kernel.client() as op:
        records = op.call("audit.query", agent_id=agent_id, limit=1000)["entries"]
    assert {("state.store", "allowed"), ("fs.read", "denied")} <= {(r["syscall"], r["decision"]) for r in records}
