"""``clove postmortem``: list the post-mortem bundles of agents that died abnormally, or print one
(its summary, then its log tail, then its last journal records).

``--open`` takes a bundle's name from the listing, ``latest``, or the path of a bundle directory:
a bundle copied to another machine is read there without a kernel (it is self-contained).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clove.cli import render
from clove.errors import CloveError, KernelUnavailable
from clove.kernel.services.postmortem.bundle import JOURNAL, LOG, SUMMARY
from clove.kernel.services.postmortem.store import view

#: The most of the log and of the journal slice printed (the files may be larger).
SHOWN_BYTES = 256 << 10


def bundles_table(rows: list[dict[str, Any]]) -> str:
    return render.table(
        ["AGENT", "BUNDLE", "TIME (UTC)", "REASON", "EXIT", "SIZE"],
        [[r["agent"], r["bundle"], (r.get("time") or "-").replace("T", " ").rstrip("Z"), _reason(r), _exit(r), render.human_bytes(r.get("size"))] for r in rows],
    )


def _reason(row: dict[str, Any]) -> str:
    return f"{row.get('reason')}, escalated" if row.get("escalated") else str(row.get("reason"))


def _exit(info: dict[str, Any]) -> str:
    if info.get("signal") is not None:
        name = info.get("signal_name")
        return f"signal {info['signal']}" + (f" ({name})" if name else "")
    if info.get("exit_code") is not None:
        return f"code {info['exit_code']}"
    return "-"


def summary_text(summary: dict[str, Any], files: list[dict[str, Any]], path: str) -> str:
    """The summary as a few labelled lines."""
    agent = summary.get("agent") or {}
    exit_info = summary.get("exit") or {}
    cg = summary.get("cgroup") or {}
    limits = summary.get("limits") or {}
    policy = summary.get("restart_policy") or {}
    perms = summary.get("permissions") or {}
    iso = summary.get("isolation") or {}
    reason = str(summary.get("reason"))
    if exit_info.get("message"):
        reason += f": {exit_info['message']}"
    if summary.get("escalated"):
        reason += f" (escalated to failed after {policy.get('restarts_in_window')} restarts in {policy.get('window')} s)"
    lines = [
        f"post-mortem of {agent.get('name')} (id {agent.get('id')}, incarnation {agent.get('incarnation')}) at {summary.get('time')}",
        f"  reason     {reason}",
        f"  exit       {_exit(exit_info)}; uptime {summary.get('uptime')} s; restarts {summary.get('restarts')} (policy {policy.get('policy')})",
        f"  memory     peak {render.human_bytes(cg.get('memory_peak'))}, at death {render.human_bytes(cg.get('memory_current'))}, "
        f"limit {render.human_bytes(limits.get('memory_bytes'))}, OOM kills {cg.get('oom_kills', '-')}",
        f"  cpu        {_cpu(cg)}; quota {_quota(limits.get('cpu_quota_us'))}",
        f"  pids       {cg.get('pids_current', '-')} (limit {limits.get('pids') or '-'})",
        f"  sandbox    {iso.get('backend', '-')} {iso.get('cgroup') or ''}; limits {render.limits_cell(iso)}; "
        f"namespaces {','.join(iso.get('namespaces') or []) or '-'}; network {iso.get('network', '-')}",
        f"  grants     level {perms.get('level')}; devices {_devices(summary.get('devices') or {})}",
        f"  files      {_files(files)}",
        f"  path       {path}",
    ]
    return "\n".join(lines)


def _files(files: list[dict[str, Any]]) -> str:
    return ", ".join(f"{f['name']} {render.human_bytes(f['bytes'])}" for f in files) or "-"


def _cpu(cg: dict[str, Any]) -> str:
    if cg.get("cpu_usage_us") is None:
        return "usage -"
    text = f"usage {cg['cpu_usage_us'] / 1e6:.2f} s"
    if cg.get("nr_periods"):
        text += f", throttled {cg.get('nr_throttled', 0)} of {cg['nr_periods']} periods ({cg.get('throttled_us', 0) / 1000:.0f} ms)"
    return text


def _quota(quota: int | None) -> str:
    return f"{quota / 1000:g}%" if quota else "-"


def _devices(devices: dict[str, Any]) -> str:
    if not devices:
        return "-"
    return "; ".join(f"{name} ({', '.join(grant.get('ops') or []) if isinstance(grant, dict) else grant})" for name, grant in devices.items())


def bundle_text(bundle: dict[str, Any], records: int) -> str:
    """A bundle for a reader: the summary, the log tail, the last ``records`` journal records."""
    contents = bundle.get("contents") or {}
    out = [summary_text(bundle["summary"], bundle["files"], bundle["path"])]
    log = _text(contents.get(LOG))
    out.append(f"\n--- log tail ({render.human_bytes(len(log.encode()))}) ---")
    out.append(log.rstrip("\n") or "(empty)")
    entries = _records(_text(contents.get(JOURNAL)), records)
    out.append(f"\n--- last {len(entries)} journal records ---")
    out.append(render.audit_table(entries) if entries else "(none)")
    return "\n".join(out)


def _records(text: str, last: int) -> list[dict[str, Any]]:
    """The last ``last`` journal records of a slice; a line cut by the tail read is skipped."""
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "id" in record:
            out.append(record)
    return out[-last:] if last > 0 else []


def _text(data: Any) -> str:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data).decode("utf-8", "replace")
    return str(data or "")


def _local(path: str) -> dict[str, Any] | None:
    """A bundle directory given as a path (no kernel needed), else ``None``."""
    directory = Path(path)
    if not (directory / SUMMARY).is_file():
        return None
    return view(directory.resolve(), (LOG, JOURNAL), SHOWN_BYTES)


def cmd_postmortem(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any], emit: Callable[..., None], error: type[Exception]) -> int:
    if args.open is not None:
        # A path (or, with no agent named, anything that is a bundle directory) is read here.
        looks_like_path = os.sep in args.open or args.open.startswith(".") or not args.name
        bundle = _local(args.open) if looks_like_path else None
        if bundle is None:
            if not args.name:
                raise error(f"postmortem: --open {args.open}: name the agent, or give a bundle directory's path")
            bundle = _call(args, client, error, "postmortem.get", name=args.name, bundle=args.open, include=[LOG, JOURNAL], max_bytes=SHOWN_BYTES)
        emit(args, bundle, lambda: bundle_text(bundle, args.records))
        return 0
    body = {"name": args.name} if args.name else {}
    rows = _call(args, client, error, "postmortem.list", **body)["bundles"]
    emit(args, rows, lambda: bundles_table(rows) if rows else "no post-mortem bundles" + (f" for {args.name}" if args.name else ""))
    return 0


def _call(args: argparse.Namespace, client: Callable[[argparse.Namespace], Any], error: type[Exception], call: str, **body: Any) -> dict[str, Any]:
    with client(args) as c:
        try:
            return dict(c.call(call, **body))
        except CloveError as err:
            if isinstance(err, KernelUnavailable):
                raise
            raise error(f"postmortem: {err.message}") from None


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], argparse.ArgumentParser], bind: Callable[[Any], Any]) -> None:
    p = common(sub.add_parser("postmortem", help="post-mortem bundles of agents that died abnormally: list, or --open one"))
    p.add_argument("name", nargs="?", help="only this agent's bundles (and the agent whose bundle to open)")
    p.add_argument("--open", metavar="BUNDLE", help="print a bundle: its name from the list, 'latest', or a bundle directory's path")
    p.add_argument("--records", type=int, default=20, metavar="N", help="journal records to print with --open (default 20)")
    p.set_defaults(func=bind(cmd_postmortem))

