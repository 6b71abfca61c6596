"""clove doctor's cgroup lines and isolation verdict, on fake /proc and /sys trees (FakeHost):
cgroup v1, v2 delegated, v2 not delegated, v2 shared with other processes, hybrid."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from clove.cli.doctor.host import HostRoots, Trials
from clove.cli.doctor.run import diagnose
from clove.cli.doctor.schema import EXIT_NOT_HONOURED, EXIT_OK, Report
from clove.config import KernelConfig, SandboxSection
from clove.errors import SandboxError
from clove.sandbox.dryrun import DryRunCgroupFS
from clove.sandbox.hostprobe import AGENT_NAMESPACES
from clove.testing.fakehost import FakeHost

STRICT = KernelConfig(sandbox=SandboxSection(require_isolation=True))
ME = os.getpid()


def trials(**over: object) -> Trials:
    """Every live trial answered as on a capable host, unless overridden."""
    base: dict[str, object] = {
        "landlock_abi": 7, "seccomp_library": "", "namespaces": dict.fromkeys(AGENT_NAMESPACES, 0),
        "userns": (0, 0), "can_family": 0, "workdir": "", "euid": 0,
    }  # fmt: skip
    return Trials(**(base | over))  # type: ignore[arg-type]


def run(host: FakeHost, config: KernelConfig | None = None, **over: object) -> Report:
    roots = HostRoots(proc=host.proc, sys=host.sys, dev=host.dev)
    return diagnose(config or KernelConfig(), state_dir=str(host.root / "state"), roots=roots, trials=trials(**over))


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def status(report: Report, check_id: str) -> str:
    check = report.check(check_id)
    assert check is not None, f"no {check_id} line"
    return check.status


def v1_host(tmp_path: Path) -> FakeHost:
    host = FakeHost(tmp_path)
    host.cgroup_v1(["memory"], own="system.slice/clove.service")
    host.cgroup_v1(["cpu", "cpuacct"], own="system.slice/clove.service")
    host.cgroup_v1(["pids"], own="system.slice/clove.service")
    host.cgroup_v1(["freezer"])
    return host


def test_v1_host_uses_the_cgroup1_backend_and_honours_require_isolation(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    before = tree(tmp_path)
    report = run(host, STRICT)
    version = report.check("cgroup.version")
    backend = report.check("cgroup.backend")
    assert version is not None and backend is not None
    assert version.facts["mode"] == "v1" and version.status == "warn"
    assert version.fix is not None and "systemd.unified_cgroup_hierarchy=1" in version.fix
    assert report.check("cgroup.v2") is None
    assert status(report, "cgroup.v1") == "ok"
    assert backend.status == "ok" and backend.facts["name"] == "cgroup1"
    assert backend.facts["controllers"] == ["cpu", "memory", "pids"]
    planned = [c[1] for c in backend.facts["changes"]]
    assert str(host.cgroup_root / "memory/system.slice/clove.service" / f"clove-{ME}") in planned
    assert report.isolation.honoured and report.exit_status == EXIT_OK
    assert all(r["enforced"] for r in report.isolation.limits.values())
    assert tree(tmp_path) == before  # a dry run: nothing made, nothing written


def test_v1_without_pids_is_a_warning_and_fails_require_isolation(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.cgroup_v1(["memory"], own="user.slice")
    host.cgroup_v1(["cpu", "cpuacct"], own="user.slice")
    report = run(host, STRICT)
    v1 = report.check("cgroup.v1")
    assert v1 is not None and v1.status == "warn" and "pids" in v1.meaning and v1.fix is not None
    # auto needs memory, cpu and pids on v1: it falls back to rlimits (no CPU quota there)
    assert status(report, "cgroup.backend") == "missing"
    assert report.isolation.backend == "rlimit" and not report.isolation.honoured
    assert report.exit_status == EXIT_NOT_HONOURED
    assert any("cpu" in r for r in report.isolation.reasons)


def test_v1_not_writable_names_root_as_the_fix(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    report = run(host, STRICT, writable=lambda p: errno.EACCES if host.cgroup_root in p.parents else 0)
    v1 = report.check("cgroup.v1")
    assert v1 is not None and v1.status == "missing" and v1.fix is not None and "root" in v1.fix
    assert v1.facts["memory"]["writable"] is False and "Permission denied" in v1.facts["memory"]["write_error"]
    assert report.isolation.backend == "rlimit" and report.exit_status == EXIT_NOT_HONOURED


def test_v2_delegated_cgroup_moves_the_kernel_into_a_leaf_on_paper(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    own = host.cgroup_v2(own="system.slice/clove.service", controllers=("memory", "cpu", "pids"))
    before = tree(tmp_path)
    report = run(host, STRICT)
    v2 = report.check("cgroup.v2")
    backend = report.check("cgroup.backend")
    assert v2 is not None and backend is not None
    assert status(report, "cgroup.version") == "ok" and report.check("cgroup.v1") is None
    assert v2.status == "ok" and v2.facts["delegated"] == ["memory", "cpu", "pids"] and v2.facts["processes"] == 1
    assert "leaf" in v2.meaning
    assert backend.facts["name"] == "cgroup2" and backend.status == "ok"
    changes = [tuple(c) for c in backend.facts["changes"]]
    leaf = own / f"clove-{ME}-kernel"
    assert ("mkdir", str(leaf)) in changes
    assert ("write", str(leaf / "cgroup.procs"), str(ME)) in changes
    assert ("write", str(own / "cgroup.subtree_control"), "+memory +cpu +pids") in changes
    assert report.isolation.honoured and report.exit_status == EXIT_OK
    assert tree(tmp_path) == before


def test_v2_not_delegated_says_delegate_yes_and_fails_require_isolation(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.cgroup_v2(own="user.slice/user-1000.slice/session-2.scope", controllers=())
    report = run(host, STRICT)
    v2 = report.check("cgroup.v2")
    assert v2 is not None and v2.status == "missing"
    assert v2.fix is not None and "Delegate=yes" in v2.fix
    assert v2.facts["delegated"] == [] and v2.facts["usable"] is False
    assert report.isolation.backend == "rlimit" and report.exit_status == EXIT_NOT_HONOURED
    assert status(report, "cgroup.backend") == "missing"


def test_v2_read_only_cgroup_is_missing(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.cgroup_v2(own="system.slice/clove.service", controllers=("memory", "cpu", "pids"))
    report = run(host, STRICT, writable=lambda p: errno.EROFS if host.cgroup_root in (p, *p.parents) else 0)
    v2 = report.check("cgroup.v2")
    assert v2 is not None and v2.status == "missing" and "Read-only file system" in v2.facts["write_error"]
    assert report.isolation.backend == "rlimit" and report.exit_status == EXIT_NOT_HONOURED


def test_v2_partly_delegated_is_a_warning(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.cgroup_v2(own="system.slice/clove.service", controllers=("memory", "pids"))
    report = run(host, KernelConfig(sandbox=SandboxSection(backend="cgroup2", require_isolation=True)))
    assert status(report, "cgroup.v2") == "warn"
    backend = report.check("cgroup.backend")
    assert backend is not None and backend.status == "warn" and backend.facts["controllers"] == ["memory", "pids"]
    assert report.isolation.limits["cpu"]["enforced"] is False and report.exit_status == EXIT_NOT_HONOURED


def test_v2_shared_with_other_processes_hits_the_no_internal_processes_rule(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.cgroup_v2(own="user.slice/session-2.scope", controllers=("memory", "cpu", "pids"), pids=[ME, 4242])
    report = run(host, STRICT)
    v2 = report.check("cgroup.v2")
    assert v2 is not None and v2.status == "missing"
    assert v2.facts["other_pids"] == [4242] and "no-internal-processes" in v2.meaning
    assert v2.fix is not None and "cgroup of its own" in v2.fix
    assert report.isolation.backend == "rlimit" and report.exit_status == EXIT_NOT_HONOURED


def test_v2_root_cgroup_needs_no_leaf(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.cgroup_v2(controllers=("memory", "cpu", "pids"), pids=[1, ME])
    report = run(host)
    v2 = report.check("cgroup.v2")
    assert v2 is not None and v2.status == "ok" and v2.facts["is_root"] is True
    assert report.isolation.backend == "cgroup2"


def test_hybrid_host_takes_v1_and_says_why_not_v2(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    host.cgroup_v2(controllers=("hugetlb",), pids=[1, ME], unified=True)
    report = run(host, STRICT)
    version = report.check("cgroup.version")
    backend = report.check("cgroup.backend")
    assert version is not None and backend is not None
    assert version.facts["mode"] == "hybrid" and "unified" in version.summary and version.status == "warn"
    assert version.facts["v2"]["controllers"] == ["hugetlb"] and version.facts["v2"]["usable"] is False
    assert report.check("cgroup.v2") is None and status(report, "cgroup.v1") == "ok"
    assert backend.facts["name"] == "cgroup1" and "lacks memory, cpu, pids" in backend.facts["reasons"]["cgroup2"]
    assert report.exit_status == EXIT_OK


def test_no_cgroups_at_all(tmp_path: Path) -> None:
    report = run(FakeHost(tmp_path), STRICT)
    assert status(report, "cgroup.version") == "missing"
    assert report.isolation.backend == "rlimit" and report.exit_status == EXIT_NOT_HONOURED


def test_an_unavailable_explicit_backend_stops_the_kernel(tmp_path: Path) -> None:
    report = run(v1_host(tmp_path), KernelConfig(sandbox=SandboxSection(backend="cgroup2")))
    backend = report.check("cgroup.backend")
    assert backend is not None and backend.status == "missing" and "refuses to start" in backend.meaning
    assert report.isolation.backend == "none" and not report.isolation.honoured
    assert report.exit_status == EXIT_OK  # not required: reported, not failed


def test_unsandboxed_config_agent_fails_require_isolation(tmp_path: Path) -> None:
    from clove.config import AgentConfig

    config = KernelConfig(sandbox=SandboxSection(require_isolation=True), agents=(AgentConfig(name="tool", script="/x.py", sandboxed=False),))
    report = run(v1_host(tmp_path), config)
    assert report.exit_status == EXIT_NOT_HONOURED
    assert any("[agents.tool]" in r for r in report.isolation.reasons)
    assert report.isolation.agents["tool"]["sandboxed"] is False


def test_not_root_fails_require_isolation_on_namespaces(tmp_path: Path) -> None:
    report = run(v1_host(tmp_path), STRICT, euid=1000, namespaces=dict.fromkeys(AGENT_NAMESPACES, errno.EPERM))
    assert status(report, "namespaces") == "missing"
    assert report.exit_status == EXIT_NOT_HONOURED and any("not root" in r for r in report.isolation.reasons)


# ---- the dry-run filesystem under it -------------------------------------------------------------


def test_dry_run_refuses_like_the_kernel_and_changes_nothing(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    (cg / "a").mkdir(parents=True)
    (cg / "cgroup.procs").write_text("")
    (cg / "a" / "cgroup.procs").write_text(f"{ME}\n")
    (cg / "a" / "cgroup.subtree_control").write_text("")
    fs = DryRunCgroupFS(lambda p: errno.EROFS if p.name == "ro" else 0)
    fs.mkdir(cg / "a" / "leaf")
    assert fs.exists(cg / "a" / "leaf" / "cgroup.procs") and fs.read_text(cg / "a" / "leaf" / "cgroup.procs") == ""
    assert "leaf" in fs.listdir(cg / "a")
    with pytest.raises(FileExistsError):
        fs.mkdir(cg / "a" / "leaf")
    with pytest.raises(OSError, match="No such file") as missing:
        fs.mkdir(cg / "nope" / "x")
    assert missing.value.errno == errno.ENOENT
    with pytest.raises(OSError, match="busy") as busy:  # this process is still in a: no controllers for its children
        fs.write_text(cg / "a" / "cgroup.subtree_control", "+memory")
    assert busy.value.errno == errno.EBUSY
    fs.write_text(cg / "a" / "leaf" / "cgroup.procs", str(ME))  # moved out, on paper
    fs.write_text(cg / "a" / "cgroup.subtree_control", "+memory")
    fs.rmdir(cg / "a" / "leaf")
    assert not fs.exists(cg / "a" / "leaf")
    (cg / "ro").mkdir()
    with pytest.raises(OSError, match="Read-only") as ro:
        fs.mkdir(cg / "ro" / "x")
    assert ro.value.errno == errno.EROFS
    assert sorted(p.name for p in cg.rglob("*")) == ["a", "cgroup.procs", "cgroup.procs", "cgroup.subtree_control", "ro"]
    assert (cg / "a" / "cgroup.subtree_control").read_text() == ""
    assert [c[0] for c in fs.changes] == ["mkdir", "write", "write", "rmdir"]


def test_dry_run_errors_are_sandbox_errors_through_the_backends(tmp_path: Path) -> None:
    from clove.sandbox.backends import detect_backend

    host = FakeHost(tmp_path)
    host.cgroup_v2(own="s/clove.service", controllers=("memory", "cpu", "pids"), pids=[ME, 77])
    with pytest.raises(SandboxError, match="holds other processes"):
        detect_backend("cgroup2", kernel_tag="clove-1", cgroup_root=host.cgroup_root,
                       proc_self_cgroup=host.proc / "self/cgroup", fs=DryRunCgroupFS())  # fmt: skip
