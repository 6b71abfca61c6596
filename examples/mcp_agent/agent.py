"""An agent whose tools come over MCP: it starts Clove's MCP server as a child process (stdio),
lists the tools and uses them. The server inherits this agent's channel, so every tool call is
this agent's own syscall, checked against its grants and journaled.

Run it under a kernel (docs/mcp.md)::

    clove spawn mcp-demo examples/mcp_agent/agent.py

It prints one ``REPORT {json}`` line with what it saw.
"""

from __future__ import annotations

import json
import os
import sys

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


def text(result: object) -> str:
    return "".join(getattr(part, "text", "") for part in getattr(result, "content", []))


async def main() -> dict[str, object]:
    # The server must inherit CLOVE_AGENT_ENDPOINT: stdio_client passes only a few variables by default.
    server = StdioServerParameters(command=sys.executable, args=["-m", "clove_sdk.mcp_server"], env=dict(os.environ))
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = sorted(t.name for t in (await session.list_tools()).tools)
        stored = await session.call_tool("state_set", {"key": "mcp-demo", "value": "hello", "scope": "agent"})
        fetched = await session.call_tool("state_get", {"key": "mcp-demo", "scope": "agent"})
        refused = await session.call_tool("read_file", {"path": "/etc/shadow"})
    return {
        "tools": tools,
        "stored": not stored.is_error,
        "fetched": text(fetched),
        "refused": refused.is_error,
        "refusal": text(refused),
    }


if __name__ == "__main__":
    print("REPORT " + json.dumps(anyio.run(main)), flush=True)
