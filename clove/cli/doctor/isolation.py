"""Whether ``[sandbox].require_isolation`` would hold on this host, decided the kernel's way.

The kernel refuses a spawn under ``require_isolation`` when a requested limit cannot be
enforced (the backend's ``planned_report``, or the rlimit fallback's report) or the agent is
unsandboxed (:meth:`clove.kernel.supervision.starting.Starter.check_spawnable`). Every spawn
requests memory, CPU and PIDs (the ``[limits]`` defaults fill in what it does not name:
:func:`clove.kernel.supervision.limits.resolve`), so one missing controller refuses them all.
A sandboxed agent also needs its namespaces: without them it never starts.
"""

from __future__ import annotations

import os

from clove.cli.doctor.host import HostFacts
from clove.cli.doctor.schema import Isolation
from clove.config import AgentConfig, KernelConfig
from clove.errors import CloveError
from clove.kernel.supervision.limits import resolve
from clove.sandbox.limits import LimitReport, Limits
from clove.sandbox.rlimits import rlimits_for

__all__ = ["isolation_verdict"]


def _planned(facts: HostFacts, limits: Limits, *, sandboxed: bool) -> dict[str, LimitReport]:
    backend = facts.cgroups.backend.backend
    if backend is not None:
        return backend.planned_report(limits)
    return rlimits_for(limits, runs_as_root=not sandboxed)[1]


def _limits_of(spec: AgentConfig) -> Limits:
    return Limits(memory_bytes=spec.memory_bytes, cpu_quota_us=spec.cpu_quota_us, pids=spec.pids)


def _unenforced(report: dict[str, LimitReport]) -> list[str]:
    return [key for key, r in report.items() if r.requested is not None and not r.enforced]


def isolation_verdict(config: KernelConfig, facts: HostFacts) -> Isolation:
    reasons: list[str] = []
    choice = facts.cgroups.backend
    if choice.error:
        reasons.append(f"the kernel would not start: {choice.error}")
    defaults = config.limits.defaults  # a spawn that names no limits
    report = _planned(facts, Limits(memory_bytes=defaults.memory_bytes, cpu_quota_us=defaults.cpu_quota_us, pids=defaults.pids), sandboxed=True)
    missing = _unenforced(report)
    if missing:
        why = "; ".join(f"{key}: {report[key].via}" for key in missing)
        reasons.append(f"{choice.name} cannot enforce {', '.join(missing)} for any spawn ({why})")
    agents: dict[str, dict[str, object]] = {}
    for spec in config.agents:
        try:
            resolved = resolve(spec, config.limits)
        except CloveError as err:  # above a ceiling: the kernel does not start it at all
            agents[spec.name] = {"sandboxed": spec.sandboxed, "refused": err.message}
            continue
        planned = _planned(facts, _limits_of(resolved), sandboxed=spec.sandboxed)
        agents[spec.name] = {"sandboxed": spec.sandboxed, "limits": {k: r.to_dict() for k, r in planned.items()}}
        if not spec.sandboxed:
            reasons.append(f"[agents.{spec.name}] is unsandboxed (sandboxed = false): require_isolation refuses it")
    failed = facts.namespaces.failed()
    if facts.euid != 0:
        reasons.append(f"the kernel would run as uid {facts.euid}, not root: sandboxed agents cannot get namespaces or their own uid")
    elif failed:
        names = ", ".join(f"{k} ({os.strerror(v)})" for k, v in failed.items())
        reasons.append(f"sandboxed agents cannot start: cannot create namespaces {names}")
    return Isolation(
        required=config.sandbox.require_isolation,
        honoured=not reasons,
        backend=choice.name,
        limits={key: r.to_dict() for key, r in report.items()},
        agents=agents,
        reasons=tuple(reasons),
    )
