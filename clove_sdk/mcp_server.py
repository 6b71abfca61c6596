"""An MCP server whose tools are the calling agent's own syscalls (docs/mcp.md).

``python -m clove_sdk.mcp_server`` speaks MCP over stdio. Started inside an agent's sandbox (a
framework that speaks MCP starts it as a child process), it inherits the agent's channel
(``CLOVE_AGENT_ENDPOINT``), so every tool call is a syscall of that agent: the kernel checks it
against the agent's grants and journals it as the agent's, exactly as if the agent had made it
through :class:`~clove_sdk.CloveClient`. Nothing here decides what is allowed.

A refusal or failure comes back as an MCP tool error whose text starts with the kernel's stable
code (``perm.denied: ...``), which a model can read; the server carries on. Outputs a model would
read are bounded (:data:`MAX_TEXT` characters, with a marker saying what was cut).

``--peer ID`` serves one operator session instead (``clove mcp``, for an operator's desktop
client): MCP's lines travel as Clove messages between this agent and session ``ID`` (the kernel
sets each message's sender, so no one else can drive the tools), through a pipe pair that stands
in for stdin and stdout, so both routes are the same stdio server (:mod:`clove_sdk.mcp_bridge`).

Needs the ``mcp`` package (``pip install 'clove-sdk[mcp]'``).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
    del sys.path[0]  # run as a script (an agent's script is a file): clove_sdk/ must not shadow top-level modules

import argparse
import base64
import json
import threading
from collections.abc import Callable
from typing import Any, Final

from clove_sdk.client import CloveClient
from clove_sdk.errors import CloveError

#: Characters of text a tool hands back at most (file contents, command output, HTTP bodies).
MAX_TEXT: Final = 64 * 1024
#: A command's run or an HTTP request, at most (the kernel has its own ceilings too).
MAX_TIMEOUT: Final = 300.0
SERVER_NAME: Final = "clove"


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text``, cut to ``limit`` characters with a marker saying how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[clove: output cut at {limit} of {len(text)} characters]"


def jsonable(value: Any) -> Any:
    """A reply made JSON-safe: bytes as ``{"base64": ...}`` (device reads, raw bodies)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


class Syscalls:
    """The agent's syscalls as the tools use them: one client, one call at a time (the MCP
    server may run tools on worker threads), every kernel error raised as a tool error."""

    def __init__(self, client_factory: Callable[[], CloveClient], tool_error: type[Exception]) -> None:
        self._factory = client_factory
        self._client: CloveClient | None = None
        self._lock = threading.Lock()
        self._tool_error = tool_error

    def call(self, syscall: str, **body: Any) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            try:
                return self._client.call(syscall, **body)
            except CloveError as err:
                raise self._tool_error(f"{err.code}: {err.message}") from None

    def refuse(self, message: str) -> Exception:
        """A tool error for bad input, which the model reads (a plain exception would reach it
        only as "Error executing tool")."""
        return self._tool_error(f"proto.invalid_args: {message}")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _text(value: Any) -> str:
    return clip(json.dumps(jsonable(value), ensure_ascii=False, default=str))


def _timeout(calls: Syscalls, value: float) -> float:
    if not 0 < value <= MAX_TIMEOUT:
        raise calls.refuse(f"timeout must be within (0, {MAX_TIMEOUT:g}] seconds, got {value}")
    return float(value)


def build_server(calls: Syscalls) -> Any:
    """The MCP server with one tool per syscall an agent would use."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer(
        SERVER_NAME,
        instructions=(
            "Tools that act as this Clove agent. Each call is checked against the agent's grants "
            "and journaled; a refusal starts with its code, e.g. 'perm.denied:'."
        ),
    )

    @server.tool()
    def whoami() -> str:
        """This agent's id, name and the kernel it talks to."""
        return _text(calls.call("hello"))

    @server.tool()
    def read_file(path: str) -> str:
        """Read a text file the agent may read (its read_paths grant)."""
        reply = calls.call("fs.read", path=path)
        content = reply.get("content", "")
        if isinstance(content, bytes):
            content = content.decode("utf-8", errors="replace")
        return clip(str(content))

    @server.tool()
    def write_file(path: str, content: str, append: bool = False) -> str:
        """Write (or append to) a file the agent may write (its write_paths grant)."""
        reply = calls.call("fs.write", path=path, content=content, mode="append" if append else "write")
        return f"wrote {reply.get('bytes_written', 0)} bytes to {path}"

    @server.tool()
    def exec_command(command: list[str], cwd: str | None = None, timeout: float = 30.0) -> str:
        """Run a command (an argv list) inside the agent's sandbox, as its exec grants allow."""
        if not command or not all(isinstance(part, str) for part in command):
            raise calls.refuse("command must be a non-empty list of strings")
        body: dict[str, Any] = {"command": command, "timeout": _timeout(calls, timeout)}
        if cwd is not None:
            body["cwd"] = cwd
        reply = calls.call("exec", **body)
        return clip(
            f"exit_code: {reply.get('exit_code')}{' (timed out)' if reply.get('timed_out') else ''}\n"
            f"stdout:\n{reply.get('stdout', '')}\nstderr:\n{reply.get('stderr', '')}"
        )

    @server.tool()
    def http_request(url: str, method: str = "GET", body: str | None = None, headers: dict[str, str] | None = None, timeout: float = 30.0) -> str:
        """An HTTP request made by the kernel for the agent (its http_domains and http_methods)."""
        call: dict[str, Any] = {"url": url, "method": method, "timeout": _timeout(calls, timeout)}
        if body is not None:
            call["body"] = body
        if headers:
            call["headers"] = dict(headers)
        reply = calls.call("http", **call)
        text = reply.get("body", "")
        if reply.get("encoding") == "base64":
            text = f"[{len(base64.b64decode(text))} bytes of binary body]"
        return clip(f"status: {reply.get('status_code')}\n{text}")

    @server.tool()
    def state_get(key: str, scope: str | None = None) -> str:
        """A value from the kernel's key-value store."""
        return _text(calls.call("state.fetch", key=key, **({"scope": scope} if scope else {})))

    @server.tool()
    def state_set(key: str, value: Any, scope: str = "global", ttl: float | None = None) -> str:
        """Store a JSON value under ``key`` (scope ``global``, ``agent`` or ``session``)."""
        body: dict[str, Any] = {"key": key, "value": value, "scope": scope}
        if ttl is not None:
            body["ttl"] = ttl
        return _text(calls.call("state.store", **body))

    @server.tool()
    def state_keys(prefix: str = "", scope: str | None = None) -> str:
        """Keys in the store that start with ``prefix``."""
        return _text(calls.call("state.keys", prefix=prefix, **({"scope": scope} if scope else {})))

    @server.tool()
    def send_message(message: dict[str, Any], to: int | None = None, to_name: str | None = None) -> str:
        """Send a message to another agent or operator, by id or registered name."""
        if (to is None) == (to_name is None):
            raise calls.refuse("give exactly one of to (an agent id) or to_name")
        body: dict[str, Any] = {"message": message}
        body.update({"to": to} if to is not None else {"to_name": to_name})
        return _text(calls.call("ipc.send", **body))

    @server.tool()
    def receive_messages(max_messages: int = 10, timeout: float | None = None) -> str:
        """Messages queued for this agent, oldest first (waits up to ``timeout`` seconds)."""
        body: dict[str, Any] = {"max_messages": max(1, min(int(max_messages), 100))}
        if timeout is not None:
            body["timeout"] = _timeout(calls, timeout)
        return _text(calls.call("ipc.recv", **body))

    @server.tool()
    def emit_event(event_type: str, data: Any = None) -> str:
        """Publish a custom event to the agents subscribed to ``event_type``."""
        return _text(calls.call("events.emit", event_type=event_type, data=data))

    @server.tool()
    def list_devices() -> str:
        """The devices this agent may use, with their state and operations."""
        return _text(calls.call("device.list")["devices"])

    @server.tool()
    def device_call(device: str, op: str, args: dict[str, Any] | None = None) -> str:
        """Run a driver operation on a device within the agent's grant (e.g. a CAN ``send``)."""
        return _text(calls.call("device.call", device=device, op=op, args=dict(args or {}))["result"])

    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clove_sdk.mcp_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", type=int, metavar="ID", help="serve this operator session over Clove messages instead of stdio")
    args = parser.parse_args(argv)
    try:
        from mcp.server.mcpserver.exceptions import ToolError
    except ImportError:
        print("clove_sdk.mcp_server needs the mcp package: pip install 'clove-sdk[mcp]'", file=sys.stderr)
        return 2
    if args.peer is not None:
        from clove_sdk.mcp_bridge import bridge_stdio

        bridge_stdio(CloveClient(), args.peer)
    calls = Syscalls(CloveClient, ToolError)
    try:
        build_server(calls).run("stdio")
    finally:
        calls.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
