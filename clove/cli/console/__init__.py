"""``clove console``: a small web console for operators (docs/console.md).

It listens on the loopback address unless told otherwise (``--allow-remote``); every request
needs a console token (an operator token acts, a read-only token only looks), and every action
is an operator syscall on the control socket, journaled like the CLI's.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from clove.cli.console import auth
from clove.cli.console.bridge import Bridge
from clove.cli.console.listen import DEFAULT_PORT, parse_listen
from clove.cli.console.tokens import TokenFileError, default_path, load_or_create

__all__ = ["add_parsers", "cmd_console"]


def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0.2 <= seconds <= 60:
        raise argparse.ArgumentTypeError(f"expected seconds between 0.2 and 60, got {value!r}")
    return seconds


def cmd_console(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any], emit: Callable[..., None], error: type[Exception]) -> int:
    try:  # only this command needs the web server (the 'console' extra)
        import uvicorn

        from clove.cli.console.guard import Console
        from clove.cli.console.server import bind, build_app, socket_group
    except ImportError as err:
        raise error(f"console: needs starlette and uvicorn ({err.name} is missing): pip install 'clove[console]'") from None
    try:
        listen = parse_listen(args.listen)
    except ValueError as err:
        raise error(f"console: --listen: {err}") from None
    if not listen.loopback and not args.allow_remote:
        raise error(f"console: refusing to listen on {listen.host}: not a loopback address. Reach the console through "
                    f"an SSH tunnel (ssh -L {DEFAULT_PORT}:127.0.0.1:{DEFAULT_PORT} HOST), or pass --allow-remote to expose it")  # fmt: skip
    if args.hil_results is not None and not os.path.isdir(args.hil_results):
        raise error(f"console: --hil-results {args.hil_results}: not a directory")
    with client(args) as c:  # this thread's own client, for the start only
        info = c.kernel_info()
    socket_path = str(info.get("socket") or "")
    try:
        tokens = load_or_create(args.token_file or default_path(socket_path, info.get("state_dir")), socket_group(socket_path))
    except TokenFileError as err:
        raise error(f"console: {err}") from None
    try:
        sock = bind(listen)
    except OSError as err:
        raise error(f"console: cannot listen on {listen.host}:{listen.port}: {err.strerror}") from None
    port = sock.getsockname()[1]
    bridge = Bridge(lambda: client(args), interval=args.interval)
    allowed = frozenset() if listen.loopback else frozenset({listen.host.lower(), *(h.lower() for h in args.allow_host or [])})
    console = Console(bridge=bridge, tokens=tokens, sessions=auth.Sessions(), allowed_hosts=allowed,
                      hil_results=os.path.abspath(args.hil_results) if args.hil_results else None,
                      kernel={"version": info.get("version"), "pid": info.get("pid"), "socket": socket_path})  # fmt: skip
    shown = f"[{listen.host}]" if ":" in listen.host else listen.host
    print(f"console: http://{shown}:{port}/", flush=True)
    print(f"console: tokens (operator, read-only) in {tokens.path} (mode 0640: root and the control socket's group)", flush=True)
    if not listen.loopback:
        print(f"console: WARNING: listening on {listen.host}, beyond this machine (--allow-remote); plain HTTP", file=sys.stderr, flush=True)
        if not args.allow_host:
            print("console: it answers to loopback names and the --listen host only: add --allow-host NAME for each name "
                  "you reach it by", file=sys.stderr, flush=True)  # fmt: skip
    config = uvicorn.Config(build_app(console), log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        bridge.close()
        sock.close()
    return 0


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], argparse.ArgumentParser], bind_cmd: Callable[[Any], Any]) -> None:
    p = common(sub.add_parser("console", help="serve the web console (loopback only unless --allow-remote)"))
    p.add_argument("--listen", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="ADDR", help=f"HOST:PORT or PORT (default 127.0.0.1:{DEFAULT_PORT})")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --listen address (prefer an SSH tunnel)")
    p.add_argument("--allow-host", action="append", metavar="NAME", help="with --allow-remote: another Host name the console answers to")
    p.add_argument("--token-file", metavar="PATH", help="where the tokens are kept (default: the kernel's state dir)")
    p.add_argument("--hil-results", metavar="DIR", help="list the HIL bench reports under DIR (clove hil run --report)")
    p.add_argument("--interval", type=_interval, default=1.0, help="seconds between live updates (default 1)")
    p.set_defaults(func=bind_cmd(cmd_console))
