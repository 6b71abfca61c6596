"""``clove mcp``: a sandboxed agent as the tool runtime of an operator's desktop MCP client.

The desktop client runs ``clove mcp --name N [limits] [grants]`` as its stdio MCP server. The
command spawns a new sandboxed agent (each MCP session is an agent with its own limits and
grants) whose script is :mod:`clove_sdk.mcp_server` serving this operator session, then relays
the client's stdio lines to and from it as Clove messages (:mod:`clove_sdk.mcp_bridge`). Every
tool call is that agent's syscall: checked against its grants, journaled as its own. When the
client goes away (end of stdin) the agent is killed; when the agent ends, the command does.
Diagnostics go to stderr: stdout belongs to the MCP client.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import clove_sdk.mcp_server
from clove.cli.spawnargs import spawn_limits
from clove_sdk.client import CloveClient
from clove_sdk.errors import CloveError
from clove_sdk.mcp_bridge import MessageLink, PeerGone

EXIT_OK, EXIT_FAILED = 0, 1
#: States in which the agent can still answer.
LIVE = frozenset({"starting", "running", "paused"})


def grants_of(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--read``, ``--write``, ``--exec`` and ``--http`` options as permission grants."""
    grants: dict[str, Any] = {}
    for option, key in (("read", "read_paths"), ("write", "write_paths"), ("exec", "exec_allow"), ("http", "http_domains")):
        values = getattr(args, option) or []
        if values:
            grants[key] = list(values)
    return grants


def cmd_mcp(args: argparse.Namespace, client: Callable[[argparse.Namespace], CloveClient], error: type[Exception]) -> int:
    try:
        limits = spawn_limits(args.memory, args.cpu, args.pids)
    except ValueError as err:
        raise error(f"mcp: {err}") from None
    with client(args) as control:
        session = control.call("hello").get("session_id")
        if session is None:
            raise error("mcp: the control socket did not give this command an operator session")
        body: dict[str, Any] = {"limits": limits} if limits else {}
        grants = grants_of(args)
        if grants:
            body["permissions"] = grants
        try:
            result = control.call(
                "agent.spawn", name=args.name, script=clove_sdk.mcp_server.__file__, args=["--peer", str(session)],
                network=args.network, **body,
            )  # fmt: skip
        except CloveError as err:
            raise error(f"mcp: spawn {args.name}: {err.message} [{err.code}]") from None
        agent_id = int(result["id"])
        try:
            print(f"clove mcp: agent {args.name} (id {agent_id}) serves this client", file=sys.stderr)
            return _relay(control, agent_id, error)
        finally:
            control.kill(agent_id=agent_id)


def _relay(control: CloveClient, agent_id: int, error: type[Exception]) -> int:
    """stdin lines → the agent; the agent's lines → stdout, until either side ends. Every
    message goes through ``control``, this command's one operator session (the agent takes lines
    from that session only), so one thread does all the talking; another only reads stdin."""
    link = MessageLink(control, agent_id)
    incoming: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def read_stdin() -> None:
        for line in sys.stdin.buffer:
            incoming.put(line.rstrip(b"\n"))
        incoming.put(None)  # the client went away

    threading.Thread(target=read_stdin, name="mcp-stdin", daemon=True).start()
    last_check = time.monotonic()
    try:
        while True:
            while True:
                try:
                    line = incoming.get_nowait()
                except queue.Empty:
                    break
                if line is None:
                    return EXIT_OK
                link.send_line(line)
            lines = link.receive_lines(timeout=0.05)
            for line in lines:
                sys.stdout.buffer.write(line + b"\n")
            if lines:
                sys.stdout.buffer.flush()
            elif time.monotonic() - last_check > 2.0:
                last_check = time.monotonic()
                if not _alive(control, agent_id):
                    print(f"clove mcp: agent {agent_id} ended", file=sys.stderr)
                    return EXIT_FAILED
    except (PeerGone, CloveError) as err:
        print(f"clove mcp: {err}", file=sys.stderr)
        return EXIT_FAILED


def _alive(control: CloveClient, agent_id: int) -> bool:
    try:
        agents = control.call("agent.list")["agents"]
    except CloveError:
        return False
    return any(a.get("id") == agent_id and a.get("status") in LIVE for a in agents)


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], argparse.ArgumentParser], bind: Callable[[Any], Any]) -> None:
    m = common(sub.add_parser("mcp", help="serve an MCP client (stdio) from a new sandboxed agent's syscalls"))
    m.add_argument("--name", required=True, help="the agent's name")
    m.add_argument("--memory", help="memory limit, e.g. 256M")
    m.add_argument("--cpu", help="CPU limit: 20%% of one core, or µs per 100 ms")
    m.add_argument("--pids", type=int, help="max processes and threads")
    m.add_argument("--network", action="store_true", help="give the agent network access")
    m.add_argument("--read", action="append", metavar="PATH", help="grant reading PATH (repeatable)")
    m.add_argument("--write", action="append", metavar="PATH", help="grant writing PATH (repeatable)")
    m.add_argument("--exec", action="append", metavar="COMMAND", help="grant running COMMAND (repeatable)")
    m.add_argument("--http", action="append", metavar="DOMAIN", help="grant HTTP requests to DOMAIN (repeatable)")
    m.set_defaults(func=bind(cmd_mcp))
