"""Fixtures for tests that run inside the test guest: kernels started in a service cgroup of
their own, as systemd starts a unit with ``Delegate=yes``."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clove.testing.kernel import KernelProcess, poll_for
from tests.guest.support import CGROUP_ROOT, IN_GUEST, SLOW, remove_service

GUEST_CONFIG = """
[sandbox]
kill_grace = 5.0
start_timeout = 120.0
uid_base = {uid_base}
{sandbox}
[supervisor]
backoff_initial = 0.2
backoff_max = 2.0
stable_after = 5.0
"""

_services = itertools.count(1)


def new_service() -> Path:
    path = CGROUP_ROOT / f"clove-guest-{os.getpid()}-{next(_services)}.service"
    path.mkdir()
    return path


@pytest.fixture
def service_kernel() -> Iterator[Callable[..., KernelProcess]]:
    """Start kernels, each in a fresh service cgroup; at teardown stop each, require a clean
    exit and that it left nothing in its service cgroup, then remove the service cgroup."""
    if not IN_GUEST:
        pytest.skip("runs inside the test guest")
    made: list[tuple[KernelProcess, Path]] = []

    def make(extra: str = "", *, sandbox: str = "", service: Path | None = None) -> KernelProcess:
        service = service or new_service()
        uid_base = random.randrange(300_000, 4_000_000, 1000)
        config = GUEST_CONFIG.format(uid_base=uid_base, sandbox=sandbox) + extra
        k = KernelProcess(config, cgroup=service)
        made.append((k, service))
        return k.start(timeout=30 * SLOW)

    yield make
    problems = []
    for k, service in reversed(made):  # a later kernel may share an earlier one's service
        code = k.stop(timeout=6 * SLOW)
        if code not in (0, -9):  # -9: a test killed it on purpose
            problems.append(f"kernel exited {code}:\n{k.log()[-4000:]}")
        if code == 0:
            try:
                poll_for(lambda s=service: not [p for p in s.iterdir() if p.is_dir()], 5 * SLOW,
                         message=f"the kernel to remove its cgroups under {service}")
            except TimeoutError:
                problems.append(f"cgroups left behind: {sorted(p.name for p in service.iterdir() if p.is_dir())}")
        problems += remove_service(service)
        k.cleanup()
    assert not problems, "\n".join(problems)
