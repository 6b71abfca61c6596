"""fs.read and fs.write through the SDK on a real kernel: each caller's own view of the
filesystem, escapes refused and journaled, Unix permissions kept, ownership, binary content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from clove.testing.kernel import poll_for
from tests.conftest import agent_script, read_report, requires_root

pytestmark = [pytest.mark.integration, requires_root]


def run_ops(kernel, name: str, ops: list, **spawn) -> tuple[dict, list[dict]]:
    """Spawn the ops agent with these calls; return the spawn reply and its report."""
    with kernel.client() as op:
        r = op.call(
            "agent.spawn", name=name, script=agent_script("fs_ops.py"), args=[json.dumps(ops)], **spawn
        )
    return r, read_report(kernel, name, timeout=30)


def values(report: list[dict]) -> list:
    return [item["value"] if item["ok"] else item for item in report]


def test_agent_reads_and_writes_its_work_dir_and_private_tmp(kernel):
    tmp_name = f"/tmp/clove-fs-{uuid.uuid4().hex}.txt"
    r, report = run_ops(
        kernel,
        "scribe",
        [
            ["write", {"path": "notes.txt", "content": "line 1\n"}],
            ["write", {"path": "notes.txt", "content": "line 2\n", "mode": "append"}],
            ["read", {"path": "notes.txt"}],
            ["write_file", {"path": tmp_name, "content": "through the kernel"}],
            ["read_local", {"path": tmp_name}],
            ["owner_local", {"path": tmp_name}],
            ["read_file", {"path": f"{tmp_name}"}],
        ],
    )
    wrote, appended, text, tmp_write, local, owner, tmp_read = values(report)
    # The work dir is the agent's size-bounded filesystem, mounted in its own mount namespace:
    # the host sees it through the agent's root.
    work = f"/proc/{r['pid']}/root{kernel.state_dir}/agents/{r['id']}/work"
    assert (wrote, appended, text) == (7, 7, "line 1\nline 2\n")
    assert os.stat(f"{work}/notes.txt").st_uid == r["isolation"]["uid"]
    assert tmp_write == {"success": True, "bytes_written": 18, "path": tmp_name}
    assert local == {"bytes_hex": b"through the kernel".hex()} and owner == r["isolation"]["uid"]
    assert tmp_read["content"] == "through the kernel" and tmp_read["encoding"] == "utf-8"
    assert not os.path.exists(tmp_name)  # it went to the agent's private /tmp, not the host's


def test_escapes_are_refused_journaled_and_announced(kernel):
    with kernel.client() as op:
        op.subscribe(["SYSCALL_BLOCKED"])
        r, report = run_ops(
            kernel,
            "sneaky",
            [
                ["symlink", {"src": "/etc/passwd", "dst": "passwd-link"}],
                ["read_file", {"path": "passwd-link"}],
                ["symlink", {"src": "../../../../../../../../etc", "dst": "up"}],
                ["read_file", {"path": "up/passwd"}],
                ["read_file", {"path": "/tmp/../etc/passwd"}],
                ["read_file", {"path": "../../../../../../etc/hostname"}],
                ["symlink", {"src": "/etc/passwd", "dst": "/tmp/decoy"}],
                ["write_file", {"path": "/tmp/decoy", "content": "root::0:0::/:/bin/sh\n"}],
            ],
        )
        _, link, _, up, dots, relative, _, decoy = values(report)
        for refused in (link, up, dots):
            assert refused["code"] == "perm.denied" and refused["details"]["path"] == "/etc/passwd"
        assert relative["code"] == "perm.denied" and relative["details"]["path"] == "/etc/hostname"
        assert decoy["code"] == "perm.denied" and decoy["details"] == {
            "path": "/etc/passwd",
            "access": "write",
        }
        events = []
        poll_for(
            lambda: events.extend(op.poll_events(max_events=100)["events"]) or len(events) >= 5,
            message="five SYSCALL_BLOCKED events",
        )
        assert {e["data"]["syscall"] for e in events} == {"fs.read", "fs.write"}
        assert all(e["source_agent_id"] == r["id"] for e in events)
        security = op.get_audit_log(category="SECURITY", agent_id=r["id"], limit=100)["entries"]
        assert sum(e["event_type"] == "fs.read" and e["decision"] == "denied" for e in security) == 4
        assert any(e["event_type"] == "fs.write" and e["decision"] == "denied" for e in security)


def test_unix_permissions_hold_even_where_a_grant_matches(kernel):
    grants = {
        "read_paths": ["/etc/**", "{work}/**", "/tmp/**"],
        "write_paths": ["/etc/**", "{work}/**", "/tmp/**"],
    }
    _, report = run_ops(
        kernel,
        "granted",
        [
            ["read_file", {"path": "/etc/shadow"}],
            ["read_file", {"path": "/etc/hostname"}],
            ["write_file", {"path": "/etc/clove-fs-escape", "content": "x"}],
        ],
        permissions=grants,
    )
    shadow, hostname, escape = values(report)
    assert shadow["code"] == "perm.denied" and "permission denied" in shadow["error"]
    assert hostname["success"] and hostname["content"] == open("/etc/hostname").read()
    assert escape["code"] == "perm.denied" and not os.path.exists("/etc/clove-fs-escape")


def test_binary_content_round_trips(kernel):
    blob = bytes(range(256)) * 4
    _, report = run_ops(
        kernel,
        "binary",
        [
            ["write_file", {"path": "blob.bin", "content": {"bytes_hex": blob.hex()}}],
            ["read_file", {"path": "blob.bin"}],
            ["read_bytes", {"path": "blob.bin"}],
            ["read", {"path": "blob.bin"}],
            ["write", {"path": "text.txt", "content": "żółw ✓"}],
            ["read_bytes", {"path": "text.txt"}],
        ],
    )
    wrote, raw, as_bytes, as_text, _, text_bytes = values(report)
    assert wrote["bytes_written"] == len(blob)
    assert raw["encoding"] == "base64" and raw["size"] == len(blob)
    assert as_bytes == {"bytes_hex": blob.hex()}
    assert not as_text["ok"] and as_text["error"].startswith("UnicodeDecodeError")
    assert text_bytes == {"bytes_hex": "żółw ✓".encode().hex()}


def test_clear_errors(kernel, tmp_path):
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(17 << 20)
    with kernel.client() as op:
        assert op.read_file(str(tmp_path / "missing"))["code"] == "notfound"
        assert op.read_file(str(tmp_path))["code"] == "proto.invalid_args"
        assert op.write_file(str(tmp_path / "no" / "dir.txt"), "x")["code"] == "notfound"
        assert op.write_file(str(tmp_path), "x")["code"] == "proto.invalid_args"
        assert op.write_file(str(tmp_path / "f"), "x", mode="insert")["code"] == "proto.invalid_args"
        assert op.read_file(str(big))["code"] == "quota.exceeded"
        assert op.read_file("/dev/zero")["code"] == "proto.invalid_args"
        assert op.read_file("bad\x00path")["code"] == "proto.invalid_args"
    _, report = run_ops(kernel, "limited", [["read_file", {"path": "x"}]], level="minimal")
    assert report[0]["value"]["code"] == "perm.denied"


def test_a_file_that_cannot_be_read_is_the_callers_error_not_the_kernels(kernel):
    with kernel.client() as op:
        unreadable = op.read_file("/proc/self/mem")  # /proc/self is the kernel, to the kernel
    assert unreadable["code"] == "proto.invalid_args"
    assert "/proc/self/mem" in unreadable["error"] and f"/proc/{kernel.pid}/" not in unreadable["error"]
    assert unreadable["details"]["path"] == "/proc/self/mem"


OPERATOR_CLIENT = """
import os
from clove_sdk import CloveClient  # before dropping root: the interpreter may live under /root
os.setgroups([]); os.setgid({uid}); os.setuid({uid})
os.chdir({where!r})
with CloveClient({socket!r}, timeout=10) as c:
    print(c.write_file("mine.txt", "by the operator")["path"])
    print(c.read_file({secret!r})["code"])
"""


def test_operator_files_belong_to_the_operator(kernel):
    uid = 4_242_000
    where = kernel.dir / "operator-home"
    where.mkdir(mode=0o777)
    os.chmod(where, 0o777)
    secret = kernel.dir / "secret.txt"
    secret.write_text("root only")
    os.chmod(secret, 0o600)
    os.chmod(kernel.socket, 0o666)  # let a second, unprivileged operator in
    script = OPERATOR_CLIENT.format(uid=uid, where=str(where), socket=kernel.socket, secret=str(secret))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.split() == [str(where / "mine.txt"), "perm.denied"]
    st = os.stat(where / "mine.txt")
    assert (st.st_uid, st.st_gid) == (uid, uid)
    assert (where / "mine.txt").read_text() == "by the operator"
    with kernel.client() as op:  # root's own session writes as root
        op.write(str(where / "root.txt"), "x")
    assert os.stat(where / "root.txt").st_uid == 0
