"""How an agent's sandbox limits are decided: request, else default, never above the ceiling,
never above the parent's; and what the isolation report adds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clove.config import AgentConfig, LimitsSection, load_config
from clove.errors import InvalidArguments, PermissionDenied
from clove.kernel.core.agents import Agent
from clove.kernel.supervision.limits import LimitedConfig, isolation_report, resolve, spawn_storage
from clove.policy import for_level

MiB = 1 << 20


def limits(tmp_path: Path, toml: str) -> LimitsSection:
    path = tmp_path / "kernel.toml"
    path.write_text(toml)
    return load_config(path).limits


def spec(name: str = "a", **kw: Any) -> AgentConfig:
    return AgentConfig(name=name, script="/x/a.py", **kw)


def test_nothing_asked_gets_the_defaults() -> None:
    r = resolve(spec(), LimitsSection())
    assert isinstance(r, LimitedConfig) and (r.memory_bytes, r.cpu_quota_us, r.pids) == (256 * MiB, 50_000, 64)
    assert (r.resolved.memory.source, r.resolved.memory.ceiling) == ("default", 4 << 30)
    assert (r.resolved.workdir.value, r.resolved.tmp.value, r.resolved.tmp_inodes.value) == (256 * MiB, 64 * MiB, 4096)
    assert r.resolved.workdir.ceiling is None
    assert resolve(r, LimitsSection()) is r  # resolving twice changes nothing
    assert (r.name, r.script, r.restart) == ("a", "/x/a.py", "never")


def test_a_request_is_kept_up_to_its_ceiling(tmp_path: Path) -> None:
    section = limits(tmp_path, '[limits]\nmax_memory_bytes = "1G"\nmax_pids = 100\n')
    r = resolve(spec(memory_bytes=1 << 30, pids=100, cpu_quota_us=200_000), section)
    assert (r.resolved.memory.source, r.resolved.pids.source, r.resolved.cpu.value) == ("request", "request", 200_000)
    with pytest.raises(InvalidArguments) as info:
        resolve(spec(pids=101), section)
    assert info.value.details == {"agent": "a", "limit": "pids", "requested": 101, "ceiling": 100, "ceiling_key": "max_pids"}
    assert info.value.message == "pids 101 is above its ceiling max_pids = 100 ([limits])"
    with pytest.raises(InvalidArguments):
        resolve(spec(cpu_quota_us=200_001), section)


def test_per_agent_tables_set_defaults_and_ceilings(tmp_path: Path) -> None:
    section = limits(tmp_path, '[limits]\ntmp_inodes = 100\n[limits.agents.big]\nmemory_bytes = "1G"\nmax_pids = 10\npids = 8\n')
    big = resolve(spec("big"), section)
    assert (big.memory_bytes, big.resolved.memory.source, big.resolved.pids.ceiling) == (1 << 30, "agent_default", 10)
    assert (big.resolved.cpu.source, big.resolved.tmp_inodes.value, big.resolved.tmp_inodes.source) == ("default", 100, "default")
    with pytest.raises(InvalidArguments, match=r"max_pids = 10 \(\[limits.agents.big\]\)"):
        resolve(spec("big", pids=11), section)
    assert resolve(spec("other", pids=11), section).pids == 11


def test_a_child_gets_at_most_its_parents() -> None:
    parent = resolve(spec("p", memory_bytes=128 * MiB, pids=200), LimitsSection())
    child = resolve(spec("c"), LimitsSection(), parent=parent)
    assert (child.memory_bytes, child.resolved.memory.source) == (128 * MiB, "parent")
    assert (child.pids, child.resolved.pids.source) == (64, "default")  # its own default is lower
    with pytest.raises(PermissionDenied) as info:
        resolve(spec("c", memory_bytes=256 * MiB), LimitsSection(), parent=parent)
    assert info.value.details == {"limit": "memory_bytes", "parent": 128 * MiB}


def test_storage_reaches_the_spawn_spec_and_the_report() -> None:
    r = resolve(spec(), LimitsSection())
    storage = spawn_storage(r, "/s/agents/1/work")
    assert (storage["tmp_bytes"], storage["tmp_inodes"]) == (64 * MiB, 4096)
    assert spawn_storage(spec(), "/s/agents/1/work") == {}  # never resolved: the SpawnSpec's defaults
    assert spawn_storage(resolve(spec(working_dir="/srv/a"), LimitsSection()), "/srv/a")["workdir_image"] is None
    loose = resolve(spec(sandboxed=False), LimitsSection())
    assert spawn_storage(loose, "/s/agents/1/work")["workdir_image"] is None

    agent = Agent(id=1, spec=loose, uid=None, permissions=for_level("standard", work_dir="/s/agents/1/work"))
    assert isolation_report(agent) == {}  # not started: nothing recorded yet
    agent.isolation = {"backend": "cgroup1", "limits": {"pids": {"requested": 64, "enforced": True, "via": "pids.max"}}}
    report = isolation_report(agent)
    assert report["limits"]["pids"] == {"requested": 64, "enforced": True, "via": "pids.max", "source": "default", "ceiling": 1024}
    assert {key: entry["enforced"] for key, entry in report["storage"].items()} == {"workdir": False, "tmp": False, "tmp_inodes": False}
    assert agent.isolation["limits"]["pids"] == {"requested": 64, "enforced": True, "via": "pids.max"}  # a copy, not a change
