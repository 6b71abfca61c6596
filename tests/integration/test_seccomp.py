"""The seccomp filter holds inside a real agent: no new namespaces through clone or clone3, only
the allowed socket families; fork, threads, subprocesses and Unix sockets still work."""

from __future__ import annotations

import platform
import socket

import pytest

from tests.conftest import agent_script, read_report, requires_root

pytestmark = [
    pytest.mark.integration,
    requires_root,
    pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"), reason="raw syscall numbers of x86_64 and aarch64"),
]


def refused(entry: dict, code: int) -> bool:
    return entry["ok"] is False and entry["errno"] == code


def test_no_namespaces_and_only_unix_sockets_without_network(kernel):
    with kernel.client() as c:
        r = c.spawn("escaper", agent_script("escape_probe.py"))
    assert r["isolation"]["seccomp"] is True
    report = read_report(kernel, "escaper")
    eperm, enosys = report["errnos"]["EPERM"], report["errnos"]["ENOSYS"]
    # A new user namespace would give the agent every capability inside it.
    assert refused(report["clone_newuser"], eperm), report["clone_newuser"]
    assert refused(report["clone_newuser_newns"], eperm), report["clone_newuser_newns"]
    assert refused(report["clone_newnet"], eperm), report["clone_newnet"]
    # clone3's flags are out of seccomp's sight: "not implemented", and glibc falls back to clone.
    assert refused(report["clone3"], enosys), report["clone3"]
    # What ordinary programs do is untouched.
    assert report["clone_plain"] == {"ok": True, "value": 0}
    assert report["fork"] == {"ok": True, "value": 7}
    assert report["thread"] == {"ok": True, "value": [0, 1, 2, 3]}
    assert report["subprocess"] == {"ok": True, "value": 0}
    assert report["unix"]["ok"] and report["socketpair"]["ok"]
    # Sockets: AF_UNIX only, an allowlist.
    for key in ("vsock", "vsock_high_bits", "packet", "inet", "inet6", "netlink_route", "netlink_audit", "socketpair_inet"):
        assert refused(report[key], eperm), (key, report[key])


def test_network_adds_ip_and_route_netlink_only(kernel):
    with kernel.client() as c:
        r = c.spawn("netescaper", agent_script("escape_probe.py"), args=["net"], network="full")
    assert r["isolation"]["seccomp"] is True and r["isolation"]["network"] == "full"
    report = read_report(kernel, "netescaper")
    eperm, enosys = report["errnos"]["EPERM"], report["errnos"]["ENOSYS"]
    assert refused(report["clone_newuser"], eperm) and refused(report["clone3"], enosys)
    assert report["thread"]["ok"] and report["subprocess"]["ok"] and report["fork"]["ok"]
    assert report["unix"]["ok"] and report["inet"]["ok"]
    assert report["inet6"]["ok"] or report["inet6"]["errno"] != eperm  # a host without IPv6 says EAFNOSUPPORT
    # NETLINK_ROUTE: what getaddrinfo (with AI_ADDRCONFIG) and if_nameindex use.
    assert report["netlink_route"]["ok"], report["netlink_route"]
    assert report["if_nameindex"]["ok"] and "lo" in report["if_nameindex"]["value"], report["if_nameindex"]
    if any(name != "lo" for _, name in socket.if_nameindex()):  # AI_ADDRCONFIG ignores loopback addresses
        assert report["getaddrinfo"]["ok"] and report["getaddrinfo"]["value"] >= 1, report["getaddrinfo"]
    for key in ("vsock", "vsock_high_bits", "packet", "netlink_audit"):
        assert refused(report[key], eperm), (key, report[key])
