"""The ``[metrics]`` table: where the kernel serves ``/metrics`` for Prometheus (docs/metrics.md,
"Prometheus").

Off unless ``listen`` is given. A bare port listens on loopback; any other address is the
operator saying so in the config (``listen = "0.0.0.0:9464"``)::

    [metrics]
    listen = "127.0.0.1:9464"   # or "9464", "[::1]:9464"
    interval = 1.0              # seconds between the snapshots the exporter serves
    forget_after = 300.0        # seconds a dead agent's series are still served
    max_agent_series = 2000     # agents with series at once (the dead are dropped first)
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Any, Final

from clove.config.values import Table

__all__ = ["DEFAULT_PORT", "MetricsSection", "parse_listen", "parse_metrics"]

#: Prometheus's registry of default ports gives 9464 to OpenTelemetry-style exporters.
DEFAULT_PORT: Final = 9464
MIN_INTERVAL: Final = 0.1
MAX_INTERVAL: Final = 60.0
MAX_AGENT_SERIES: Final = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSection:
    """``listen``: ``(host, port)`` or ``None`` (no exporter, the default)."""

    listen: tuple[str, int] | None = None
    interval: float = 1.0
    forget_after: float = 300.0
    max_agent_series: int = 2000


def parse_listen(value: object) -> tuple[str, int]:
    """``"9464"``, ``9464``, ``"127.0.0.1:9464"``, ``"[::1]:9464"`` → ``(host, port)``; a bare
    port means loopback.

    :raises ValueError: with a message fit for a user.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        host, port_text = "127.0.0.1", str(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):  # [v6]:port
            host, sep, rest = text[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ValueError(f"expected '[ipv6]:port', got {value!r}")
            port_text = rest[1:]
        elif ":" in text:
            host, _, port_text = text.rpartition(":")
        else:
            host, port_text = "127.0.0.1", text
    else:
        raise ValueError(f"expected 'host:port' or a port, got {value!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"expected an IP address (no host names: a board must not depend on DNS to boot), got {host!r}") from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"expected a port between 1 and 65535, got {port_text!r}")
    return host, int(port_text)


def parse_metrics(source: str, raw: dict[str, Any]) -> MetricsSection:
    """The ``[metrics]`` table of a config file's ``raw`` TOML.

    :raises ConfigError: naming the file, the table and the key.
    """
    t = Table.top(source, raw, "metrics")
    section = MetricsSection(
        listen=t.parsed("listen", parse_listen, None),
        interval=t.positive("interval", float, 1.0),
        forget_after=t.positive("forget_after", float, 300.0),
        max_agent_series=t.positive("max_agent_series", int, 2000),
    )
    if not MIN_INTERVAL <= section.interval <= MAX_INTERVAL:
        raise t.fail("interval", f"must be between {MIN_INTERVAL} and {MAX_INTERVAL} seconds, got {section.interval}")
    if not math.isfinite(section.forget_after):
        raise t.fail("forget_after", f"must be a finite number of seconds, got {section.forget_after}")
    if section.max_agent_series > MAX_AGENT_SERIES:
        raise t.fail("max_agent_series", f"must be at most {MAX_AGENT_SERIES}, got {section.max_agent_series}")
    t.done()
    return section
