"""Egress policy without a proxy: rule grammar and matching, address classes, request heads,
and the config's ``network``/``egress``/``[egress]`` keys."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from clove.config import load_config
from clove.config.egress import parse_cidr, parse_rule, parse_rules
from clove.egress.httphead import REFUSAL_HEADER, BadRequest, parse_head, refusal
from clove.egress.rules import Policy, Rule, address_class, normalize_host
from clove.errors import ConfigError

ip = ipaddress.ip_address


# ---- rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("API.Example.com:443", "api.example.com:443"),
        ("*.pypi.org", "*.pypi.org"),
        ("files.pythonhosted.org:443", "files.pythonhosted.org:443"),
        ("198.51.100.7:8080", "198.51.100.7:8080"),
        ("[2001:DB8::1]:8443", "[2001:db8::1]:8443"),
        ("2001:db8::1", "[2001:db8::1]"),
    ],
)
def test_rules_are_read_into_one_canonical_form(text: str, canonical: str) -> None:
    assert parse_rule(text) == canonical
    assert str(Rule.parse(canonical)) == canonical


@pytest.mark.parametrize("bad", ["", "a b", "host:0", "host:99999", "host:x", "*.", "-bad.com", "[::1", "a..b", 42, "*.*.x"])
def test_bad_rules_are_refused_with_a_reason(bad: object) -> None:
    with pytest.raises(ValueError, match=r".+"):
        parse_rule(bad)


def test_rule_lists_are_bounded_and_deduplicated() -> None:
    assert parse_rules(["a.com", "A.com", "b.com:80"]) == ("a.com", "b.com:80")
    with pytest.raises(ValueError, match="at most"):
        parse_rules([f"h{i}.com" for i in range(300)])
    with pytest.raises(ValueError, match="array"):
        parse_rules("a.com")


def test_matching_ports_wildcards_and_exact_hosts() -> None:
    policy = Policy(["api.example.com:443", "*.pypi.org", "plain.test", "198.51.100.7:8080"])
    assert policy.admits("api.example.com", 443)
    assert not policy.admits("api.example.com", 80)  # its own port only
    assert not policy.admits("evil-api.example.com", 443)
    assert policy.admits("files.pypi.org", 443) and policy.admits("a.b.pypi.org", 80)
    assert not policy.admits("pypi.org", 443)  # *. is subdomains only
    assert not policy.admits("notpypi.org", 443)
    assert not policy.admits("files.pypi.org", 8443)  # default ports: 80 and 443
    assert policy.admits("plain.test", 80) and policy.admits("plain.test", 443)
    assert policy.admits("198.51.100.7", 8080) and not policy.admits("198.51.100.8", 8080)
    assert policy.describe() == "api.example.com:443, *.pypi.org, plain.test, 198.51.100.7:8080"
    assert Policy([]).describe() == "none" and not Policy([]).admits("a.com", 443)


def test_hosts_are_normalized_before_matching() -> None:
    assert normalize_host("API.Example.COM.") == "api.example.com"
    assert normalize_host("[2001:DB8:0::1]") == "2001:db8::1"
    assert normalize_host("::ffff:127.0.0.1") == "::ffff:7f00:1"


# ---- addresses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata address
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "private"),  # carrier-grade NAT
        ("198.51.100.2", "private"),  # documentation
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 address
        ("fd00::1", "private"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
    ],
)
def test_address_classes(address: str, why: str | None) -> None:
    assert address_class(ip(address)) == why


def test_private_ranges_admit_only_what_they_cover() -> None:
    policy = Policy(["x.test"], ["198.51.100.0/24", "fd00::/8"])
    assert policy.address_allowed(ip("198.51.100.9")) is None
    assert policy.address_allowed(ip("::ffff:198.51.100.9")) is None
    assert policy.address_allowed(ip("fd00::5")) is None
    assert policy.address_allowed(ip("127.0.0.1")) == "loopback"
    assert policy.address_allowed(ip("10.0.0.1")) == "private"
    assert policy.address_allowed(ip("1.1.1.1")) is None


def test_cidrs() -> None:
    assert parse_cidr("10.1.2.3/16") == "10.1.0.0/16"
    assert parse_cidr("192.0.2.5") == "192.0.2.5/32"
    for bad in ("10.0.0.0/33", "nope", 5):
        with pytest.raises(ValueError, match=r".+"):
            parse_cidr(bad)


# ---- request heads -------------------------------------------------------------------------------


def test_connect_head() -> None:
    head = parse_head(b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n")
    assert (head.method, head.host, head.port, head.tunnel, head.forward) == ("CONNECT", "api.example.com", 443, True, b"")
    assert parse_head(b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n").host == "2001:db8::1"


def test_absolute_form_is_rewritten_to_origin_form_without_keep_alive() -> None:
    raw = (
        b"POST http://svc.test:8080/a/b?q=1 HTTP/1.1\r\nHost: svc.test:8080\r\nProxy-Connection: keep-alive\r\n"
        b"Proxy-Authorization: Basic eDp5\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nContent-Length: 2\r\n\r\n"
    )
    head = parse_head(raw)
    assert (head.host, head.port, head.tunnel) == ("svc.test", 8080, False)
    lines = head.forward.decode().split("\r\n")
    assert lines[0] == "POST /a/b?q=1 HTTP/1.1"
    assert "Host: svc.test:8080" in lines and "Content-Length: 2" in lines and "Connection: close" in lines
    assert not any(line.lower().startswith(("proxy-", "x-secret", "connection: keep")) for line in lines)
    assert head.forward.endswith(b"\r\n\r\n")
    added = parse_head(b"GET http://svc.test/ HTTP/1.0\r\n\r\n")
    assert added.port == 80 and b"Host: svc.test\r\n" in added.forward
    fronted = parse_head(b"GET http://svc.test/ HTTP/1.1\r\nHost: other.example\r\n\r\n")
    assert b"other.example" not in fronted.forward and b"Host: svc.test\r\n" in fronted.forward


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /relative HTTP/1.1\r\n\r\n",  # not a proxy request
        b"GET https://svc.test/ HTTP/1.1\r\n\r\n",  # https goes through CONNECT
        b"CONNECT svc.test HTTP/1.1\r\n\r\n",  # no port
        b"CONNECT svc.test:99999 HTTP/1.1\r\n\r\n",
        b"GET http://user:pw@svc.test/ HTTP/1.1\r\n\r\n",
        b"get http://svc.test/ HTTP/1.1\r\n\r\n",
        b"GET http://svc.test/ SPDY/3\r\n\r\n",
        b"GET http://svc.test/ HTTP/1.1\r\nno colon\r\n\r\n",
        b"CONNECT ::1:443 HTTP/1.1\r\n\r\n",
    ],
)
def test_bad_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_head(raw)


def test_refusal_is_readable_text_with_the_code() -> None:
    answer = refusal(403, "not_allowed", 'clove egress: x.org:443 is not in the allowed domains of agent "a" (allowed: none)')
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 403 Forbidden")
    assert f"{REFUSAL_HEADER}: not_allowed".encode() in head and b"Connection: close" in head
    assert body == b'clove egress: x.org:443 is not in the allowed domains of agent "a" (allowed: none)\n'
    assert f"Content-Length: {len(body)}".encode() in head


# ---- config --------------------------------------------------------------------------------------


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "kernel.toml"
    path.write_text(text)
    return load_config(path)


def test_config_network_and_egress(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        """
[egress]
resolve = {"svc.test" = "198.51.100.2"}
connections = 4
bytes_budget = "1M"
[agents.a]
script = "a.py"
network = true
egress = ["API.example.com:443", "*.pypi.org"]
egress_private = ["10.0.0.0/8"]
[agents.b]
script = "b.py"
network = "full"
[agents.c]
script = "c.py"
""",
    )
    a, b, c = config.agents  # type: ignore[attr-defined]
    assert (a.network, a.network_full, a.egress, a.egress_private) == (True, False, ("api.example.com:443", "*.pypi.org"), ("10.0.0.0/8",))
    assert (b.network, b.network_full) == (True, True)
    assert (c.network, c.network_full, c.egress) == (False, False, ())
    egress = config.egress  # type: ignore[attr-defined]
    assert egress.resolve == {"svc.test": "198.51.100.2"}
    assert (egress.limits.connections, egress.limits.bytes_budget, egress.limits.connect_rate) == (4, 1 << 20, 10.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[agents.a]\nscript = "a.py"\nnetwork = "half"', r'\[agents.a\].network: expected true, false or "full"'),
        ('[agents.a]\nscript = "a.py"\nnetwork = 1', r"\[agents.a\].network: expected bool, got int 1"),
        ('[agents.a]\nscript = "a.py"\nnetwork = true\negress = ["a b"]', r"\[agents.a\].egress: 'a b': not a host name"),
        ('[agents.a]\nscript = "a.py"\nnetwork = true\negress = "a.com"', r"\[agents.a\].egress: expected an array"),
        ('[agents.a]\nscript = "a.py"\nnetwork = true\negress_private = ["10.0.0.0/40"]', r"\[agents.a\].egress_private: '10.0.0.0/40'"),
        ('[egress]\nresolve = {"svc.test" = "nope"}', r"\[egress\].resolve: "),
        ('[agents.a]\nscript = "a.py"\negress = ["a.com"]', r"\[agents.a\].egress: applies to network = true only .* network = false"),
        ('[agents.a]\nscript = "a.py"\nnetwork = "full"\negress_private = ["10.0.0.0/8"]', r'\[agents.a\].egress_private: applies to network = true only .* network = "full"'),
        ('[egress]\nresolve = {"*.svc.test" = "10.0.0.1"}', r"\[egress\].resolve: .*plain host name"),
        ("[egress]\nconnections = 0", r"\[egress\].connections: must be positive"),
        ("[egress]\nheader_bytes = 10", r"\[egress\].header_bytes: must be between"),
        ("[egress]\nbogus = 1", r"\[egress\].bogus: unknown key"),
        ("[egress]\nheartbeat_timeout = 1", r"\[egress\].heartbeat_timeout: must be at least 2 s"),
        ('[egress]\nbytes_burst = "1K"', r"\[egress\].bytes_burst: must be at least 64K"),
    ],
)
def test_config_errors_name_file_table_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"kernel.toml: " + message):
        _load(tmp_path, text)
