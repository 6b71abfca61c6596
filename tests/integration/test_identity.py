"""Identity comes from the channel the kernel made, never from what a message says."""

from __future__ import annotations

import os
import socket

import pytest

from tests.conftest import agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def _agent_socket(kernel, agent_id: int) -> str:
    return str(kernel.state_dir / "agents" / str(agent_id) / "ipc" / "kernel.sock")


def test_forged_ids_in_body_or_envelope_change_nothing(kernel):
    with kernel.client() as c:
        victim = c.spawn("victim", agent_script("healthy.py"))
        forger = c.spawn("forger", agent_script("forger.py"))
    report = read_report(kernel, "forger")
    assert report["hello"]["agent_id"] == forger["id"] != victim["id"]
    assert report["body_agent_id"]["code"] == "proto.invalid_args"
    assert report["body_name"]["code"] == "proto.invalid_args"
    assert report["envelope_agent_id"] == {"ok": False, "code": "proto.malformed"}
    assert report["kill_victim"] == "perm.denied"
    with kernel.client() as c:
        assert any(a["name"] == "victim" and a["state"] == "running" for a in c.list_agents())
        denied = [e for e in c.get_audit_log(category="SECURITY", agent_id=forger["id"], limit=100)["entries"]]
        assert {e["code"] for e in denied} >= {"proto.invalid_args", "proto.malformed", "perm.denied"}
        assert all(e["agent_id"] == forger["id"] and e["decision"] == "denied" for e in denied)


def test_other_uids_cannot_reach_an_agents_channel(kernel):
    with kernel.client() as c:
        victim = c.spawn("victim", agent_script("healthy.py"))
    path = _agent_socket(kernel, victim["id"])
    assert os.path.exists(path)
    # Another user (here: nobody, or another agent's uid) is refused by the filesystem itself.
    for uid in (65534, victim["isolation"]["uid"] + 1):
        assert _connect_as(uid, path) == "DENIED"
    # The control socket refuses them too: operators are the socket owner's group.
    assert _connect_as(65534, kernel.socket) == "DENIED"
    assert _connect_as(0, path) == "CONNECTED"  # the check itself can tell the two apart


def _connect_as(uid: int, path: str) -> str:
    """Try a Unix connect to ``path`` from a forked child running as ``uid``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                os.write(w, b"CONNECTED")
            except PermissionError:
                os.write(w, b"DENIED")
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        return f.read()


def test_connections_on_the_control_socket_are_operators(kernel):
    with kernel.client() as c:
        hello = c.hello()
    assert hello["role"] == "operator" and hello["agent_id"] is None


def test_agent_sockets_are_private_to_each_agent(kernel):
    with kernel.client() as c:
        a = c.spawn("a", agent_script("healthy.py"))
        b = c.spawn("b", agent_script("healthy.py"))
    for agent in (a, b):
        ipc = os.stat(os.path.dirname(_agent_socket(kernel, agent["id"])))
        assert (ipc.st_uid, ipc.st_gid, ipc.st_mode & 0o777) == (0, agent["isolation"]["uid"], 0o750)
    home = os.stat(kernel.state_dir / "agents" / str(a["id"]))
    assert home.st_mode & 0o777 == 0o700
