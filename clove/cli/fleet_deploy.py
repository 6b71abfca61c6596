"""``clove fleet deploy``: put a desired state for boards on the hub and show what each did
(docs/fleet.md, "Deploy").

::

    clove fleet deploy agents.toml --boards board-a,board-b --key release.pem ...
    clove fleet deploy agents.toml --all --key release.pem --wait 60 ...
    clove fleet deploy --status [--boards B1,B2 | --all] ...

The config's ``[agents.NAME]`` tables are checked first (an error names the file, the table and
the key, and nothing is published); then, for each board, the desired state is signed with the
next generation (above what the hub holds for that board, desired or reported) and written with
the key's expected last sequence. It waits up to ``--wait`` seconds for each board's report
(with ``--all``, for the boards the bucket shows up; a lost board reconciles when it comes
back, and ``--status`` shows it then) and prints one line per agent. Exit 1 if a board refused,
an agent was refused or failed, or a board waited for did not report.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clove.cli import render
from clove.cli.fleet import Error, _emit, _run
from clove.config.fleet import valid_token
from clove.errors import ConfigError
from clove.fleet.subjects import FleetNames

__all__ = ["add_parsers", "cmd_fleet_deploy", "init_bucket", "report_rows"]


async def init_bucket(js: Any, names: FleetNames, created: list[str]) -> dict[str, Any]:
    """``clove fleet init``'s part: the deploy bucket, created where missing."""
    from clove.fleet.deploy import DeployNames
    from clove.fleet.deploy_store import ensure_deploy_bucket

    deploy = DeployNames(names.prefix)
    made = await ensure_deploy_bucket(js, deploy)
    return {"deploy_bucket": deploy.bucket, "created": [*created, deploy.bucket] if made else created}


def _boards(args: argparse.Namespace, error: Error) -> list[str] | None:
    """``--boards`` as a list, or ``None`` for ``--all``."""
    if args.all or (args.boards is None and args.status):
        return None
    if args.boards is None:
        raise error("fleet deploy: give --boards B1,B2 or --all")
    boards = [b.strip() for b in (args.boards or "").split(",") if b.strip()]
    bad = [b for b in boards if not valid_token(b)]
    if not boards or bad:
        raise error(f"fleet deploy: --boards takes board names separated by commas, got {args.boards!r}")
    return sorted(set(boards))


def _desired(args: argparse.Namespace, error: Error) -> tuple[list[dict[str, Any]], Any]:
    """The config's agents and the operator's key, both checked before anything is published."""
    from clove.fleet.commands import load_private_key
    from clove.fleet.deploy_config import read_deploy_config

    if args.config_file is None:
        raise error("fleet deploy: give the deploy config (a file of [agents.NAME] tables), or --status")
    if args.key is None:
        raise error("fleet deploy: --key is required to sign the desired state")
    try:
        agents = read_deploy_config(args.config_file)
    except ConfigError as err:
        raise error(err.message) from None
    try:
        private = load_private_key(Path(args.key))
    except ValueError as err:
        raise error(f"fleet deploy: {err}") from None
    return agents, private


def cmd_fleet_deploy(args: argparse.Namespace, error: Error) -> int:
    from clove.fleet import deploy_store
    from clove.fleet.deploy import MAX_DESIRED_BYTES, DeployNames, sign_desired
    from clove.fleet.deploy_store import KeyMoved, publish_desired, read_current, read_status
    from clove.fleet.reader import board_rows

    boards = _boards(args, error)
    agents, key = (None, None) if args.status else _desired(args, error)

    async def body(js: Any, names: FleetNames) -> int:
        deploy = DeployNames(names.prefix)
        expected: set[str]
        if boards is None:
            rows = await board_rows(js, names)
            targets = [row["board"] for row in rows]
            expected = {row["board"] for row in rows if row["state"] == "up"}
        else:
            targets, expected = boards, set(boards)
        if args.status:
            last = {board: await read_status(js, deploy, board) for board in targets}
            _emit(args, {"reports": last}, lambda: status_text(last))
            return 0
        if not targets:
            raise error("fleet deploy --all: the boards bucket lists no boards")
        assert key is not None  # noqa: S101 - _desired gave one
        signed: dict[str, tuple[Any, int, int]] = {}
        for board in targets:  # everything signed and checked before the first write
            current = await read_current(js, deploy, board)
            state = sign_desired(key, board=board, generation=current.next_generation, agents=agents or [])
            size = len(state.to_wire())
            if size > MAX_DESIRED_BYTES:
                raise error(f"{args.config_file}: [agents]: the signed desired state is {size} bytes; a board takes at most {MAX_DESIRED_BYTES}")
            signed[board] = (state, current.desired_seq, current.next_generation)
        revisions: dict[str, int] = {}
        for board, (state, after, _generation) in signed.items():
            try:
                revisions[board] = await publish_desired(js, deploy, board, state, after_seq=after)
            except KeyMoved:
                raise error(f"fleet deploy: another desired state for {board} was written meanwhile; nothing more was written, run again") from None
        reports = await deploy_store.wait_for_reports(js, deploy, {b: r for b, r in revisions.items() if b in expected}, wait=args.wait)
        for board in set(revisions) - set(reports):  # the lost ones (and the late): one last look
            status = await read_status(js, deploy, board)
            if status is not None and isinstance(status.get("revision"), int) and status["revision"] >= revisions[board]:
                reports[board] = status
        # Not ok with nothing confirmed (every board lost), as with one refusal, failure or silence.
        ok = bool(reports) and all(_board_ok(reports.get(b)) for b in expected) and all(_board_ok(r) for r in reports.values())
        generations = {b: g for b, (_s, _a, g) in signed.items()}
        data = {"ok": ok, "generations": generations, "revisions": revisions, "expected": sorted(expected), "reports": reports}
        _emit(args, data, lambda: deploy_text(sorted(revisions), generations, reports, expected, args.wait))
        return 0 if ok else 1

    return _run(args, error, body)


def _board_ok(report: dict[str, Any] | None) -> bool:
    if report is None or not report.get("accepted"):
        return False
    return all(isinstance(a, dict) and a.get("action") in ("started", "left", "stopped", "replaced") for a in report.get("agents") or [])


def report_rows(board: str, report: dict[str, Any]) -> list[list[Any]]:
    """The table rows of one board's report: one per agent, or one saying why it refused."""
    generation = report.get("generation")
    if not report.get("accepted"):
        return [[board, generation, "-", "REFUSED", f"{report.get('code')}: {report.get('reason')}"]]
    agents = [a for a in report.get("agents") or [] if isinstance(a, dict)]
    if not agents:
        return [[board, generation, "-", "applied", "no agents"]]
    rows = []
    for agent in agents:
        action = str(agent.get("action"))
        detail = f"{agent.get('code')}: {agent.get('message')}" if "code" in agent else (f"id {agent['agent_id']}" if "agent_id" in agent else None)
        rows.append([board, generation, agent.get("name"), action.upper() if action in ("refused", "failed") else action, detail])
    return rows


_HEADERS = ["BOARD", "GEN", "AGENT", "ACTION", "DETAIL"]


def deploy_text(boards: list[str], generations: dict[str, int], reports: dict[str, dict[str, Any]], expected: set[str], wait: float) -> str:
    rows: list[list[Any]] = []
    for board in boards:
        report = reports.get(board)
        if report is not None:
            rows.extend(report_rows(board, report))
        elif board in expected:
            rows.append([board, generations.get(board), "-", "NO REPORT", f"none within {wait:g} s"])
        else:
            rows.append([board, generations.get(board), "-", "pending", "the board is lost: it reconciles when it comes back"])
    return render.table(_HEADERS, rows)


def status_text(reports: dict[str, dict[str, Any] | None]) -> str:
    if not reports:
        return "no boards"
    rows: list[list[Any]] = []
    for board, report in sorted(reports.items()):
        if report is None:
            rows.append([board, None, "-", "-", "nothing deployed yet"])
        else:
            rows.extend(report_rows(board, report))
    return render.table(_HEADERS, rows)


def add_parsers(
    fsub: Any, common: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    _signed: Callable[[argparse.ArgumentParser], argparse.ArgumentParser], bind: Callable[[Callable[[argparse.Namespace, Error], int]], Any],
) -> None:  # fmt: skip
    """``fleet deploy``, with ``clove fleet``'s common options (the key is optional: ``--status``
    needs none)."""
    d = common(fsub.add_parser("deploy", help="set boards' desired agents (a config's [agents] tables), signed; show what each did"))
    d.add_argument("config_file", nargs="?", metavar="CONFIG", help="a file of [agents.NAME] tables (and [devices] to check their grants)")
    target = d.add_mutually_exclusive_group()
    target.add_argument("--boards", help="these boards, separated by commas")
    target.add_argument("--all", action="store_true", help="every board in the boards bucket (waits for those up; the default of --status)")
    d.add_argument("--key", help="the operator's private key (clove fleet keygen); its boards must let it 'deploy'")
    d.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the boards' reports (default 30)")
    d.add_argument("--status", action="store_true", help="show the boards' last reports instead of deploying")
    d.set_defaults(func=bind(cmd_fleet_deploy))
