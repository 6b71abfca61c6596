"""Limits / LimitReport, and the rlimit fallback's values and truthful report."""

from __future__ import annotations

import logging
import math
import resource

import pytest

from clove.errors import SandboxError
from clove.sandbox.limits import LimitReport, Limits
from clove.sandbox.rlimits import rlimits_for

# -- Limits ----------------------------------------------------------------------------------


def test_defaults_are_empty() -> None:
    limits = Limits()
    assert limits.is_empty()
    assert limits.cpu_period_us == 100_000
    assert limits.cpu_percent is None
    assert not Limits(pids=1).is_empty()


@pytest.mark.parametrize(
    ("percent", "period", "quota"),
    [
        (20, 100_000, 20_000),
        (20.0, 100_000, 20_000),
        (150, 50_000, 75_000),
        (1, 100_000, 1_000),
        (33.3333, 100_000, 33_333),
    ],
)
def test_from_percent(percent: float, period: int, quota: int) -> None:
    limits = Limits.from_percent(percent, cpu_period_us=period, memory_bytes=1 << 26, pids=8)
    assert (limits.cpu_quota_us, limits.cpu_period_us) == (quota, period)
    assert (limits.memory_bytes, limits.pids) == (1 << 26, 8)
    assert limits.cpu_percent == pytest.approx(percent, abs=0.01)


@pytest.mark.parametrize("percent", [0, -5, math.nan, math.inf, True, 0.5])
def test_from_percent_rejects(percent: float) -> None:
    with pytest.raises(SandboxError, match="cpu percent"):
        Limits.from_percent(percent)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"memory_bytes": 0},
        {"memory_bytes": -1},
        {"memory_bytes": True},
        {"memory_bytes": 1.5},
        {"cpu_quota_us": 999},
        {"cpu_period_us": 999},
        {"cpu_period_us": 1_000_001},
        {"pids": 0},
        {"pids": "16"},
    ],
)
def test_invalid_limits(kwargs: dict[str, object]) -> None:
    with pytest.raises(SandboxError) as info:
        Limits(**kwargs)  # type: ignore[arg-type]
    assert info.value.details["field"] == next(iter(kwargs))


def test_limits_are_frozen_and_keyword_only() -> None:
    limits = Limits(pids=3)
    with pytest.raises(AttributeError):
        limits.pids = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        Limits(1)  # type: ignore[call-arg]


def test_limit_report_to_dict() -> None:
    assert LimitReport(5, True, "pids.max").to_dict() == {"requested": 5, "enforced": True, "via": "pids.max"}


# -- rlimits_for -----------------------------------------------------------------------------


def test_memory_becomes_rlimit_as() -> None:
    applied, report = rlimits_for(Limits(memory_bytes=512 << 20), runs_as_root=False)
    assert applied == [(resource.RLIMIT_AS, 512 << 20, 512 << 20)]
    assert report["memory"] == LimitReport(512 << 20, True, "RLIMIT_AS (address space, not RSS)")


def test_small_address_space_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="clove.sandbox.rlimits"):
        rlimits_for(Limits(memory_bytes=64 << 20), runs_as_root=False)
    assert "libzmq" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="clove.sandbox.rlimits"):
        rlimits_for(Limits(memory_bytes=1 << 30), runs_as_root=False)
    assert caplog.text == ""


def test_cpu_is_reported_not_enforced_and_no_rlimit_cpu() -> None:
    applied, report = rlimits_for(Limits.from_percent(20), runs_as_root=False)
    assert applied == []
    assert not any(res == resource.RLIMIT_CPU for res, _, _ in applied)
    assert report["cpu"].requested == 20_000
    assert report["cpu"].enforced is False
    assert "RLIMIT_CPU kills" in report["cpu"].via


def test_pids_become_rlimit_nproc_for_non_root() -> None:
    applied, report = rlimits_for(Limits(pids=16), runs_as_root=False)
    assert applied == [(resource.RLIMIT_NPROC, 16, 16)]
    assert report["pids"] == LimitReport(16, True, "RLIMIT_NPROC (processes per uid)")


def test_pids_not_enforced_for_root() -> None:
    applied, report = rlimits_for(Limits(pids=16), runs_as_root=True)
    assert applied == []
    assert report["pids"].enforced is False
    assert "ignored for root" in report["pids"].via


def test_memory_for_root_is_set_but_not_reported_enforced() -> None:
    applied, report = rlimits_for(Limits(memory_bytes=512 << 20), runs_as_root=True)
    assert applied == [(resource.RLIMIT_AS, 512 << 20, 512 << 20)]
    assert report["memory"].enforced is False and "root can raise it" in report["memory"].via


def test_empty_limits() -> None:
    applied, report = rlimits_for(Limits(), runs_as_root=False)
    assert applied == []
    assert set(report) == {"memory", "cpu", "pids"}
    assert all(r == LimitReport(None, False, "not requested") for r in report.values())


def test_all_limits_together() -> None:
    limits = Limits(memory_bytes=1 << 30, cpu_quota_us=50_000, pids=32)
    applied, report = rlimits_for(limits, runs_as_root=False)
    assert applied == [(resource.RLIMIT_AS, 1 << 30, 1 << 30), (resource.RLIMIT_NPROC, 32, 32)]
    assert [report[k].enforced for k in ("memory", "cpu", "pids")] == [True, False, True]
    assert all(isinstance(v, int) for triple in applied for v in triple)
