"""Reading post-mortem bundles: listing them, finding one, and reading its files.

Pure file access with no kernel state, so the ``postmortem.*`` syscalls and ``clove
postmortem --open DIR`` (a bundle copied to another machine) read bundles the same way. Names
that come from a caller are checked before they touch a path: an agent name must be a valid one
and a bundle must be one the listing shows, so ``../`` goes nowhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from clove.config import validate_name
from clove.errors import InvalidArguments, NotFound
from clove.kernel.services.postmortem.bundle import FILES, SUMMARY, bundle_names

LATEST = "latest"


def read_summary(bundle: Path) -> dict[str, Any]:
    """The bundle's ``summary.json``.

    :raises NotFound: no readable summary there (not a bundle, or pruned meanwhile).
    """
    try:
        data = json.loads((bundle / SUMMARY).read_bytes())
    except (OSError, ValueError) as err:
        raise NotFound(f"{bundle} is not a post-mortem bundle ({err})", details={"path": str(bundle)}) from None
    if not isinstance(data, dict):
        raise NotFound(f"{bundle} is not a post-mortem bundle (its summary is not an object)", details={"path": str(bundle)})
    return data


def file_list(bundle: Path) -> list[dict[str, Any]]:
    """The bundle's files that exist, in their canonical order, with sizes."""
    out = []
    for name in FILES:
        try:
            out.append({"name": name, "bytes": (bundle / name).stat().st_size})
        except OSError:
            continue
    return out


def row(bundle: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """One line of a listing: agent, bundle, time, reason, exit figures, path and size."""
    exit_info = summary.get("exit") or {}
    agent = summary.get("agent") or {}
    return {
        "agent": agent.get("name", bundle.parent.name),
        "agent_id": agent.get("id"),
        "bundle": bundle.name,
        "time": summary.get("time"),
        "timestamp": summary.get("timestamp"),
        "reason": summary.get("reason"),
        "escalated": bool(summary.get("escalated")),
        "exit_code": exit_info.get("exit_code"),
        "signal": exit_info.get("signal"),
        "path": str(bundle),
        "size": sum(f["bytes"] for f in file_list(bundle)),
    }


def agent_names(root: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def list_bundles(root: Path, name: str | None = None) -> list[dict[str, Any]]:
    """Every bundle under ``root`` (or only agent ``name``'s): agents by name, each agent's
    newest bundle first. A bundle pruned while being listed is skipped.

    :raises InvalidArguments: ``name`` is not a valid agent name.
    """
    names = [_checked_name(name)] if name is not None else agent_names(root)
    rows = []
    for agent in names:
        for bundle in reversed(bundle_names(root / agent)):
            path = root / agent / bundle
            try:
                rows.append(row(path, read_summary(path)))
            except NotFound:
                continue
    return rows


def find_bundle(root: Path, name: str, bundle: str = LATEST) -> Path:
    """The directory of agent ``name``'s bundle ``bundle`` (a listed directory name, or
    ``"latest"``).

    :raises InvalidArguments: ``name`` is not a valid agent name.
    :raises NotFound: the agent has no bundles, or none of that name.
    """
    agent_dir = root / _checked_name(name)
    names = bundle_names(agent_dir)
    if not names:
        raise NotFound(f"no post-mortem bundles for {name!r}", details={"name": name})
    if bundle == LATEST:
        return agent_dir / names[-1]
    if bundle not in names:
        raise NotFound(f"{name!r} has no post-mortem bundle {bundle!r}", details={"name": name, "bundle": bundle})
    return agent_dir / bundle


def read_tail(path: Path, max_bytes: int) -> bytes:
    """The last ``max_bytes`` of a file (``b""`` when it is missing)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            return f.read(max_bytes)
    except OSError:
        return b""


def view(bundle: Path, include: list[str] | tuple[str, ...] = (), max_bytes: int = 64 << 10) -> dict[str, Any]:
    """A bundle for a reader: its summary, its file list and, for each file named in
    ``include``, its last ``max_bytes`` bytes.

    :raises InvalidArguments: ``include`` names a file bundles do not have.
    :raises NotFound: ``bundle`` has no readable summary.
    """
    unknown = sorted(set(include) - set(FILES))
    if unknown:
        raise InvalidArguments(f"unknown bundle file {unknown[0]!r}", details={"known": list(FILES)})
    summary = read_summary(bundle)
    files = file_list(bundle)
    present = {f["name"] for f in files}
    return {
        "agent": (summary.get("agent") or {}).get("name", bundle.parent.name),
        "bundle": bundle.name,
        "path": str(bundle),
        "summary": summary,
        "files": files,
        "contents": {name: read_tail(bundle / name, max_bytes) for name in include if name in present},
    }


def _checked_name(name: str) -> str:
    try:
        return validate_name(name)
    except ValueError as err:
        raise InvalidArguments(str(err), details={"name": name}) from None
