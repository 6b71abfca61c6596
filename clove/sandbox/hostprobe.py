"""What this host's Linux kernel offers the sandbox beyond cgroups (``clove doctor``): Landlock,
seccomp, the namespaces an agent gets, and unprivileged user namespaces.

Each ``probe_*`` reads files under the roots it is given (a test builds a fake ``/proc`` and
``/sys``) and takes the result of its one live trial as an optional argument: ``None`` runs the
trial on this host (a Landlock syscall, libseccomp, an ``unshare`` in a forked child that exits
at once), a value stands in for it. Nothing a trial does outlives it.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from clove.sandbox import linux

__all__ = [
    "AGENT_NAMESPACES",
    "LandlockFacts",
    "NamespaceFacts",
    "SeccompFacts",
    "UsernsFacts",
    "probe_landlock",
    "probe_namespaces",
    "probe_seccomp",
    "probe_userns",
]

#: The namespaces a sandboxed agent gets (:func:`.confine.unshare_namespaces`): name -> (the
#: ``/proc/<pid>/ns`` entry, the clone flag).
AGENT_NAMESPACES: Final = {
    "mount": ("mnt", linux.CLONE_NEWNS),
    "uts": ("uts", linux.CLONE_NEWUTS),
    "ipc": ("ipc", linux.CLONE_NEWIPC),
    "pid": ("pid", linux.CLONE_NEWPID),
    "net": ("net", linux.CLONE_NEWNET),
}
_CLONE_NEWUSER: Final = 0x10000000
#: The unprivileged user the user-namespace trial runs as when the prober is root.
_NOBODY: Final = 65534


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return None if text is None else int(text.strip())
    except ValueError:
        return None


# ---- Landlock ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LandlockFacts:
    """:param abi: the Landlock ABI version (0: absent or disabled).
    :param lsm: the active security modules (``/sys/kernel/security/lsm``), ``None`` if unreadable."""

    abi: int
    lsm: tuple[str, ...] | None

    def features(self) -> dict[str, bool]:
        """What :func:`.landlock.restrict` can enforce at this ABI (the isolation report's keys)."""
        return {"fs": self.abi >= 1, "tcp": self.abi >= 4, "abstract_unix": self.abi >= 6, "signals": self.abi >= 6}

    def to_dict(self) -> dict[str, Any]:
        return {"abi": self.abi, "lsm": None if self.lsm is None else list(self.lsm), "enforces": self.features()}


def probe_landlock(*, sys: Path = Path("/sys"), abi: int | None = None) -> LandlockFacts:
    """:param abi: the ABI version, or ``None`` to ask this kernel (``landlock_create_ruleset``)."""
    if abi is None:
        from clove.sandbox.landlock import abi_version  # loads libc through ctypes

        abi = abi_version()
    lsm = _read(sys / "kernel" / "security" / "lsm")
    return LandlockFacts(abi=abi, lsm=None if lsm is None else tuple(x for x in lsm.strip().split(",") if x))


# ---- seccomp -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeccompFacts:
    """:param kernel: the kernel has seccomp (``Seccomp:`` in ``/proc/self/status``).
    :param actions: the filter actions it offers (``/proc/sys/kernel/seccomp/actions_avail``;
        empty: no filter mode).
    :param mode: the prober's own seccomp mode (0 none, 1 strict, 2 filter).
    :param library: ``""`` when libseccomp builds Clove's filters here, else why not."""

    kernel: bool
    actions: tuple[str, ...]
    mode: int | None
    library: str

    @property
    def filter_mode(self) -> bool:
        """Filters that answer an errno, which is how Clove refuses (``SECCOMP_RET_ERRNO``)."""
        return "errno" in self.actions

    def to_dict(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel, "filter": self.filter_mode, "actions": list(self.actions),
            "user_notif": "user_notif" in self.actions, "own_mode": self.mode,
            "libseccomp": not self.library, "library_error": self.library or None,
        }  # fmt: skip


def _library_error() -> str:
    try:
        import pyseccomp  # noqa: F401  (loads libseccomp.so)
    except (ImportError, OSError, RuntimeError) as err:
        return f"pyseccomp cannot load libseccomp: {err}"
    from clove.sandbox.seccomp import build_filters

    try:
        return "" if build_filters() is not None else "libseccomp could not build the filters"
    except Exception as err:  # a libseccomp too old for a rule: say so, the doctor carries on
        return f"libseccomp could not build the filters: {err}"


def probe_seccomp(*, proc: Path = Path("/proc"), library: str | None = None) -> SeccompFacts:
    """:param library: ``""`` (works) or why not, or ``None`` to build Clove's filters here."""
    status = _read(proc / "self" / "status") or ""
    mode = next((line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith("Seccomp:")), None)
    actions = _read(proc / "sys" / "kernel" / "seccomp" / "actions_avail") or ""
    return SeccompFacts(
        kernel=mode is not None,
        actions=tuple(actions.split()),
        mode=int(mode) if mode is not None and mode.isdigit() else None,
        library=_library_error() if library is None else library,
    )


# ---- namespaces --------------------------------------------------------------------------------


def _in_child(trial: Callable[[], list[int]], count: int) -> list[int]:
    """Run ``trial`` in a forked child (namespaces, uid changes stay there); its list of errnos,
    or ``count`` times the errno that stopped the child."""
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError as err:  # at the pids limit, say, the trial could not run: that is its answer
        os.close(read_end)
        os.close(write_end)
        return [err.errno or errno.EAGAIN] * count
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(trial()).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as f:
        chunks.append(f.read())
    os.waitpid(pid, 0)
    try:
        result = json.loads(b"".join(chunks))
    except ValueError:
        return [errno.ECHILD] * count
    return [int(x) for x in result] if isinstance(result, list) and len(result) == count else [errno.ECHILD] * count


def _unshare_errno(flags: int) -> int:
    try:
        linux.unshare(flags)
    except OSError as err:
        return err.errno or errno.EPERM
    return 0


def _try_agent_namespaces() -> dict[str, int]:
    """Create each agent namespace in a child, as the zygote would: name -> errno (0: made)."""
    names = list(AGENT_NAMESPACES)
    results = _in_child(lambda: [_unshare_errno(AGENT_NAMESPACES[n][1]) for n in names], len(names))
    return dict(zip(names, results, strict=True))


@dataclass(frozen=True, slots=True)
class NamespaceFacts:
    """:param present: namespace kinds this kernel has (``/proc/self/ns/<kind>``).
    :param created: agent namespace -> ``0`` when the prober could create it, else the errno.
    :param euid: the prober's effective uid (the kernel needs root for these and for per-agent uids)."""

    present: dict[str, bool]
    created: dict[str, int]
    euid: int

    def failed(self) -> dict[str, int]:
        return {name: code for name, code in self.created.items() if code}

    def to_dict(self) -> dict[str, Any]:
        return {
            "present": dict(self.present), "euid": self.euid,
            "created": {name: code == 0 for name, code in self.created.items()},
            "errors": {name: os.strerror(code) for name, code in self.failed().items()},
        }  # fmt: skip


def probe_namespaces(
    *, proc: Path = Path("/proc"), created: dict[str, int] | None = None, euid: int | None = None
) -> NamespaceFacts:
    """:param created: the trial's result (name -> errno), or ``None`` to try here in a child."""
    kinds = {name: entry for name, (entry, _flag) in AGENT_NAMESPACES.items()} | {"user": "user", "cgroup": "cgroup"}
    present = {name: (proc / "self" / "ns" / entry).exists() for name, entry in kinds.items()}
    return NamespaceFacts(
        present=present,
        created=_try_agent_namespaces() if created is None else dict(created),
        euid=os.geteuid() if euid is None else euid,
    )


# ---- unprivileged user namespaces --------------------------------------------------------------


def _try_userns() -> list[int]:
    """As an unprivileged user: create a user namespace, then use a capability inside it (a new
    mount namespace), which is what an AppArmor restriction takes away."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(_NOBODY, _NOBODY, _NOBODY)
        os.setresuid(_NOBODY, _NOBODY, _NOBODY)
    created = _unshare_errno(_CLONE_NEWUSER)
    return [created, _unshare_errno(linux.CLONE_NEWNS) if created == 0 else created]


@dataclass(frozen=True, slots=True)
class UsernsFacts:
    """:param apparmor_restrict: ``kernel.apparmor_restrict_unprivileged_userns`` (Ubuntu 23.10+).
    :param unprivileged_clone: ``kernel.unprivileged_userns_clone`` (Debian's switch).
    :param max_namespaces: ``user.max_user_namespaces``. ``None``: the sysctl does not exist.
    :param create: errno of ``unshare(CLONE_NEWUSER)`` as an unprivileged user (0: made).
    :param use: errno of using a capability inside it (0: works; an AppArmor restriction: EPERM)."""

    apparmor_restrict: int | None
    unprivileged_clone: int | None
    max_namespaces: int | None
    create: int
    use: int
    as_uid: int = field(default=_NOBODY)

    @property
    def usable(self) -> bool:
        return self.create == 0 and self.use == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "usable": self.usable, "create": self.create == 0, "capabilities_inside": self.use == 0,
            "create_error": os.strerror(self.create) if self.create else None,
            "use_error": os.strerror(self.use) if self.use else None, "as_uid": self.as_uid,
            "sysctl": {"kernel.apparmor_restrict_unprivileged_userns": self.apparmor_restrict,
                       "kernel.unprivileged_userns_clone": self.unprivileged_clone,
                       "user.max_user_namespaces": self.max_namespaces},
        }  # fmt: skip


def probe_userns(*, proc: Path = Path("/proc"), trial: tuple[int, int] | None = None) -> UsernsFacts:
    """:param trial: ``(create errno, use errno)``, or ``None`` to try here in a child."""
    if trial is None:
        create, use = _in_child(_try_userns, 2)
    else:
        create, use = trial
    sysctl = proc / "sys"
    return UsernsFacts(
        apparmor_restrict=_read_int(sysctl / "kernel" / "apparmor_restrict_unprivileged_userns"),
        unprivileged_clone=_read_int(sysctl / "kernel" / "unprivileged_userns_clone"),
        max_namespaces=_read_int(sysctl / "user" / "max_user_namespaces"),
        create=create,
        use=use,
        as_uid=_NOBODY if os.geteuid() == 0 else os.geteuid(),
    )
