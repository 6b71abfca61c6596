"""Permission levels, grants, pattern matching and the within() ordering."""

from __future__ import annotations

import pytest

from clove.errors import InvalidArguments, PermissionDenied
from clove.policy import LEVELS, domain_matches, for_level, parse_grants, path_matches


@pytest.mark.parametrize(
    ("pattern", "path", "ok"),
    [
        ("/tmp/**", "/tmp", True),
        ("/tmp/**", "/tmp/a/b/c", True),
        ("/tmp/**", "/tmpfoo", False),
        ("/tmp/*.txt", "/tmp/a.txt", True),
        ("/tmp/*.txt", "/tmp/d/a.txt", False),
        ("/data/**/x", "/data/a/b/x", True),
        ("/**", "/etc/shadow", True),
        ("/etc/hostname", "/etc/hostname", True),
        ("/etc/hostname", "/etc/hostname2", False),
        ("/tmp/**", "/tmp/../etc/passwd", False),  # normalized before matching
    ],
)
def test_path_patterns(pattern: str, path: str, ok: bool) -> None:
    assert path_matches(pattern, path) is ok


def test_standard_agent_reads_and_writes_its_work_dir_and_tmp_only() -> None:
    p = for_level("standard", work_dir="/state/agents/3/work")
    p.check_read("/state/agents/3/work/notes.txt")
    p.check_write("/tmp/scratch")
    for path in ("/etc/passwd", "/state/agents/4/work/x", "/state/agents/3/agent.log"):
        with pytest.raises(PermissionDenied) as err:
            p.check_read(path)
        assert err.value.details == {"path": path, "access": "read"}
    p.check_exec("/bin/ls")
    with pytest.raises(PermissionDenied):
        p.check_http("http://example.com/", "GET")  # no domains until granted


def test_readonly_and_minimal_have_fewer_rights() -> None:
    ro = for_level("readonly", work_dir="/w")
    ro.check_read("/w/a")
    with pytest.raises(PermissionDenied):
        ro.check_write("/w/a")
    with pytest.raises(PermissionDenied, match="needs the 'exec' right"):
        ro.require("exec", "exec")
    assert for_level("minimal").rights == {"session", "ipc", "permissions.read"}


def test_levels_are_ordered_by_within() -> None:
    perms = [for_level(level, work_dir="/w") for level in LEVELS]
    for i, stronger in enumerate(perms):
        for weaker in perms[i:]:
            assert weaker.within(stronger), (weaker.level, stronger.level)
        for weaker in perms[i + 1 :]:
            assert not stronger.within(weaker), (stronger.level, weaker.level)


def test_work_patterns_compare_per_agent() -> None:
    assert for_level("standard", work_dir="/a").within(for_level("standard", work_dir="/b"))


def test_grants_narrow_and_widen() -> None:
    base = for_level("standard", work_dir="/w")
    wider = base.with_grants({"http_domains": ["*.example.com"], "http_methods": ["get", "head", "post"], "read_paths": ["/data/**"]})
    wider.check_http("https://api.example.com/v1", "POST")
    with pytest.raises(PermissionDenied):
        wider.check_http("https://example.org/", "GET")
    wider.check_read("/data/x/y")
    assert not wider.within(base) and base.within(wider)
    denied = base.with_grants({"exec_deny": ["rm", "/usr/bin/curl"]})
    with pytest.raises(PermissionDenied):
        denied.check_exec("/bin/rm")
    with pytest.raises(PermissionDenied):
        denied.check_exec("/usr/bin/curl")
    denied.check_exec("ls")
    assert denied.within(base) and not base.within(denied)


@pytest.mark.parametrize(
    "grants",
    [{"bogus": 1}, {"can_spawn": "yes"}, {"can_detach": 1}, {"max_children": -1}, {"read_paths": ["relative/x"]}, {"http_methods": ["FETCH"]}, {"exec_allow": "ls"}],
)
def test_bad_grants_are_refused(grants: dict) -> None:
    with pytest.raises(InvalidArguments):
        parse_grants(grants)


def test_unknown_level() -> None:
    with pytest.raises(InvalidArguments, match="unknown permission level"):
        for_level("god")


def test_spawn_grant_brings_child_management_rights() -> None:
    p = for_level("standard").with_grants({"can_spawn": True, "max_children": 2})
    p.require("agents.spawn", "agent.spawn")
    p.check_spawn(1)
    with pytest.raises(PermissionDenied, match="at most 2 children"):
        p.check_spawn(2)
    with pytest.raises(PermissionDenied):
        for_level("standard").require("agents.spawn", "agent.spawn")


def test_detaching_children_needs_its_own_grant() -> None:
    spawner = for_level("standard").with_grants({"can_spawn": True, "max_children": 2})
    with pytest.raises(PermissionDenied, match="detached") as refused:
        spawner.check_detach()
    assert refused.value.details == {"right": "can_detach"}
    detacher = spawner.with_grants({"can_detach": True})
    detacher.check_detach()
    for_level("unrestricted").check_detach()
    assert spawner.within(detacher) and not detacher.within(spawner)  # a child cannot get it from a parent without it
    assert detacher.to_wire()["can_detach"] is True


@pytest.mark.parametrize(
    ("pattern", "host", "ok"),
    [("example.com", "example.com", True), ("example.com", "api.example.com", False), ("*.example.com", "api.example.com", True), ("*.example.com", "example.com", False), ("*", "x.y", True), ("*", "", False)],
)
def test_domains(pattern: str, host: str, ok: bool) -> None:
    assert domain_matches(pattern, host) is ok
