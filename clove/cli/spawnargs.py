"""What ``clove spawn`` and ``clove mcp`` share: the limits an operator types, parsed."""

from __future__ import annotations

from typing import Any

from clove.config.values import parse_cpu, parse_memory


def spawn_limits(memory: str | None, cpu: str | None, pids: int | None) -> dict[str, Any]:
    """``--memory 256M``, ``--cpu 20%`` (or µs per 100 ms), ``--pids N`` → a spawn's ``limits``.

    :raises ValueError: naming the option and what it expects.
    """
    limits: dict[str, Any] = {}
    if memory:
        limits["memory"] = parse_memory(memory)
    if cpu:
        value: str | int = cpu
        if not cpu.strip().endswith("%"):
            if not cpu.strip().isdigit():
                raise ValueError(f"--cpu takes a percentage like '20%' or µs per 100 ms, got {cpu!r}")
            value = int(cpu)
        limits["cpu_quota"] = parse_cpu(value)
    if pids is not None:
        limits["pids"] = pids
    return limits
