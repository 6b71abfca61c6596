"""``clove fleet``: the fleet as the hub sees it (docs/fleet.md).

* ``clove fleet init``: create the audit stream and the boards bucket (an admin's user);
* ``clove fleet ps``: every board, its state (``up`` or ``lost``), heartbeat age and agents;
* ``clove fleet audit --board B [--verify]``: a board's shipped journal, and its hash chain
  verified from the central stream alone (exit 1 if anything is missing, twice or edited);
* ``clove fleet keygen --out FILE``: an operator's ed25519 key, and the line boards' configs take;
* ``clove fleet estop``, ``kill|pause|resume BOARD/AGENT``, ``trading halt``: signed commands
  (``--key``), one answer line per board, exit 1 if any refused, failed or did not answer;
* ``clove fleet top`` and ``clove fleet logs BOARD/AGENT``: :mod:`clove.cli.fleet_view`;
* ``clove fleet deploy CONFIG --boards B1,B2 | --all``: :mod:`clove.cli.fleet_deploy`.

Each connects to ``--server`` (repeatable) or to the servers of a config's ``[fleet]`` table
(``--config``), as ``--user``/``--password-file`` or ``--creds`` when given, else as the
config's own credentials. Errors are one line and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from clove.cli import render
from clove.config import load_config
from clove.config.fleet import DEFAULT_PREFIX, valid_token
from clove.errors import ConfigError
from clove.fleet.chain import ChainCheck
from clove.fleet.connect import Endpoint
from clove.fleet.subjects import FleetNames
from clove.kernel.audit.format import GENESIS_HASH, record_hash

Error = type[Exception]


def _endpoint(args: argparse.Namespace, error: Error, *, own_inbox: bool = False) -> tuple[Endpoint, FleetNames]:
    """``own_inbox``: answers come to ``_INBOX_<user>``, which the hub lets that user hear."""
    section = None
    if args.config:
        try:
            section = load_config(args.config).fleet
        except ConfigError as err:
            raise error(err.message) from None
        if section is None and not args.server:
            raise error(f"{args.config} has no [fleet] table; give --server")
    servers = tuple(args.server) if args.server else section.servers if section is not None else ()
    if not servers:
        raise error("fleet: give --server nats://HOST:PORT or --config with a [fleet] table")
    prefix = args.prefix or (section.subject_prefix if section is not None else DEFAULT_PREFIX)
    if not valid_token(prefix):
        raise error(f"fleet: --prefix must be one subject token, got {prefix!r}")
    own = args.user is not None or args.creds is not None
    endpoint = Endpoint(
        servers=servers,
        user=args.user if own else section.user if section is not None else None,
        password_file=args.password_file if own else section.password_file if section is not None else None,
        credentials=args.creds if own else section.credentials if section is not None else None,
        tls_ca=args.tls_ca or (section.tls_ca if section is not None else None),
        name="clove-fleet-cli",
    )
    if own_inbox and endpoint.user is not None and valid_token(endpoint.user):
        endpoint = dataclasses.replace(endpoint, inbox_prefix=FleetNames.inbox_prefix(endpoint.user))
    return endpoint, FleetNames(prefix)


def _run(args: argparse.Namespace, error: Error, body: Callable[[Any, FleetNames], Awaitable[int]], *, connection: bool = False) -> int:
    """Connect, run ``body`` with JetStream (``connection``: with the connection itself), close."""
    import nats  # deferred: every other clove command loads without it
    from nats.js.errors import BucketNotFoundError, NotFoundError

    endpoint, names = _endpoint(args, error, own_inbox=connection)

    async def main() -> int:
        try:
            options = endpoint.options()
        except OSError as err:
            raise error(f"fleet: cannot read credentials: {err}") from None
        try:
            # max_reconnect_attempts=0 would retry for ever: 1 tries each server, then gives up.
            connecting = nats.connect(**options, error_cb=_quiet, allow_reconnect=False, connect_timeout=max(1, int(args.timeout)), max_reconnect_attempts=1, reconnect_time_wait=0)
            nc = await asyncio.wait_for(connecting, args.timeout * (len(endpoint.servers) + 1))
        except Exception as err:
            raise error(f"fleet: cannot connect to {', '.join(endpoint.servers)}: {type(err).__name__}: {err}".rstrip(": ")) from None
        try:
            return await body(nc if connection else nc.jetstream(timeout=args.timeout), names)
        except BucketNotFoundError:
            raise error(f"fleet: no bucket {names.bucket} on the hub (run 'clove fleet init' as an admin)") from None
        except NotFoundError as err:
            raise error(f"fleet: not found on the hub: {err.description or err} (run 'clove fleet init' as an admin)") from None
        except nats.errors.TimeoutError:
            raise error("fleet: the hub did not answer in time (no JetStream, or no permission?)") from None
        finally:
            await nc.close()

    return asyncio.run(main())


async def _quiet(err: Exception) -> None:
    """nats-py prints a traceback for every error unless told otherwise: the commands report
    what failed themselves."""


def cmd_fleet_init(args: argparse.Namespace, error: Error) -> int:
    from clove.cli import fleet_deploy
    from clove.fleet.streams import ensure_streams

    async def body(js: Any, names: FleetNames) -> int:
        result = await ensure_streams(js, names)
        result = {**result, **await fleet_deploy.init_bucket(js, names, result["created"])}  # the deploy bucket too
        _emit(args, result, lambda: f"stream {result['stream']}, bucket {result['bucket']}" + (f" (created {', '.join(result['created'])})" if result["created"] else " (both there)"))
        return 0

    return _run(args, error, body)


def cmd_fleet_ps(args: argparse.Namespace, error: Error) -> int:
    from clove.fleet.reader import board_rows

    async def body(js: Any, names: FleetNames) -> int:
        rows = await board_rows(js, names, lost_after=args.lost_after)
        _emit(args, rows, lambda: ps_table(rows))
        return 0

    return _run(args, error, body)


def ps_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no boards"
    out = []
    for row in rows:
        entry = row.get("entry") or {}
        agents = entry.get("agents") or []
        running = sum(1 for a in agents if a.get("state") == "running")
        age = row.get("heartbeat_age")
        engaged = ",".join(sorted(entry.get("interlocks_engaged") or {})) or None
        out.append([
            row["board"],
            row["state"].upper() if row["state"] == "lost" else row["state"],
            f"{age:.1f}s" if isinstance(age, (int, float)) else None,
            f"{running}/{entry.get('agents_total', len(agents))}",
            ", ".join(f"{a.get('name')}:{a.get('state')}" for a in agents[:6]) + (" ..." if len(agents) > 6 else ""),
            f"{entry.get('shipped_seq')}/{entry.get('journal_last_id')}",
            engaged,
            (entry.get("kernel") or {}).get("version"),
        ])
    return render.table(["BOARD", "STATE", "HEARTBEAT", "RUNNING", "AGENTS", "SHIPPED/JOURNAL", "ENGAGED", "VERSION"], out)


def cmd_fleet_audit(args: argparse.Namespace, error: Error) -> int:
    if not valid_token(args.board):
        raise error(f"fleet audit: --board must be a board name, got {args.board!r}")
    from clove.fleet.reader import board_records

    async def body(js: Any, names: FleetNames) -> int:
        check = ChainCheck(record_hash, GENESIS_HASH)
        tail: list[dict[str, Any]] = []
        async for _seq, record in board_records(js, names, args.board, timeout=args.timeout):
            check.add(record)
            if isinstance(record, dict) and args.limit > 0:
                tail.append(record)
                del tail[: -args.limit]
        report = check.report
        if args.verify:
            data = {"board": args.board, **report.to_dict()}
            _emit(args, data, lambda: _verify_text(args.board, data))
            return 0 if report.ok and report.records > 0 else 1
        _emit(args, tail, lambda: _records_text(tail) if tail else f"no records from {args.board}")
        return 0

    return _run(args, error, body)


def _verify_text(board: str, data: dict[str, Any]) -> str:
    if data["records"] == 0:
        return f"{board}: no records in the central stream"
    head = f"{board}: {'OK' if data['ok'] else 'BROKEN'}: {data['records']} records, ids {data['first_id']}..{data['last_id']}"
    notes = [f"{data['duplicates']} duplicates"] if data["duplicates"] else []
    if data["missing"]:
        notes.append(f"{data['missing']} missing")
    if data["recorded_gaps"]:
        notes.append(f"{data['recorded_gaps']} lost on the board (journal.gap records)")
    if data["starts_after_genesis"]:
        notes.append("starts after record 1 (older records were never shipped)")
    return "\n".join([head + (f" ({'; '.join(notes)})" if notes else ""), *(f"  {p}" for p in data["problems"])])


def _records_text(records: list[dict[str, Any]]) -> str:
    rows = [
        [r.get("id"), time.strftime("%H:%M:%S", time.localtime(r.get("timestamp") or 0)), r.get("event_type"), r.get("agent_name"), r.get("syscall"), r.get("decision"), r.get("code")]
        for r in records
    ]
    return render.table(["ID", "TIME", "EVENT", "AGENT", "SYSCALL", "DECISION", "CODE"], rows)


def cmd_fleet_keygen(args: argparse.Namespace, error: Error) -> int:
    from clove.fleet.commands import generate_key, key_id, public_key_text

    try:
        private = generate_key(Path(args.out))
    except FileExistsError:
        raise error(f"fleet keygen: {args.out} exists; a key is never overwritten") from None
    except OSError as err:
        raise error(f"fleet keygen: cannot write {args.out}: {err.strerror or err}") from None
    public = private.public_key()
    print(f"wrote {args.out} (key id {key_id(public)}); give boards that accept it, in their config:")
    print("[fleet.operators.NAME]")
    print(f'public_key = "{public_key_text(public)}"')
    print('may = ["estop", "estop.release"]')
    return 0


def _target(args: argparse.Namespace, error: Error) -> str | None:
    """``--board B`` or ``--all`` (``None``)."""
    if args.board is not None and not valid_token(args.board):
        raise error(f"fleet: --board must be a board name, got {args.board!r}")
    return None if args.all else str(args.board)


def _agent_target(args: argparse.Namespace, error: Error) -> tuple[str, str]:
    board, _, agent = args.target.partition("/")
    if not valid_token(board) or not agent:
        raise error(f"fleet {args.fleet_command}: expected BOARD/AGENT, got {args.target!r}")
    return board, agent


def _signed(args: argparse.Namespace, error: Error, command: str, board: str | None, command_args: dict[str, Any]) -> Any:
    from clove.fleet.commands import ALL_BOARDS, load_private_key, sign

    try:
        private = load_private_key(Path(args.key))
    except ValueError as err:
        raise error(f"fleet: {err}") from None
    return sign(private, command, board=board or ALL_BOARDS, args={k: v for k, v in command_args.items() if v is not None})


def _send(args: argparse.Namespace, error: Error, command: str, board: str | None, command_args: dict[str, Any]) -> int:
    from clove.fleet.sender import send

    signed = _signed(args, error, command, board, command_args)

    async def body(nc: Any, names: FleetNames) -> int:
        outcome = await send(nc, nc.jetstream(timeout=args.timeout), names, signed, board=board, wait=args.wait)
        _emit(args, {"ok": outcome.ok, "answers": outcome.answers, "expected": sorted(outcome.expected or [])}, lambda: _answers_text(outcome.boards(), outcome.answers, args.wait))
        return 0 if outcome.ok else 1

    return _run(args, error, body, connection=True)


def _answers_text(boards: list[str], answers: dict[str, dict[str, Any]], wait: float) -> str:
    if not boards:
        return f"no board answered within {wait:g} s"
    lines = []
    for board in boards:
        answer = answers.get(board)
        if answer is None:
            lines.append(f"{board}: no answer within {wait:g} s")
        elif not answer.get("accepted"):
            lines.append(f"{board}: refused {answer.get('code')}: {answer.get('reason')}")
        else:
            results = answer.get("results") or []
            calls = ", ".join(
                f"{r.get('call')} ok" if r.get("ok") else f"{r.get('call')} failed ({(r.get('error') or {}).get('code')}: {(r.get('error') or {}).get('message')})"
                for r in results if isinstance(r, dict)
            )  # fmt: skip
            lines.append(f"{board}: accepted {answer.get('command')}" + (f": {calls}" if calls else " (nothing to do)"))
    return "\n".join(lines)


def cmd_fleet_estop(args: argparse.Namespace, error: Error) -> int:
    board = _target(args, error)
    if args.release:
        if args.reason is not None:
            raise error("fleet estop --release: --reason is for engaging")
        return _send(args, error, "estop.release", board, {"interlock": args.interlock})
    return _send(args, error, "estop", board, {"interlock": args.interlock, "reason": args.reason})


def cmd_fleet_agent(args: argparse.Namespace, error: Error) -> int:
    board, agent = _agent_target(args, error)
    return _send(args, error, args.fleet_command, board, {"agent": agent})


def cmd_fleet_trading(args: argparse.Namespace, error: Error) -> int:
    return _send(args, error, "trading.halt", _target(args, error), {"device": args.device, "reason": args.reason})


def _emit(args: argparse.Namespace, data: Any, human: Callable[[], str]) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else human())


def add_parsers(sub: Any, bind: Callable[[Callable[[argparse.Namespace, Error], int]], Any]) -> None:
    f = sub.add_parser("fleet", help="the fleet on the NATS hub: boards, their inventory and shipped journals")
    fsub = f.add_subparsers(dest="fleet_command", required=True, metavar="FLEET_COMMAND")

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--server", action="append", metavar="URL", help="a hub URL, nats://HOST:4222 (repeatable)")
        p.add_argument("--config", help="take the servers (and, unless given, credentials) from this config's [fleet] table")
        p.add_argument("--user", help="connect as this user ...")
        p.add_argument("--password-file", help="... with the password in this file")
        p.add_argument("--creds", help="connect with this NATS .creds file")
        p.add_argument("--tls-ca", help="CA file to verify the hub's TLS certificate")
        p.add_argument("--prefix", help=f"subject prefix (default: the config's, or {DEFAULT_PREFIX})")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the hub (default 5)")
        return p

    common(fsub.add_parser("init", help="create the audit stream and the boards bucket (admin)")).set_defaults(func=bind(cmd_fleet_init))
    ps = common(fsub.add_parser("ps", help="every board: up or lost, heartbeat age, agents, shipped journal"))
    ps.add_argument("--lost-after", type=float, help="seconds without a heartbeat before a board is lost (default: each board's own)")
    ps.set_defaults(func=bind(cmd_fleet_ps))
    a = common(fsub.add_parser("audit", help="a board's journal as shipped to the hub"))
    a.add_argument("--board", required=True)
    a.add_argument("--verify", action="store_true", help="verify the board's hash chain from the central stream alone (exit 1 if broken)")
    a.add_argument("--limit", type=int, default=50, help="show the last N records (default 50)")
    a.set_defaults(func=bind(cmd_fleet_audit))

    def signed(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        common(p)
        p.add_argument("--key", required=True, help="the operator's private key (clove fleet keygen)")
        p.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the boards' answers (default 5)")
        return p

    def where(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        target = p.add_mutually_exclusive_group(required=True)
        target.add_argument("--board", help="this board only")
        target.add_argument("--all", action="store_true", help="every board (waits for those the bucket shows up)")
        return p

    k = fsub.add_parser("keygen", help="a new operator key for signed commands")
    k.add_argument("--out", required=True, help="where to write the private key (PEM, mode 0600; never overwritten)")
    k.set_defaults(func=bind(cmd_fleet_keygen))
    e = where(signed(fsub.add_parser("estop", help="engage (or --release) the interlocks of a board or of every board")))
    e.add_argument("--release", action="store_true", help="release instead: the named interlock, or every engaged one")
    e.add_argument("--interlock", help="this interlock only (default: every one)")
    e.add_argument("--reason", help="why, for the boards' journals")
    e.set_defaults(func=bind(cmd_fleet_estop))
    for name, what in (("kill", "stop"), ("pause", "freeze"), ("resume", "thaw")):
        p = signed(fsub.add_parser(name, help=f"{what} one agent on one board"))
        p.add_argument("target", metavar="BOARD/AGENT")
        p.set_defaults(func=bind(cmd_fleet_agent))
    t = fsub.add_parser("trading", help="trading commands across the fleet")
    tsub = t.add_subparsers(dest="trading_command", required=True, metavar="TRADING_COMMAND")
    h = where(signed(tsub.add_parser("halt", help="halt trading (exchange devices: set_state HALTED)")))
    h.add_argument("--device", help="this exchange device only (default: every exchange device)")
    h.add_argument("--reason", help="why, for the boards' journals")
    h.set_defaults(func=bind(cmd_fleet_trading))
    from clove.cli import fleet_view  # fleet top and fleet logs (it imports this module: deferred)

    fleet_view.add_parsers(fsub, common, signed, bind)
    from clove.cli import fleet_deploy  # fleet deploy (it imports this module: deferred)

    fleet_deploy.add_parsers(fsub, common, signed, bind)
