"""The ``clove`` command: run a kernel, and operate one through its control socket.

Every operator command takes ``--socket`` (default ``$CLOVE_SOCKET`` or /tmp/clove.sock) and
``--json``. Errors are one line on stderr and exit status 1 (2 for usage errors); never a
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from clove.cli import render
from clove.cli.spawnargs import spawn_limits
from clove.errors import CloveError, KernelUnavailable
from clove_sdk.client import CloveClient, default_endpoint, kernel_listening

EXIT_OK, EXIT_ERROR = 0, 1


class CliError(Exception):
    """A one-line message for the operator."""


def _client(args: argparse.Namespace) -> CloveClient:
    endpoint = default_endpoint(args.socket) if args.socket else default_endpoint(os.environ.get("CLOVE_SOCKET", "/tmp/clove.sock"))
    path = endpoint[len("ipc://") :]
    if not os.path.exists(path):
        raise CliError(f"no kernel running: {path} does not exist (start one with 'clove kernel')")
    if not kernel_listening(path):
        raise CliError(f"no kernel running: nothing is listening on {path}")
    return CloveClient(endpoint, timeout=args.timeout)


def _emit(args: argparse.Namespace, data: Any, human: Callable[[], str]) -> None:
    print(json.dumps(data, indent=2, default=_json_default) if args.json else human())


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(type(value).__name__)


# ---- commands --------------------------------------------------------------------------------


def cmd_ps(args: argparse.Namespace) -> int:
    with _client(args) as c:
        agents = c.list_agents()
    _emit(args, agents, lambda: render.agents_table(agents) if agents else "no agents")
    return EXIT_OK


def cmd_spawn(args: argparse.Namespace) -> int:
    try:
        limits = spawn_limits(args.memory, args.cpu, args.pids)
    except ValueError as err:
        raise CliError(f"spawn: {err}") from None
    if not os.path.isfile(args.script):
        raise CliError(f"spawn: script not found: {args.script}")
    env = {}
    for item in args.env or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"spawn: --env expects KEY=VALUE, got {item!r}")
        env[key] = value
    with _client(args) as c:
        result = c.spawn(
            args.name,
            args.script,
            sandboxed=not args.no_sandbox,
            network="full" if args.network_full else args.network,
            limits=limits or None,
            restart_policy=args.restart,
            max_restarts=args.max_restarts,
            restart_window=args.restart_window,
            args=args.args,
            env=env or None,
            interpreter=args.interpreter,
            working_dir=args.workdir,
        )
    if not result.get("success"):
        raise CliError(f"spawn {args.name}: {result.get('error')} [{result.get('code')}]")
    _emit(args, result, lambda: f"spawned {result['name']} (id {result['id']}, pid {result['pid']}); limits: {render.limits_cell(result['isolation'])}")
    return EXIT_OK


def _lifecycle(verb: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with _client(args) as c:
            try:
                result = c.call(f"agent.{verb}", name=args.name)
            except CloveError as err:
                if isinstance(err, KernelUnavailable):
                    raise
                raise CliError(f"{verb if verb != 'remove' else 'rm'} {args.name}: {err.message}") from None
        past = {"kill": "killed", "pause": "paused", "resume": "resumed", "remove": "removed"}[verb]
        _emit(args, result, lambda: f"{past} {args.name}")
        return EXIT_OK

    return run


def cmd_logs(args: argparse.Namespace) -> int:
    from clove.cli.terminal import LogWriter

    out = LogWriter(sys.stdout.buffer, raw=True if args.raw else None)
    with _client(args) as c:
        try:
            chunk = c.logs(name=args.name, offset=-args.tail)
        except CloveError as err:
            if isinstance(err, KernelUnavailable):
                raise
            raise CliError(f"logs {args.name}: {err.message}") from None
        out.write(chunk["data"])
        offset = chunk["offset"]
        while args.follow:
            time.sleep(0.2)
            try:
                chunk = c.logs(name=args.name, offset=offset)
            except CloveError as err:
                if isinstance(err, KernelUnavailable):
                    raise
                return EXIT_OK  # the agent was removed
            if chunk["offset"] < offset:  # rotated
                offset = 0
                continue
            out.write(chunk["data"])
            offset = chunk["offset"]
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    from clove.kernel.audit.journal import read_journal, verify_journal  # only this command needs the journal

    if args.verify or args.file:
        path = args.file
        if path is None:
            with _client(args) as c:
                path = c.kernel_info()["journal"]
        if not os.path.exists(path):
            raise CliError(f"audit: no journal at {path}")
        if args.verify:
            result = verify_journal(path)
            data = dataclasses.asdict(result) | {"complete": result.complete, "lost_records": result.lost_records}
            _emit(args, data, lambda: render.verify_report(result))
            return EXIT_OK if result.complete else EXIT_ERROR  # records lost in a recorded gap fail too
        entries = list(read_journal(path, agent_name=args.agent, since_id=args.since, category=args.category))
        entries = entries[-args.limit :] if args.limit else entries
    else:
        with _client(args) as c:
            body: dict[str, Any] = {"since_id": args.since, "limit": args.limit}
            if args.agent:
                body["agent_name"] = args.agent
            if args.category:
                body["category"] = args.category
            try:
                entries = c.call("audit.query", **body)["entries"]
            except CloveError as err:
                if isinstance(err, KernelUnavailable):
                    raise
                raise CliError(f"audit: {err.message}") from None
    _emit(args, entries, lambda: render.audit_table(entries) if entries else "no records")
    return EXIT_OK


def cmd_llm(args: argparse.Namespace) -> int:
    """Show LLM usage, budgets and queue waits; with a change option, change an agent's."""
    changes: dict[str, Any] = {}
    if args.tokens is not None:
        changes["tokens"] = args.tokens
    if args.period_tokens is not None:
        changes["period_tokens"] = args.period_tokens
    if args.weight is not None:
        changes["weight"] = args.weight
    if args.reset:
        changes["reset"] = sorted(set(args.reset))
    with _client(args) as c:
        try:
            if changes:
                if not args.name:
                    raise CliError("llm: name the agent whose budget to change")
                result = c.call("llm.budget", name=args.name, **changes)
                _emit(args, result, lambda: render.llm_table({"enabled": True, "agents": [result["agent"]]}))
                return EXIT_OK
            stats = c.call("llm.stats", **({"name": args.name} if args.name else {}))
        except CloveError as err:
            if isinstance(err, KernelUnavailable):
                raise
            raise CliError(f"llm: {err.message}") from None
    _emit(args, stats, lambda: render.llm_table(stats))
    return EXIT_OK


def cmd_kernel(args: argparse.Namespace) -> int:
    from clove.kernel.main import run_kernel  # the kernel loads only for `clove kernel`

    return run_kernel(config_path=args.config, socket_path=args.socket, state_dir=args.state_dir, log_level=args.log_level)


# ---- parser ------------------------------------------------------------------------------------


def _tokens(value: str) -> int:
    """``5000``, ``50k``, ``2M`` or ``1_000_000`` tokens."""
    text = value.strip().lower().replace("_", "")
    scale = {"k": 1000, "m": 1_000_000}.get(text[-1:], 1)
    try:
        number = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a token count like 5000, 50k or 2M, got {value!r}") from None
    if number < 0 or number != number or number > 1e15:
        raise argparse.ArgumentTypeError(f"expected a token count like 5000, 50k or 2M, got {value!r}")
    return int(number)


def _weight(value: str) -> float:
    try:
        weight = float(value)
    except ValueError:
        weight = -1.0
    if not 0 < weight < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive weight, got {value!r}")
    return weight



def build_parser(*, kernel_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line; ``kernel_only`` builds the ``kernel`` command alone, so the kernel
    process never imports the operator commands (rich, asyncio, the console, the fleet client)."""
    parser = argparse.ArgumentParser(prog="clove", description="Run and operate a Clove kernel.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--socket", help="control socket (default: $CLOVE_SOCKET or /tmp/clove.sock)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the kernel (default 30)")
        return p

    k = sub.add_parser("kernel", help="run a kernel in the foreground")
    k.add_argument("--config", help="kernel TOML config")
    k.add_argument("--socket", help="control socket path (overrides config and $CLOVE_SOCKET)")
    k.add_argument("--state-dir", help="journal, logs and agent dirs (overrides config)")
    k.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    k.set_defaults(func=cmd_kernel)
    if kernel_only:
        return parser
    from clove.cli import console as web_console  # here, not at the top: see kernel_only
    from clove.cli import devices, doctor, fleet, hil, mcp, postmortem, replay
    from clove.cli import top as top_view

    common(sub.add_parser("ps", help="list agents, exited ones included")).set_defaults(func=cmd_ps)

    s = common(sub.add_parser("spawn", help="start an agent"))
    s.add_argument("name")
    s.add_argument("script")
    s.add_argument("args", nargs="*", help="arguments for the script (after --)")
    s.add_argument("--memory", help="memory limit, e.g. 256M")
    s.add_argument("--cpu", help="CPU limit: 20%% of one core, or µs per 100 ms")
    s.add_argument("--pids", type=int, help="max processes and threads")
    s.add_argument("--restart", choices=["never", "on-failure", "always"], default="never")
    s.add_argument("--max-restarts", type=int, default=5)
    s.add_argument("--restart-window", type=int, default=300, help="seconds")
    s.add_argument("--network", action="store_true", help="network through the kernel's egress proxy (its egress rules)")
    s.add_argument("--network-full", action="store_true", help="the host's whole network (no proxy)")
    s.add_argument("--no-sandbox", action="store_true", help="run without namespaces or uid drop (trusted code only)")
    s.add_argument("--env", action="append", metavar="KEY=VALUE")
    s.add_argument("--interpreter", help="python interpreter for this agent (default: the kernel's)")
    s.add_argument("--workdir", help="writable working directory (default: a fresh one per agent)")
    s.set_defaults(func=cmd_spawn)

    for verb, help_text in (("kill", "stop an agent and remove it"), ("pause", "freeze an agent"), ("resume", "thaw an agent"), ("rm", "remove an exited agent")):
        p = common(sub.add_parser(verb, help=help_text))
        p.add_argument("name")
        p.set_defaults(func=_lifecycle("remove" if verb == "rm" else verb))

    lg = common(sub.add_parser("logs", help="show an agent's output"))
    lg.add_argument("name")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("--tail", type=int, default=16384, help="bytes from the end to start with")
    lg.add_argument("--raw", action="store_true", help="the agent's bytes as they are, escape sequences included, even on a terminal")
    lg.set_defaults(func=cmd_logs)

    lm = common(sub.add_parser("llm", help="LLM usage, budgets and queue waits; change an agent's budget"))
    lm.add_argument("name", nargs="?", help="only this agent (and the one to change)")
    lm.add_argument("--tokens", type=_tokens, metavar="N", help="set the agent's lifetime token budget (its llm_tokens grant)")
    lm.add_argument("--period-tokens", type=_tokens, metavar="N", help="set its token budget per [llm].period")
    lm.add_argument("--weight", type=_weight, metavar="W", help="set its fair-share weight")
    lm.add_argument("--reset", action="append", choices=["tokens", "period_tokens", "weight"], help="back to the config's value (repeatable)")
    lm.set_defaults(func=cmd_llm)

    devices.add_parsers(sub, common, lambda cmd: lambda args: cmd(args, _client, _emit, CliError))
    top_view.add_parsers(sub, common, lambda cmd: lambda args: cmd(args, _client, _emit, CliError))
    web_console.add_parsers(sub, common, lambda cmd: lambda args: cmd(args, _client, _emit, CliError))
    hil.add_parsers(sub, lambda cmd: lambda args: cmd(args, CliError))
    mcp.add_parsers(sub, common, lambda cmd: lambda args: cmd(args, _client, CliError))
    fleet.add_parsers(sub, lambda cmd: lambda args: cmd(args, CliError))
    doctor.add_parsers(sub)
    replay.add_parsers(sub, common, lambda cmd: lambda args: cmd(args, _client, _emit, CliError))
    postmortem.add_parsers(sub, common, lambda cmd: lambda args: cmd(args, _client, _emit, CliError))

    a = common(sub.add_parser("audit", help="query or verify the audit journal"))
    a.add_argument("--agent", help="only records of this agent (name)")
    a.add_argument("--category", help="SECURITY, AGENT_LIFECYCLE, SYSCALL, ...")
    a.add_argument("--since", type=int, default=0, help="records after this id")
    a.add_argument("--limit", type=int, default=100)
    a.add_argument("--verify", action="store_true", help="check the hash chain across rotated files; name breaks and recorded gaps (exit 1 if any)")
    a.add_argument("--file", help="read this journal directly, no kernel needed (journal.jsonl brings its rotated files; a directory means its journal.jsonl)")
    a.set_defaults(func=cmd_audit)
    return parser


def parse_cli(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line. For ``spawn``, everything after ``--`` goes to the script as it is
    (argparse alone cannot take script arguments after options)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    tail: list[str] = []
    if argv and argv[0] == "spawn" and "--" in argv:
        cut = argv.index("--")
        argv, tail = argv[:cut], argv[cut + 1 :]
    args = build_parser(kernel_only=argv[:1] == ["kernel"]).parse_args(argv)
    if tail:
        args.args = [*args.args, *tail]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_cli(argv)
    try:
        return int(args.func(args))
    except CliError as err:
        print(f"clove: {err}", file=sys.stderr)
    except KernelUnavailable as err:
        print(f"clove: {err.message}", file=sys.stderr)
    except CloveError as err:
        print(f"clove: {err.message} [{err.code}]", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
