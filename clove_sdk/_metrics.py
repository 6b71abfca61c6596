"""Metrics: the host, agents and cgroups (docs/metrics.md)."""

from __future__ import annotations

from typing import Any

from clove_sdk._base import ClientBase


class MetricsMixin(ClientBase):
    def get_system_metrics(self) -> dict[str, Any]:
        """:returns: ``{success, cpu: {percent, count, load_avg}, memory: {total, available,
        used, percent}, disk: {read_bytes, write_bytes}, network: {bytes_sent, bytes_recv}}``."""
        return self._compat("metrics.system")

    def get_agent_metrics(self, agent_id: int | None = None) -> dict[str, Any]:
        """One agent's figures (``None``: yourself; agents may read themselves and their
        children): ``{success, agent_id, name, status, uptime_ms, restarts, parent_id,
        process: {pid, cpu: {percent, seconds}, memory: {rss, vms}, threads, fds}, cgroup: {...}}``."""
        return self._compat("metrics.agent", **({"agent_id": agent_id} if agent_id is not None else {}))

    def get_all_agent_metrics(self) -> dict[str, Any]:
        """:returns: ``{success, agents: [...], count}`` (operators: every agent; agents:
        themselves and their children)."""
        return self._compat("metrics.agents")

    def get_cgroup_metrics(self, cgroup_path: str | None = None) -> dict[str, Any]:
        """A cgroup's counters and limits: ``{success, cgroup_path, paths, cgroup: {...}}``.
        Agents may read only their own (``cgroup_path=None``)."""
        body = {"cgroup_path": cgroup_path} if cgroup_path is not None else {}
        return self._compat("metrics.cgroup", **body)
