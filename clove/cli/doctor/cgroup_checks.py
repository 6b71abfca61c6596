"""The cgroup lines of the report: the version, v2 delegation, v1 controllers, and the backend
the kernel would pick (docs/doctor.md says what each means)."""

from __future__ import annotations

from clove.cli.doctor.schema import Check
from clove.sandbox.cgroup_v2 import V2_CONTROLLERS
from clove.sandbox.hostcgroups import CgroupFacts, V1Controller, V2Facts

__all__ = ["cgroup_checks"]

_LIMITS = ", ".join(V2_CONTROLLERS)
_TO_V2 = "boot with systemd.unified_cgroup_hierarchy=1 on the kernel command line (cgroup v2 only)"
_DELEGATE = (
    "run the kernel as a systemd service with Delegate=yes in its unit (or systemd-run -p Delegate=yes "
    "--scope clove kernel ...), so its cgroup is its own and offers memory, cpu and pids"
)


def cgroup_checks(facts: CgroupFacts) -> list[Check]:
    checks = [_version(facts)]
    if facts.mode == "v2" and facts.v2 is not None:
        checks.append(_v2(facts.v2))
    if facts.mode in ("v1", "hybrid"):
        checks.append(_v1(facts))
    checks.append(_backend(facts))
    return checks


def _version(facts: CgroupFacts) -> Check:
    data = {
        "mode": facts.mode, "v1_mounted": list(facts.v1_mounted), "v2_mount": facts.v2.mount if facts.v2 else None,
        "v2": facts.v2.to_dict() if facts.v2 else None, "v1_usable": not facts.v1_reason, "v1_reason": facts.v1_reason or None,
    }  # fmt: skip
    if facts.mode == "v2":
        return Check(
            id="cgroup.version", title="cgroup version", status="ok", facts=data,
            summary=f"cgroup v2 (unified hierarchy) at {facts.v2.mount if facts.v2 else '?'}",
            meaning="agents get Clove's cgroup2 backend where the kernel's cgroup delegates memory, cpu and pids "
            "(memory.max, cpu.max, pids.max; cgroup.kill ends a whole tree at once)",
        )  # fmt: skip
    if facts.mode in ("v1", "hybrid"):
        unified = ""
        if facts.mode == "hybrid" and facts.v2 is not None:
            offers = " ".join(facts.v2.controllers) or "no controllers"
            unified = f", beside cgroup v2 at {facts.v2.mount} ({offers})"
        return Check(
            id="cgroup.version", title="cgroup version", status="warn", facts=data, fix=_TO_V2,
            summary=f"{'hybrid' if facts.mode == 'hybrid' else 'cgroup v1'}: v1 controllers "
            f"{' '.join(facts.v1_mounted)}{unified}",
            meaning="the limit controllers are on v1, so the kernel uses its cgroup1 backend (see the backend line: "
            "it enforces memory, cpu and pids there too). v1 is deprecated (systemd 258 no longer boots with it) "
            "and has no cgroup.kill: killing an agent's tree takes a freeze, a SIGKILL per process and a thaw",
        )  # fmt: skip
    return Check(
        id="cgroup.version", title="cgroup version", status="missing", facts=data,
        summary="no cgroup hierarchy is mounted",
        meaning="no per-agent cgroups: limits fall back to rlimits (memory as address space, no CPU quota)",
        fix="mount cgroup v2 (mount -t cgroup2 none /sys/fs/cgroup), as systemd does at boot",
    )  # fmt: skip


def _v2(v2: V2Facts) -> Check:
    data = v2.to_dict()
    title = "cgroup v2 delegation"
    if v2.own is None:
        return Check(id="cgroup.v2", title=title, status="missing", facts=data,
                     summary=f"this process's cgroup is not visible under {v2.mount}" if v2.mount
                     else "no cgroup2 hierarchy under the cgroup root",
                     meaning="the cgroup2 backend cannot be used: " + v2.reason,
                     fix="mount the cgroup2 hierarchy with this process's cgroup in view (a container needs a cgroup namespace)")  # fmt: skip
    missing = [c for c in V2_CONTROLLERS if c not in v2.controllers]
    offers = " ".join(v2.controllers) or "none"
    where = f"{v2.own} offers {offers}; enabled for children: {' '.join(v2.enabled) or 'none'}"
    if missing:
        return Check(
            id="cgroup.v2", title=title, status="warn" if len(missing) < len(V2_CONTROLLERS) else "missing", facts=data,
            summary=f"{where}; not delegated: {', '.join(missing)}",
            meaning=f"the kernel's cgroup must offer {_LIMITS} (its parent enables them in cgroup.subtree_control); "
            "without them auto falls back to v1 or rlimits, and a limit whose controller is missing is not enforced",
            fix=_DELEGATE,
        )  # fmt: skip
    if v2.writable:
        return Check(
            id="cgroup.v2", title=title, status="missing", facts=data,
            summary=f"{where}; not writable ({v2.writable})",
            meaning="the kernel cannot make agent cgroups under its own: no cgroup limits",
            fix="run the kernel as root, or with Delegate=yes in its unit (the unit's user then owns its cgroup)",
        )  # fmt: skip
    if v2.reason:
        return Check(
            id="cgroup.v2", title=title, status="missing", facts=data,
            summary=f"{where}; holds {len(v2.processes)} processes ({len(v2.others)} besides this one)",
            meaning="v2's no-internal-processes rule: a cgroup that enables controllers for its children may not "
            "hold processes. The kernel moves only itself into a leaf (<own>/clove-<pid>-kernel); with other "
            f"processes here it refuses, and auto passes cgroup2 over ({v2.reason})",
            fix="start the kernel in a cgroup of its own, not from a login shell: " + _DELEGATE,
        )  # fmt: skip
    if v2.is_root or set(V2_CONTROLLERS) <= set(v2.enabled):
        plan = "they are already enabled for its children" if not v2.is_root else "it is the hierarchy's root"
    else:
        plan = "the kernel moves itself into the leaf <own>/clove-<pid>-kernel, then enables them for its agents"
    return Check(
        id="cgroup.v2", title=title, status="ok", facts=data,
        summary=f"{where}; writable; processes: {len(v2.processes)}",
        meaning=f"{_LIMITS} are delegated to the kernel's cgroup and it may write there; {plan}",
    )  # fmt: skip


def _v1(facts: CgroupFacts) -> Check:
    data = {c.name: c.to_dict() for c in facts.v1}
    usable = [c.name for c in facts.v1 if c.own is not None and not c.writable]
    required_missing = [c for c in V2_CONTROLLERS if c not in usable]
    summary = "; ".join(_v1_part(c) for c in facts.v1)
    if len(required_missing) == len(V2_CONTROLLERS):
        status = "missing"
    elif required_missing or "freezer" not in usable:
        status = "warn"
    else:
        status = "ok"
    meaning = "per agent, a directory in each v1 hierarchy: memory.limit_in_bytes, cpu.cfs_quota_us, pids.max; the freezer pauses agents and stops a tree from forking while it is killed"
    if required_missing:
        meaning += f"; not enforced here: {', '.join(required_missing)}"
    if "freezer" not in usable:
        meaning += "; without the freezer, pause and resume fail and a kill signals processes one round at a time"
    fix = None
    if status != "ok":
        if any(c.writable for c in facts.v1 if c.own is not None):
            fix = "run the kernel as root (it makes a cgroup per agent in each hierarchy)"
        else:
            fix = "mount the missing controllers (mount -t cgroup -o pids cgroup /sys/fs/cgroup/pids; systemd mounts them all), or " + _TO_V2
    return Check(id="cgroup.v1", title="cgroup v1 controllers", status=status, summary=summary, meaning=meaning, fix=fix, facts=data)


def _v1_part(c: V1Controller) -> str:
    if c.own is None:
        return f"{c.name}: {c.reason}"
    return f"{c.name} at {c.own}" + (f" (not writable: {c.writable})" if c.writable else "")


def _backend(facts: CgroupFacts) -> Check:
    choice = facts.backend
    data = choice.to_dict()
    title = "limits backend"
    if choice.error:
        return Check(
            id="cgroup.backend", title=title, status="missing", facts=data,
            summary=f"[sandbox].backend = {choice.preference!r} is unavailable: {choice.error}",
            meaning="the kernel refuses to start with this config",
            fix='set [sandbox].backend = "auto", or make the named backend available (see the cgroup lines)',
        )  # fmt: skip
    if choice.name == "rlimit":
        why = "; ".join(f"{k}: {v}" for k, v in choice.reasons.items()) or f"[sandbox].backend = {choice.preference!r}"
        by_config = choice.preference in ("rlimit", "none")
        return Check(
            id="cgroup.backend", title=title, status="warn" if by_config else "missing", facts=data,
            summary=f"rlimits only ({why})",
            meaning="no per-agent cgroups: memory is bounded as address space (RLIMIT_AS), tasks per uid "
            "(RLIMIT_NPROC), CPU not at all; no freezer for pause. require_isolation refuses every spawn",
            fix='set [sandbox].backend = "auto"' if by_config else "give the kernel a cgroup (see the cgroup lines above)",
        )  # fmt: skip
    controllers = choice.controllers()
    enforced = [c for c in V2_CONTROLLERS if c in controllers]
    missing = [c for c in V2_CONTROLLERS if c not in controllers]
    made = sum(1 for change in choice.changes if change[0] == "mkdir")
    summary = f"{choice.name}: enforces {', '.join(enforced)}" + (f"; not {', '.join(missing)}" if missing else "")
    meaning = f"at boot the kernel makes its parent cgroup(s) ({made} directories) and one cgroup per agent under them"
    if choice.reasons:
        meaning += "; passed over: " + "; ".join(f"{k}: {v}" for k, v in choice.reasons.items())
    return Check(
        id="cgroup.backend", title=title, status="warn" if missing else "ok", facts=data, summary=summary, meaning=meaning,
        fix=None if not missing else f"a {choice.name} hierarchy with {', '.join(missing)} (see the cgroup lines above)",
    )  # fmt: skip
