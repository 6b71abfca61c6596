"""A deploy config: the ``[agents.NAME]`` tables of a Clove config, as the agents of a desired
state (docs/fleet.md, "Deploy").

The file is checked by the same loader as a kernel's config (:func:`clove.config.load_config`),
so an error names the file, the table and the key, and nothing is published. It holds
``[agents]`` tables and, only to check their device grants, ``[devices]`` tables: the board's
own config decides everything else (its limits, its devices, its policy), so any other table is
refused rather than silently ignored.

Each agent becomes an ``agent.spawn`` body. Paths (``script``, ``interpreter``,
``working_dir``) are resolved against the config file's directory, as ``clove kernel`` does:
the boards must have the agents at those paths (install them at the same place on every board,
or write absolute paths). Device grants travel as written; the board checks them against its
own ``[devices]``.
"""

from __future__ import annotations

import sys
from typing import Any, Final

from clove.config import AgentConfig, load_config
from clove.errors import ConfigError
from clove.fleet.deploy import MAX_AGENTS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DEPLOY_TABLES", "read_deploy_config", "spawn_body"]

#: The tables a deploy config may hold.
DEPLOY_TABLES: Final = frozenset({"agents", "devices"})


def spawn_body(agent: AgentConfig, devices: Any = None) -> dict[str, Any]:
    """The ``agent.spawn`` body that starts ``agent`` (``devices``: its raw grant tables)."""
    limits: dict[str, Any] = {}
    if agent.memory_bytes is not None:
        limits["memory"] = agent.memory_bytes
    if agent.cpu_quota_us is not None:
        limits["cpu_quota"] = agent.cpu_quota_us
    if agent.pids is not None:
        limits["pids"] = agent.pids
    body: dict[str, Any] = {
        "name": agent.name,
        "script": agent.script,
        "args": list(agent.args),
        "env": dict(agent.env),
        "sandboxed": agent.sandboxed,
        "network": "full" if agent.network_full else agent.network,
        "restart_policy": agent.restart,
        "max_restarts": agent.max_restarts,
        "restart_window": agent.restart_window,
        "level": agent.level,
        "device_wait": agent.device_wait,
        "device_timeout": agent.device_timeout,
    }
    optional = {
        "limits": limits, "egress": list(agent.egress), "egress_private": list(agent.egress_private),
        "interpreter": agent.interpreter, "working_dir": agent.working_dir, "permissions": dict(agent.permissions),
        "devices": devices,
    }  # fmt: skip
    body.update({k: v for k, v in optional.items() if v})
    return body


def read_deploy_config(path: str) -> list[dict[str, Any]]:
    """The agents of the deploy config at ``path``, as spawn bodies, in the file's order.

    :raises ConfigError: naming the file (and the table and key) of the first problem.
    """
    config = load_config(path)  # every check a kernel's config gets; errors name file, table, key
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    other = sorted(set(raw) - DEPLOY_TABLES)
    if other:
        raise ConfigError(
            f"{path}: [{other[0]}]: a deploy config holds [agents] tables (and [devices] to check their grants); "
            "the board's own config sets the rest"
        )
    if len(config.agents) > MAX_AGENTS:
        raise ConfigError(f"{path}: [agents]: {len(config.agents)} agents; a deploy names at most {MAX_AGENTS}")
    tables = raw.get("agents", {})
    return [spawn_body(agent, tables.get(agent.name, {}).get("devices")) for agent in config.agents]
