"""The doctor's report: one :class:`Check` per line, the isolation verdict, and their JSON.

The JSON (``clove doctor --json``) is a stable interface, documented in docs/doctor.md: fields
are only ever added, and :data:`SCHEMA_VERSION` changes if one is renamed, removed or changes
meaning. Check ids (:data:`CHECK_IDS`, plus ``device.<name>`` per configured device) are stable
too; a check that does not apply to a host (``cgroup.v2`` on a v1 host) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["CHECK_IDS", "EXIT_BAD_CONFIG", "EXIT_NOT_HONOURED", "EXIT_OK", "SCHEMA_VERSION", "STATUSES", "Check", "Isolation", "Report"]

SCHEMA_VERSION: Final = 1
#: ``ok``: works as Clove needs it; ``warn``: works, with a gap the line names; ``missing``: absent
#: or unusable, and what depends on it does not happen.
STATUSES: Final = ("ok", "warn", "missing")
CHECK_IDS: Final = (
    "cgroup.version", "cgroup.v2", "cgroup.v1", "cgroup.backend", "namespaces", "landlock", "seccomp",
    "userns", "workdir", "disk", "socketcan", "gpio",
)  # fmt: skip
EXIT_OK: Final = 0
#: ``[sandbox].require_isolation`` is on and this host cannot honour it.
EXIT_NOT_HONOURED: Final = 1
#: The config could not be loaded (the message names the file and key), as for ``clove kernel``.
EXIT_BAD_CONFIG: Final = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One line of the report.

    :param id: stable identifier (:data:`CHECK_IDS` or ``device.<name>``).
    :param title: a short label for people.
    :param status: one of :data:`STATUSES`.
    :param summary: what was found, in one sentence.
    :param meaning: what that means for Clove on this host.
    :param fix: what to do about a ``warn`` or ``missing`` line, when something can be done.
    :param facts: the measured values behind the line (documented per check in docs/doctor.md).
    """

    id: str
    title: str
    status: str
    summary: str
    meaning: str
    fix: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check {self.id}: status {self.status!r} is not one of {STATUSES}")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": self.status, "summary": self.summary,
                "meaning": self.meaning, "fix": self.fix, "facts": self.facts}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Isolation:
    """Whether ``[sandbox].require_isolation`` holds here: every spawn's memory, CPU and PIDs
    limits enforced, every configured agent sandboxed, and agents' namespaces creatable.

    :param required: the config's ``require_isolation``.
    :param honoured: whether it would hold (computed whether or not it is required).
    :param backend: ``cgroup2``, ``cgroup1`` or ``rlimit``, as the kernel would pick it (``none``:
        the kernel would not start with the config's ``[sandbox].backend``).
    :param limits: a spawn with the ``[limits]`` defaults: key -> ``{requested, enforced, via}``.
    :param agents: each ``[agents.NAME]``: ``{sandboxed, limits}`` or ``{refused}``.
    :param reasons: why it would not hold, one sentence each.
    """

    required: bool
    honoured: bool
    backend: str
    limits: dict[str, dict[str, object]]
    agents: dict[str, dict[str, Any]]
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"required": self.required, "honoured": self.honoured, "backend": self.backend,
                "limits": self.limits, "agents": self.agents, "reasons": list(self.reasons)}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Everything ``clove doctor`` says about a host, for one config.

    :param host: ``{hostname, kernel, machine, euid}``.
    :param config: the config file read (``None``: the defaults).
    :param state_dir: the state dir judged (``--state-dir``, else the config's).
    """

    host: dict[str, Any]
    config: str | None
    state_dir: str
    checks: tuple[Check, ...]
    isolation: Isolation

    @property
    def exit_status(self) -> int:
        return EXIT_NOT_HONOURED if self.isolation.required and not self.isolation.honoured else EXIT_OK

    def check(self, check_id: str) -> Check | None:
        return next((c for c in self.checks if c.id == check_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION, "host": self.host, "config": self.config, "state_dir": self.state_dir,
            "checks": [c.to_dict() for c in self.checks], "isolation": self.isolation.to_dict(),
            "exit_status": self.exit_status,
        }  # fmt: skip
