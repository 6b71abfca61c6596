"""The sandbox limits every agent gets, where each one came from, and its ceiling.

No agent runs unbounded. Its memory, CPU quota and PIDs are what its spawn's ``limits`` (or its
``[agents.NAME]`` table) ask for, else the kernel's default for that agent: ``[limits.agents.NAME]``
over ``[limits]`` (:class:`clove.config.AgentLimits`). Its work dir and its private ``/tmp`` and
``/dev/shm`` are bounded by the same tables (``workdir_bytes``, ``tmp_bytes``, ``tmp_inodes``),
which a spawn cannot change.

:func:`resolve` decides, for every way an agent starts (``agent.spawn``, the config's agents at
boot, a replay). It returns the spec with the values filled in, as a :class:`LimitedConfig`: an
:class:`~clove.config.AgentConfig` to everything downstream (the supervisor writes its values
into the cgroup, restarts reuse it) that also carries what :func:`isolation_report` shows.

Refused, before anything exists:

* a request above its ceiling (``max_memory_bytes``, ``max_cpu_quota_us``, ``max_pids``):
  :class:`~clove.errors.InvalidArguments` (``proto.invalid_args``) naming the limit, the request
  and the ceiling. Not ``quota.exceeded``: that code means the caller used up something that may
  free up later (state bytes, queued messages) and retrying can work; a ceiling is the fixed upper
  end of the range this kernel accepts for the argument, like the 1 ms floor of a CPU quota, and
  only a different request can succeed.
* an agent's child asking for more than its parent has: :class:`~clove.errors.PermissionDenied`
  (``perm.denied``), as for any right a parent lacks. A child that asks nothing gets its own
  default, but never more than its parent's value (``source: "parent"`` then).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from clove.config import AgentConfig, AgentLimits, LimitsSection
from clove.errors import InvalidArguments, PermissionDenied
from clove.sandbox import workdir

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent

#: Where a value came from: the spawn or ``[agents.NAME]``; ``[limits]``; ``[limits.agents.NAME]``;
#: the parent agent's own (lower than the child's default).
SOURCES: Final = ("request", "default", "agent_default", "parent")

#: (spec field, report key, ceiling field) of the limits a spawn may ask for.
_REQUESTABLE: Final = (
    ("memory_bytes", "memory", "max_memory_bytes"),
    ("cpu_quota_us", "cpu", "max_cpu_quota_us"),
    ("pids", "pids", "max_pids"),
)
_TMPFS: Final = "on the private /tmp and /dev/shm (each)"


@dataclass(frozen=True, slots=True)
class Applied:
    """One applied limit: its value, where it came from (:data:`SOURCES`), and the ceiling a
    request is held to (``None``: not requestable per spawn, only the ``[limits]`` tables set it)."""

    value: int
    source: str
    ceiling: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    memory: Applied
    cpu: Applied
    pids: Applied
    workdir: Applied
    tmp: Applied
    tmp_inodes: Applied


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitedConfig(AgentConfig):
    """An agent's spec with every sandbox limit decided (``memory_bytes``, ``cpu_quota_us`` and
    ``pids`` hold the applied values); ``resolved`` says where each came from."""

    resolved: Resolved


def _default_source(limits: LimitsSection, name: str, key: str) -> str:
    own = limits.agents.get(name)
    if own is not None and getattr(own, key) != getattr(limits.defaults, key):
        return "agent_default"
    return "default"


def _table(limits: LimitsSection, name: str, key: str) -> str:
    return f"[limits.agents.{name}]" if _default_source(limits, name, key) == "agent_default" else "[limits]"


def resolve(spec: AgentConfig, limits: LimitsSection, *, parent: AgentConfig | None = None) -> LimitedConfig:
    """``spec`` with its sandbox limits decided (see the module's docstring).

    :param limits: the kernel's ``[limits]`` section.
    :param parent: the spec of the agent that spawns this one, if an agent does.
    :raises InvalidArguments: a requested limit is above its ceiling.
    :raises PermissionDenied: a child asks for more than its parent has.
    """
    if isinstance(spec, LimitedConfig):
        return spec
    own: AgentLimits = limits.for_agent(spec.name)
    values: dict[str, int] = {}
    applied: dict[str, Applied] = {}
    for key, label, ceiling_key in _REQUESTABLE:
        requested: int | None = getattr(spec, key)
        ceiling: int = getattr(own, ceiling_key)
        cap: int | None = getattr(parent, key) if parent is not None else None
        if requested is not None:
            if requested > ceiling:
                raise InvalidArguments(
                    f"{key} {requested} is above its ceiling {ceiling_key} = {ceiling} ({_table(limits, spec.name, ceiling_key)})",
                    details={"agent": spec.name, "limit": key, "requested": requested, "ceiling": ceiling, "ceiling_key": ceiling_key},
                )
            if cap is not None and requested > cap:
                raise PermissionDenied(f"a child's {key} cannot exceed its parent's ({cap})", details={"limit": key, "parent": cap})
            value, source = requested, "request"
        else:
            value, source = getattr(own, key), _default_source(limits, spec.name, key)
            if cap is not None and cap < value:
                value, source = cap, "parent"
        values[key] = value
        applied[label] = Applied(value, source, ceiling)
    for key, label in (("workdir_bytes", "workdir"), ("tmp_bytes", "tmp"), ("tmp_inodes", "tmp_inodes")):
        applied[label] = Applied(getattr(own, key), _default_source(limits, spec.name, key))
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(AgentConfig)}
    return LimitedConfig(**{**fields, **values}, resolved=Resolved(**applied))


def work_image(spec: AgentConfig, work: str) -> str | None:
    """The ext4 image that bounds the work dir ``work``, or ``None`` when it is not bounded: an
    unsandboxed agent (no mount namespace), an operator's own ``working_dir``, or a machine
    without loop devices, ext4 or mkfs.ext4 (:func:`clove.sandbox.workdir.unsupported`)."""
    if not isinstance(spec, LimitedConfig) or not spec.sandboxed or spec.working_dir or workdir.unsupported():
        return None
    return workdir.image_for(work)


def spawn_storage(spec: AgentConfig, work: str) -> dict[str, Any]:
    """The :class:`~clove.sandbox.spec.SpawnSpec` fields that bound ``/tmp`` and the work
    dir (empty for a spec that was never resolved: the SpawnSpec's own defaults then)."""
    if not isinstance(spec, LimitedConfig):
        return {}
    r = spec.resolved
    image = work_image(spec, work)
    return {
        "tmp_bytes": r.tmp.value,
        "tmp_inodes": r.tmp_inodes.value,
        "workdir_image": image,
        "workdir_bytes": r.workdir.value if image is not None else None,
    }


def _entry(applied: Applied, enforced: bool, via: str) -> dict[str, Any]:
    return {"requested": applied.value, "enforced": enforced, "via": via, "source": applied.source, "ceiling": applied.ceiling}


def _storage(spec: LimitedConfig, work: str) -> dict[str, dict[str, Any]]:
    r = spec.resolved
    if not spec.sandboxed:
        return {
            "workdir": _entry(r.workdir, False, "not bounded: unsandboxed, the work dir is a plain host directory"),
            "tmp": _entry(r.tmp, False, "not bounded: unsandboxed, the host's /tmp"),
            "tmp_inodes": _entry(r.tmp_inodes, False, "not bounded: unsandboxed, the host's /tmp"),
        }
    if spec.working_dir:
        work_via, bounded = "not bounded: working_dir is the operator's own directory", False
    elif (why := workdir.unsupported()) is not None:
        work_via, bounded = f"not bounded: {why}", False
    else:
        work_via, bounded = f"ext4 image {workdir.image_for(work)} on a loop device, mounted in the agent's mount namespace", True
    return {
        "workdir": _entry(r.workdir, bounded, work_via),
        "tmp": _entry(r.tmp, True, f"tmpfs size= {_TMPFS}"),
        "tmp_inodes": _entry(r.tmp_inodes, True, f"tmpfs nr_inodes= {_TMPFS}"),
    }


def isolation_report(agent: Agent) -> dict[str, Any]:
    """The agent's isolation report: what the supervisor recorded at its start (backend, cgroup,
    how each limit is enforced, namespaces, uid, Landlock, seccomp), each of ``limits`` with its
    ``source`` and ``ceiling``, and ``storage``: the work dir's and private ``/tmp``'s bounds."""
    report = dict(agent.isolation)
    spec = agent.spec
    if not report or not isinstance(spec, LimitedConfig):
        return report
    limits = {key: dict(entry) for key, entry in (report.get("limits") or {}).items()}
    r = spec.resolved
    for label, applied in (("memory", r.memory), ("cpu", r.cpu), ("pids", r.pids)):
        if label in limits:
            limits[label].update(source=applied.source, ceiling=applied.ceiling)
    report["limits"] = limits
    report["storage"] = _storage(spec, agent.permissions.work_dir)
    return report
