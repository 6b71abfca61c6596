"""``{work}`` patterns: matched as the work dir plus the pattern's rest, so the kernel's compiled
pattern caches do not grow with every agent spawned (docs/kernel-memory.md, "Under churn")."""

from __future__ import annotations

import re

import pytest

from clove.errors import PermissionDenied
from clove.policy import WORK, _glob_regex, _glob_tail_regex, for_level, path_matches

WORK_DIR = "/state/agents/17/work"
TAILS = ("/**", "", "/*.txt", "/logs/**", "/a/**/z", "/?", "x/**", "/data")
PATHS = (
    WORK_DIR,
    f"{WORK_DIR}/",
    f"{WORK_DIR}/a.txt",
    f"{WORK_DIR}/d/a.txt",
    f"{WORK_DIR}/logs",
    f"{WORK_DIR}/logs/x/y",
    f"{WORK_DIR}/a/b/c/z",
    f"{WORK_DIR}/q",
    f"{WORK_DIR}x/1",
    f"{WORK_DIR}/data",
    f"{WORK_DIR}/../18/work/a.txt",
    "/state/agents/17/workfoo",
    "/state/agents/18/work/a.txt",
    "/etc/passwd",
    "/",
)


def substituted(pattern: str, work_dir: str, path: str) -> bool:
    """The rule as it reads: put the work dir in, then match the whole pattern."""
    return path_matches(pattern.replace(WORK, work_dir.rstrip("/") or "/"), path)


@pytest.mark.parametrize("tail", TAILS)
def test_work_patterns_match_exactly_as_the_substituted_pattern(tail: str) -> None:
    perms = for_level("minimal", work_dir=WORK_DIR).with_grants({"write_paths": [f"{WORK}{tail}"]})
    for path in PATHS:
        expected = substituted(f"{WORK}{tail}", WORK_DIR, path)
        try:
            perms.check_write(path)
            allowed = True
        except PermissionDenied:
            allowed = False
        assert allowed is expected, (tail, path)


def test_a_work_dir_with_glob_characters_is_matched_by_substitution() -> None:
    """Not a kernel-made work dir, but the rule still holds: its characters act as globs."""
    perms = for_level("standard", work_dir="/w/a*")
    perms.check_write("/w/abc/file")
    with pytest.raises(PermissionDenied):
        perms.check_write("/w/b/file")


def test_checking_many_agents_adds_nothing_to_the_pattern_caches() -> None:
    """Before: each agent's work dir made a new compiled regex in the process-wide caches."""
    for_level("standard", work_dir="/state/agents/0/work").check_write("/state/agents/0/work/f")  # warm
    regexes, tails, compiled = _glob_regex.cache_info().currsize, _glob_tail_regex.cache_info().currsize, len(re._cache)  # type: ignore[attr-defined]
    for agent_id in range(1, 300):
        perms = for_level("standard", work_dir=f"/state/agents/{agent_id}/work")
        perms.check_write(f"/state/agents/{agent_id}/work/notes.txt")
        perms.check_read("/tmp/shared.txt")
        with pytest.raises(PermissionDenied):
            perms.check_read(f"/state/agents/{agent_id + 1}/work/notes.txt")
    assert _glob_regex.cache_info().currsize == regexes
    assert _glob_tail_regex.cache_info().currsize == tails
    assert len(re._cache) == compiled  # type: ignore[attr-defined]
