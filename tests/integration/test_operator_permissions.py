"""An operator session lowering its own permissions on a real kernel: what it may do after, what
it may grant, and that it can never go above ``kernel.operator_level`` (or climb back). Agents'
own lowering is checked in test_events_permissions.py."""

from __future__ import annotations

import random

import pytest

from clove.errors import PermissionDenied
from clove.testing.kernel import KernelProcess
from tests.conftest import agent_script, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def test_an_operator_session_lowers_its_own_permissions_and_is_held_to_them(kernel):
    with kernel.client() as op, kernel.client() as other:
        session_id = op.hello()["session_id"]
        same = op.set_permissions(level="unrestricted")  # the configured level: a no-op
        assert same["success"] and same["level"] == "unrestricted" and same["session_id"] == session_id
        assert op.call("kernel.info")["pid"] == kernel.pid
        low = op.set_permissions(level="readonly")
        assert low["success"] and low["level"] == "readonly" and low["agent_id"] is None
        assert op.get_permissions()["level"] == "readonly"
        # Later calls above readonly are refused; what readonly allows still works.
        with pytest.raises(PermissionDenied, match="'admin' right"):
            op.call("kernel.info")
        assert op.store("op.k", 1)["code"] == "perm.denied"
        assert op.call("agent.list")["success"]
        assert op.set_permissions(level="readonly")["success"]  # the same level again: a no-op
        for higher in ("standard", "unrestricted"):
            refused = op.set_permissions(level=higher)
            assert refused["code"] == "perm.denied" and "readonly" in refused["error"]
        assert op.get_permissions()["level"] == "readonly"
        # Another session, and a new one, keep the configured level.
        assert other.get_permissions()["level"] == "unrestricted" and other.call("kernel.info")["success"] is not False
        with kernel.client() as fresh:
            assert fresh.get_permissions()["level"] == "unrestricted"
        # What a lowered session sets for an agent stays within what it has now.
        spawned = other.spawn("target", agent_script("healthy.py"))
        assert spawned["success"], spawned
        assert op.set_permissions(level="standard", agent_id=spawned["id"])["code"] == "perm.denied"
        assert op.set_permissions(level="minimal", agent_id=spawned["id"])["success"]
        assert other.set_permissions(level="standard", agent_id=spawned["id"])["success"]


def test_an_operator_cannot_rise_above_its_configured_level(kernel):
    with kernel.client() as op:  # unrestricted has a ceiling too: its grants
        refused = op.set_permissions(permissions={"max_children": 10**9})
        assert refused["code"] == "perm.denied" and "kernel.operator_level (unrestricted)" in refused["error"]
    # A kernel whose operators are configured lower (no spawning: the fixtures' kernels need admin).
    k = KernelProcess(f'[kernel]\noperator_level = "standard"\n[sandbox]\nuid_base = {random.randrange(300_000, 4_000_000, 1000)}\n')
    try:
        k.start()
        with k.client() as op:
            assert op.get_permissions()["level"] == "standard"
            refused = op.set_permissions(level="unrestricted")
            assert refused["code"] == "perm.denied" and "kernel.operator_level (standard)" in refused["error"]
            assert op.set_permissions(permissions={"http_domains": ["*"]})["code"] == "perm.denied"  # a grant above it
            assert op.set_permissions(level="standard")["success"]
            assert op.set_permissions(level="sandboxed")["success"] and op.get_permissions()["level"] == "sandboxed"
    finally:
        k.cleanup()

