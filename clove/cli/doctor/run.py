"""``diagnose``: the whole report for a config on this host (or on the roots given), the one entry
point ``clove doctor`` and the host and guest tests share."""

from __future__ import annotations

from clove.cli.doctor.cgroup_checks import cgroup_checks
from clove.cli.doctor.host import HostRoots, Trials, gather, host_identity
from clove.cli.doctor.host_checks import can_check, device_checks, disk_check, gpio_check
from clove.cli.doctor.isolation import isolation_verdict
from clove.cli.doctor.sandbox_checks import (
    landlock_check,
    namespaces_check,
    seccomp_check,
    userns_check,
    workdir_check,
)
from clove.cli.doctor.schema import Report
from clove.config import KernelConfig

__all__ = ["diagnose"]


def diagnose(
    config: KernelConfig, *, state_dir: str | None = None, roots: HostRoots | None = None, trials: Trials | None = None
) -> Report:
    """Probe, judge and decide: nothing on the host is changed.

    :param config: the kernel config to judge the host against (``KernelConfig()``: the defaults).
    :param state_dir: overrides ``config.kernel.state_dir``, as ``--state-dir`` does for the kernel.
    :param roots: where ``/proc``, ``/sys`` and ``/dev`` are (default: the real ones).
    :param trials: stand-ins for the live trials (default: run them here).
    """
    state = state_dir or config.kernel.state_dir
    facts = gather(config, state, roots, trials)
    sandbox = config.sandbox
    checks = [
        *cgroup_checks(facts.cgroups),
        namespaces_check(facts.namespaces),
        landlock_check(facts.landlock, sandbox),
        seccomp_check(facts.seccomp, sandbox),
        userns_check(facts.userns, facts.seccomp, sandbox),
        workdir_check(facts.workdir),
        disk_check(facts.disk, config),
        can_check(facts.can),
        gpio_check(facts.gpio),
        *device_checks(config, facts.can, facts.gpio),
    ]
    return Report(
        host=host_identity(facts.euid),
        config=config.source,
        state_dir=state,
        checks=tuple(checks),
        isolation=isolation_verdict(config, facts),
    )
