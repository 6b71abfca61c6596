"""Boot: config → logging → kernel → loop. The only place that configures logging."""

from __future__ import annotations

import logging
import os
import sys

from clove.config import KernelConfig, load_config
from clove.errors import CloveError, ConfigError

log = logging.getLogger("clove.kernel")


def resolve_socket(cli: str | None, config: KernelConfig) -> str:
    """``--socket`` beats ``$CLOVE_SOCKET``, which beats the config file, then the default."""
    value = cli or os.environ.get("CLOVE_SOCKET") or config.kernel.socket
    return value[len("ipc://") :] if value.startswith("ipc://") else value


def _check_boot_agents(config: KernelConfig) -> None:
    for agent in config.agents:
        if not os.path.isfile(agent.script):
            raise ConfigError(f"{config.source}: [agents.{agent.name}].script: no such file: {agent.script}")


def run_kernel(*, config_path: str | None, socket_path: str | None, state_dir: str | None, log_level: str | None) -> int:
    """Run a kernel in the foreground until SIGTERM or SIGINT; returns the exit status."""
    try:
        config = load_config(config_path)
        _check_boot_agents(config)
    except ConfigError as err:
        print(f"clove: {err.message}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=(log_level or config.kernel.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if os.geteuid() != 0:
        log.warning("not running as root: no cgroups, namespaces or uid separation; isolation reports will say so")
    from clove.kernel.kernel import Kernel  # deferred: the CLI imports this module for every command

    kernel = Kernel(config, socket_path=resolve_socket(socket_path, config), state_dir=state_dir or config.kernel.state_dir)
    try:
        kernel.start()
    except CloveError as err:
        print(f"clove: {err.message}", file=sys.stderr)
        return 1
    kernel.run()
    return 0
