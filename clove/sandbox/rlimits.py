"""The rlimit fallback: what ``setrlimit`` can enforce when no cgroup backend is usable.

It is weak, and the report says so:

* memory becomes ``RLIMIT_AS``, a cap on *address space*, not on resident memory. Interpreters and
  libzmq reserve far more address space than they touch (libzmq aborts below roughly 64 MB), so the
  value must be generous; the report states the mechanism so nobody mistakes it for an RSS limit.
  An agent that runs as root (unsandboxed) can raise it again (``CAP_SYS_RESOURCE``): it is
  still set, as a guard against accidents, but reported as not enforced.
* CPU is **not** enforced. ``RLIMIT_CPU`` is a budget of CPU seconds that kills the process when
  spent; it cannot throttle to a share of a core.
* pids become ``RLIMIT_NPROC``, which counts processes *per uid*. Clove gives each agent its own
  uid, so this works, except for root, for whom the kernel ignores it.

:func:`rlimits_for` only computes; the child applies the triples with :func:`resource.setrlimit`
after forking and before exec.
"""

from __future__ import annotations

import logging
import resource

from clove.sandbox.limits import NOT_REQUESTED, LimitReport, Limits

__all__ = ["RLIMIT_AS_WARN_BYTES", "rlimits_for"]

log = logging.getLogger(__name__)

#: Below this address-space cap the interpreter plus libzmq are likely to fail to start.
RLIMIT_AS_WARN_BYTES = 256 * 1024 * 1024

_VIA_AS = "RLIMIT_AS (address space, not RSS)"
_VIA_AS_ROOT = "not enforced: RLIMIT_AS is set, but root can raise it (CAP_SYS_RESOURCE)"
_VIA_NO_CPU = "not enforced: RLIMIT_CPU kills after a CPU-seconds budget instead of throttling"
_VIA_NPROC = "RLIMIT_NPROC (processes per uid)"
_VIA_NPROC_ROOT = "not enforced: RLIMIT_NPROC is ignored for root"


def rlimits_for(
    limits: Limits, *, runs_as_root: bool
) -> tuple[list[tuple[int, int, int]], dict[str, LimitReport]]:
    """The rlimits that approximate ``limits``, and a truthful report of what they enforce.

    :param limits: the requested limits.
    :param runs_as_root: whether the agent process will run with uid 0 (then ``RLIMIT_NPROC``
        does not apply).
    :returns: ``(rlimits, report)``: ``rlimits`` is a list of ``(resource, soft, hard)`` for
        :func:`resource.setrlimit` in the child; ``report`` has exactly the keys ``"memory"``,
        ``"cpu"`` and ``"pids"``.
    :raises: nothing; an unenforceable limit is reported, not raised.
    """
    applied: list[tuple[int, int, int]] = []
    report: dict[str, LimitReport] = {}

    if limits.memory_bytes is None:
        report["memory"] = LimitReport(None, False, NOT_REQUESTED)
    else:
        applied.append((resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes))
        report["memory"] = LimitReport(limits.memory_bytes, not runs_as_root, _VIA_AS_ROOT if runs_as_root else _VIA_AS)
        if limits.memory_bytes < RLIMIT_AS_WARN_BYTES:
            log.warning(
                "RLIMIT_AS of %d MiB caps address space, not RSS; the interpreter and libzmq may "
                "fail to start below about %d MiB",
                limits.memory_bytes // (1024 * 1024),
                RLIMIT_AS_WARN_BYTES // (1024 * 1024),
            )

    if limits.cpu_quota_us is None:
        report["cpu"] = LimitReport(None, False, NOT_REQUESTED)
    else:
        report["cpu"] = LimitReport(limits.cpu_quota_us, False, _VIA_NO_CPU)

    if limits.pids is None:
        report["pids"] = LimitReport(None, False, NOT_REQUESTED)
    elif runs_as_root:
        report["pids"] = LimitReport(limits.pids, False, _VIA_NPROC_ROOT)
    else:
        applied.append((resource.RLIMIT_NPROC, limits.pids, limits.pids))
        report["pids"] = LimitReport(limits.pids, True, _VIA_NPROC)

    return applied, report
