"""Per-agent resource limits, and the truthful report of how each one is enforced.

A :class:`Limits` says what the kernel *wants* for one agent. Whatever backend applies it (a cgroup
v2 or v1 hierarchy, or the rlimit fallback) answers with one :class:`LimitReport` per resource
(``"memory"``, ``"cpu"``, ``"pids"``) saying whether the operating system really enforces it, and
through which file or mechanism. Nothing is silently degraded: a limit that cannot be enforced is
reported with ``enforced=False`` and the reason in ``via``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from clove.errors import SandboxError

__all__ = [
    "MAX_CPU_PERIOD_US",
    "MIN_CPU_PERIOD_US",
    "MIN_CPU_QUOTA_US",
    "NOT_REQUESTED",
    "LimitReport",
    "Limits",
]

log = logging.getLogger(__name__)

#: The kernel refuses CFS periods outside [1 ms, 1 s] (``cpu.cfs_period_us`` and ``cpu.max``).
MIN_CPU_PERIOD_US = 1_000
MAX_CPU_PERIOD_US = 1_000_000
#: The kernel refuses a CFS quota below 1 ms.
MIN_CPU_QUOTA_US = 1_000
#: ``LimitReport.via`` for a resource with no limit requested.
NOT_REQUESTED = "not requested"


def _check_positive(field: str, value: int | None, *, minimum: int = 1) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise SandboxError(
            f"limit {field} must be an int, got {type(value).__name__} {value!r}",
            details={"field": field},
        )
    if value < minimum:
        raise SandboxError(
            f"limit {field} must be >= {minimum}, got {value}",
            details={"field": field, "minimum": minimum, "value": value},
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The resource limits requested for one agent; ``None`` means "no limit".

    :param memory_bytes: memory the agent's processes may use, in bytes.
    :param cpu_quota_us: CPU time allowed per ``cpu_period_us``, in microseconds. ``20_000`` with the
        default period is 20 % of one core; values above the period allow more than one core.
    :param cpu_period_us: the CFS accounting period, 1 ms to 1 s.
    :param pids: the maximum number of tasks (processes *and* threads on cgroups).
    :raises SandboxError: a value has the wrong type or is out of range.
    """

    memory_bytes: int | None = None
    cpu_quota_us: int | None = None
    cpu_period_us: int = 100_000
    pids: int | None = None

    def __post_init__(self) -> None:
        _check_positive("memory_bytes", self.memory_bytes)
        _check_positive("cpu_quota_us", self.cpu_quota_us, minimum=MIN_CPU_QUOTA_US)
        _check_positive("cpu_period_us", self.cpu_period_us, minimum=MIN_CPU_PERIOD_US)
        if self.cpu_period_us > MAX_CPU_PERIOD_US:
            raise SandboxError(
                f"limit cpu_period_us must be <= {MAX_CPU_PERIOD_US}, got {self.cpu_period_us}",
                details={"field": "cpu_period_us", "maximum": MAX_CPU_PERIOD_US},
            )
        _check_positive("pids", self.pids)

    def is_empty(self) -> bool:
        """True when no limit at all is requested."""
        return self.memory_bytes is None and self.cpu_quota_us is None and self.pids is None

    @property
    def cpu_percent(self) -> float | None:
        """The CPU limit as a percentage of one core, or ``None`` when there is none."""
        if self.cpu_quota_us is None:
            return None
        return 100.0 * self.cpu_quota_us / self.cpu_period_us

    @classmethod
    def from_percent(
        cls,
        percent: float,
        *,
        memory_bytes: int | None = None,
        pids: int | None = None,
        cpu_period_us: int = 100_000,
    ) -> Limits:
        """Build limits from a CPU percentage of one core (``20`` is 20 %, ``150`` is 1.5 cores).

        The quota is ``round(cpu_period_us * percent / 100)`` microseconds.

        :param percent: share of one core, > 0.
        :param memory_bytes: as for :class:`Limits`.
        :param pids: as for :class:`Limits`.
        :param cpu_period_us: as for :class:`Limits`.
        :raises SandboxError: the percentage is not a positive number, or it yields a quota
            below the kernel's 1 ms minimum for this period.
        """
        if (
            isinstance(percent, bool)
            or not isinstance(percent, (int, float))
            or not math.isfinite(percent)
            or percent <= 0
        ):
            raise SandboxError(
                f"cpu percent must be a number > 0, got {percent!r}", details={"field": "cpu_percent"}
            )
        _check_positive("cpu_period_us", cpu_period_us, minimum=MIN_CPU_PERIOD_US)
        quota = round(cpu_period_us * float(percent) / 100.0)
        if quota < MIN_CPU_QUOTA_US:
            raise SandboxError(
                f"cpu percent {percent} of a {cpu_period_us} us period is a quota of {quota} us, "
                f"below the kernel minimum of {MIN_CPU_QUOTA_US} us",
                details={"field": "cpu_percent", "quota_us": quota, "minimum": MIN_CPU_QUOTA_US},
            )
        return cls(memory_bytes=memory_bytes, cpu_quota_us=quota, cpu_period_us=cpu_period_us, pids=pids)


@dataclass(frozen=True, slots=True)
class LimitReport:
    """How one resource limit is (or is not) enforced.

    :param requested: the requested value (bytes, quota in µs, task count), or ``None`` when no
        limit was requested.
    :param enforced: True only when the operating system really enforces ``requested``.
    :param via: the file or mechanism that enforces it (``"memory.max"``, ``"RLIMIT_AS (...)"``),
        or why it is not enforced (``"no cpu controller"``, ``"not requested"``).
    """

    requested: int | None
    enforced: bool
    via: str

    def to_dict(self) -> dict[str, object]:
        """A JSON-safe map with the keys ``requested``, ``enforced`` and ``via``."""
        return {"requested": self.requested, "enforced": self.enforced, "via": self.via}
