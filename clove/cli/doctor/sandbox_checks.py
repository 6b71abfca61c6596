"""The confinement lines of the report: namespaces, Landlock, seccomp, unprivileged user
namespaces and the bounded work dir (docs/doctor.md says what each means)."""

from __future__ import annotations

import errno
import os
from typing import Final

from clove.cli.doctor.schema import Check
from clove.config import SandboxSection
from clove.sandbox.hostprobe import LandlockFacts, NamespaceFacts, SeccompFacts, UsernsFacts

__all__ = ["landlock_check", "namespaces_check", "seccomp_check", "userns_check", "workdir_check"]

#: The Linux release that brought each Landlock ABI, and what Clove enforces with it.
_LANDLOCK_ABI: Final = {1: ("5.13", "file writes"), 4: ("6.7", "TCP bind and connect"), 6: ("6.12", "abstract Unix sockets and signals")}


def namespaces_check(ns: NamespaceFacts) -> Check:
    data = ns.to_dict()
    title = "namespaces"
    failed = ns.failed()
    if ns.euid != 0:
        return Check(
            id="namespaces", title=title, status="missing", facts=data,
            summary=f"running as uid {ns.euid}, not root"
            + (f"; could not create: {', '.join(f'{k} ({os.strerror(v)})' for k, v in failed.items())}" if failed else ""),
            meaning="sandboxed agents need root: the kernel creates their namespaces and gives each its own uid; "
            "as another user they fail to start (the kernel still runs unsandboxed agents, with reports that say so)",
            fix="run the kernel as root",
        )  # fmt: skip
    if failed:
        return Check(
            id="namespaces", title=title, status="missing", facts=data,
            summary="could not create: " + ", ".join(f"{k} ({os.strerror(v)})" for k, v in failed.items()),
            meaning="every sandboxed agent fails to start (the zygote's unshare is refused)",
            fix="run the kernel on the host, or in a container with CAP_SYS_ADMIN and no seccomp profile that refuses unshare",
        )  # fmt: skip
    return Check(
        id="namespaces", title=title, status="ok", facts=data,
        summary=f"created {', '.join(ns.created)} in a child process, as root",
        meaning="each sandboxed agent gets its own mount, uts, ipc and pid namespaces, and its own network "
        "namespace (reaching only the kernel's relays) unless it has network \"full\", and runs as its own uid",
    )  # fmt: skip


def landlock_check(ll: LandlockFacts, sandbox: SandboxSection) -> Check:
    data = ll.to_dict() | {"enabled_in_config": sandbox.landlock}
    title = "Landlock"
    if not sandbox.landlock:
        return Check(id="landlock", title=title, status="warn", facts=data,
                     summary=f"ABI {ll.abi} here, but [sandbox].landlock = false",
                     meaning="agents get no Landlock ruleset: writes are bounded by the mount view and the agent's uid only",
                     fix="set [sandbox].landlock = true")  # fmt: skip
    if ll.abi < 1:
        off_at_boot = ll.lsm is not None and "landlock" not in ll.lsm  # the usual case: built, not enabled
        return Check(
            id="landlock", title=title, status="missing", facts=data,
            summary="Landlock is not available" + (f" (active LSMs: {','.join(ll.lsm or ())})" if ll.lsm is not None else ""),
            meaning="agents get no Landlock ruleset (their isolation report says landlock fs: false): writes are bounded by "
            "the read-only mount view and the agent's uid only; an agent without network is kept off TCP by its "
            "empty network namespace alone",
            fix=("add landlock to the lsm= kernel parameter (e.g. lsm=landlock,lockdown,yama,integrity,apparmor,bpf); "
                 "a kernel built without CONFIG_SECURITY_LANDLOCK needs rebuilding"
                 if off_at_boot else "a Linux 5.13+ kernel with CONFIG_SECURITY_LANDLOCK=y and landlock in lsm="),
        )  # fmt: skip
    enforces = ll.features()
    lacking = [what for abi, (_release, what) in _LANDLOCK_ABI.items() if ll.abi < abi]
    have = [what for abi, (_release, what) in _LANDLOCK_ABI.items() if ll.abi >= abi]
    if lacking:
        newest = max(abi for abi in _LANDLOCK_ABI if ll.abi < abi)
        return Check(
            id="landlock", title=title, status="warn", facts=data,
            summary=f"ABI {ll.abi}: rules for {', '.join(have)}; none for {', '.join(lacking)}",
            meaning="agents get a ruleset at this ABI; what it cannot rule is left to the namespaces and uid "
            f"(isolation report: {', '.join(f'{k}: {str(v).lower()}' for k, v in enforces.items())})",
            fix=f"Linux {_LANDLOCK_ABI[newest][0]}+ (Landlock ABI {newest}) for rules on {', '.join(lacking)}",
        )  # fmt: skip
    return Check(
        id="landlock", title=title, status="ok", facts=data,
        summary=f"ABI {ll.abi}: rules for {', '.join(have)}",
        meaning="each agent may write only under its own directories, connects by TCP only to its relays unless it "
        "has network \"full\", and cannot reach "
        "abstract Unix sockets or signal processes outside its sandbox",
    )  # fmt: skip


def seccomp_check(sc: SeccompFacts, sandbox: SandboxSection) -> Check:
    data = sc.to_dict() | {"enabled_in_config": sandbox.seccomp}
    title = "seccomp"
    notif = "user notification available (Clove does not use it)" if "user_notif" in sc.actions else "no user notification (Clove does not use it)"
    stacked = "; this process already runs under a seccomp filter (a container's?), which agents' filters stack on" if sc.mode == 2 else ""
    if not sc.kernel or not sc.filter_mode:
        what = "no seccomp" if not sc.kernel else "no seccomp filter mode (errno action)"
        return Check(
            id="seccomp", title=title, status="missing", facts=data, summary=f"this kernel has {what}",
            meaning="agents run without Clove's syscall filter (isolation report: seccomp false): ptrace, mount, "
            "unshare, bpf, AF_PACKET and the rest of the list are refused only by uid and capabilities",
            fix="a kernel with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y",
        )  # fmt: skip
    if sc.library:
        return Check(
            id="seccomp", title=title, status="missing", facts=data, summary=f"filter mode available; {sc.library}",
            meaning="the zygote cannot compile the filter: agents run without it (isolation report: seccomp false)",
            fix="install libseccomp (apt install libseccomp2, dnf install libseccomp)",
        )  # fmt: skip
    if not sandbox.seccomp:
        return Check(id="seccomp", title=title, status="warn", facts=data,
                     summary="filter mode and libseccomp available, but [sandbox].seccomp = false",
                     meaning="agents run without Clove's syscall filter", fix="set [sandbox].seccomp = true")  # fmt: skip
    return Check(
        id="seccomp", title=title, status="ok", facts=data,
        summary=f"filter mode; libseccomp builds Clove's filters; {notif}",
        meaning="every agent (and every command it runs) gets Clove's filter: tracing, mounting, new namespaces, "
        f"kernel modules, bpf and socket families outside its allowlist are refused{stacked}",
    )  # fmt: skip


def _userns_refusal(u: UsernsFacts) -> str:
    if u.create == 0:
        if u.apparmor_restrict:
            return "created, but AppArmor takes every capability inside it (kernel.apparmor_restrict_unprivileged_userns = 1)"
        return f"created, but a capability inside it was refused ({os.strerror(u.use)})"
    if u.unprivileged_clone == 0:
        return "refused: kernel.unprivileged_userns_clone = 0"
    if u.max_namespaces == 0 or u.create == errno.ENOSPC:
        return f"refused: user.max_user_namespaces = {u.max_namespaces}"
    return f"refused ({os.strerror(u.create)})"


def userns_check(u: UsernsFacts, seccomp: SeccompFacts, sandbox: SandboxSection) -> Check:
    data = u.to_dict()
    title = "user namespaces"
    filtered = sandbox.seccomp and seccomp.filter_mode and not seccomp.library
    not_needed = "Clove does not use them: its kernel runs as root and makes agents' namespaces itself"
    if not u.usable:
        return Check(
            id="userns", title=title, status="ok", facts=data,
            summary=f"unprivileged (uid {u.as_uid}): {_userns_refusal(u)}",
            meaning=f"{not_needed}; the restriction is one more wall behind seccomp, which refuses them to agents "
            "anyway. Other software that needs them (rootless containers, browser sandboxes) gets them from an "
            "AppArmor profile that allows userns, or for everyone with sysctl kernel.apparmor_restrict_unprivileged_userns=0",
        )  # fmt: skip
    if filtered:
        return Check(
            id="userns", title=title, status="ok", facts=data,
            summary=f"unprivileged (uid {u.as_uid}): usable, capabilities inside them included",
            meaning=f"{not_needed}; seccomp refuses agents CLONE_NEWUSER and unshare, so they cannot make one",
        )  # fmt: skip
    return Check(
        id="userns", title=title, status="warn", facts=data,
        summary=f"unprivileged (uid {u.as_uid}): usable, and agents have no seccomp filter here",
        meaning="an agent could create a user namespace, holding every capability inside it, and reach kernel code "
        "that only namespaces expose (netfilter, mounts)",
        fix="make seccomp work for agents (see the seccomp line), or if nothing on this host needs them: "
        "sysctl user.max_user_namespaces=0",
    )  # fmt: skip


_WORKDIR_FIXES: Final = {
    "not root": "run the kernel as root",
    "loop": "modprobe loop (and create /dev/loop-control)",
    "mkfs": "install e2fsprogs (mkfs.ext4)",
    "ext4": "a kernel with ext4 (CONFIG_EXT4_FS)",
}


def workdir_check(why_not: str) -> Check:
    title = "work dir bound"
    if not why_not:
        return Check(
            id="workdir", title=title, status="ok", facts={"bounded": True, "reason": None},
            summary="loop devices, ext4 and mkfs.ext4 available",
            meaning="each sandboxed agent's work dir is an ext4 image of workdir_bytes, mounted in its own mount namespace",
        )  # fmt: skip
    fix = next((f for key, f in _WORKDIR_FIXES.items() if key in why_not), None)
    return Check(
        id="workdir", title=title, status="warn", facts={"bounded": False, "reason": why_not},
        summary=f"work dirs cannot be bounded: {why_not}",
        meaning="agents' work dirs are plain directories: workdir_bytes is not enforced (isolation report: storage.workdir "
        "enforced false); /tmp and /dev/shm stay bounded tmpfs",
        fix=fix,
    )  # fmt: skip
