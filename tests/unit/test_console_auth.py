"""The console's auth rules as pure logic: sessions (bounded, expiring), bearer tokens,
read-only refusals, CSRF, and the Host and Origin checks."""

from __future__ import annotations

import pytest

from clove.cli.console import auth
from clove.cli.console.tokens import Role, Tokens

TOKENS = Tokens(operator="o" * 43, readonly="r" * 43, path="/nowhere")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bearer_tokens_name_their_role_and_anything_else_is_401() -> None:
    sessions = auth.Sessions()
    assert auth.authenticate(TOKENS, sessions, f"Bearer {'o' * 43}", None).role is Role.OPERATOR
    assert auth.authenticate(TOKENS, sessions, f"bearer {'r' * 43}", None).role is Role.READONLY
    for header in (f"Basic {'o' * 43}", "Bearer " + "o" * 42, "Bearer", "Bearer ôô"):
        with pytest.raises(auth.Refused) as err:
            auth.authenticate(TOKENS, sessions, header, None)
        assert err.value.status == 401 and err.value.code == "auth.invalid"
    with pytest.raises(auth.Refused) as missing:
        auth.authenticate(TOKENS, sessions, None, "no-such-session")
    assert missing.value.status == 401 and missing.value.code == "auth.required"


def test_sessions_are_bounded_lru_and_expire_when_idle() -> None:
    clock = Clock()
    sessions = auth.Sessions(limit=3, idle=60, clock=clock)
    first, second, third = (sessions.open(Role.OPERATOR) for _ in range(3))
    assert sessions.get(first.id) is first  # used: now the most recent
    fourth = sessions.open(Role.READONLY)  # the least recently used (second) goes
    assert len(sessions) == 3 and sessions.get(second.id) is None
    assert sessions.get(third.id) is third and sessions.get(fourth.id) is fourth
    for _ in range(1000):  # a login flood never grows the table
        sessions.open(Role.READONLY)
    assert len(sessions) == 3
    clock.now += 61
    assert all(sessions.get(s.id) is None for s in (first, third, fourth))
    last = sessions.open(Role.OPERATOR)
    sessions.close(last.id)
    assert sessions.get(last.id) is None
    assert sessions.get(None) is None and sessions.get("") is None


def test_actions_need_the_operator_role_and_a_session_needs_its_csrf_token() -> None:
    sessions = auth.Sessions()
    op = sessions.open(Role.OPERATOR)
    ro = sessions.open(Role.READONLY)
    auth.check_action(auth.Who(Role.OPERATOR, op), op.csrf)
    auth.check_action(auth.Who(Role.OPERATOR, None), None)  # a bearer token carries no ambient credential
    for who, csrf, code in (
        (auth.Who(Role.OPERATOR, op), None, "csrf.invalid"),
        (auth.Who(Role.OPERATOR, op), "", "csrf.invalid"),
        (auth.Who(Role.OPERATOR, op), ro.csrf, "csrf.invalid"),  # another session's token
        (auth.Who(Role.OPERATOR, op), op.csrf + "x", "csrf.invalid"),
        (auth.Who(Role.READONLY, ro), ro.csrf, "auth.readonly"),
        (auth.Who(Role.READONLY, None), None, "auth.readonly"),
    ):
        with pytest.raises(auth.Refused) as err:
            auth.check_action(who, csrf)
        assert (err.value.status, err.value.code) == (403, code)


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:9000", "[::1]:8080", "127.0.0.2", "LOCALHOST:1"])
def test_loopback_hosts_are_served_on_any_port(host: str) -> None:
    auth.check_host(host, frozenset())


@pytest.mark.parametrize("host", [None, "", "evil.example", "evil.example:8080", "127.0.0.1.evil.example", "10.0.0.5:8080", "[fe80::1]:8080"])
def test_other_hosts_are_refused_unless_allowed(host: str | None) -> None:
    with pytest.raises(auth.Refused) as err:
        auth.check_host(host, frozenset())
    assert (err.value.status, err.value.code) == (403, "host.refused")
    auth.check_host("10.0.0.5:8080", frozenset({"10.0.0.5"}))


def test_a_post_origin_must_be_the_console_itself() -> None:
    auth.check_origin("http://127.0.0.1:8080", "127.0.0.1:8080")
    auth.check_origin(None, "127.0.0.1:8080")  # not a browser: the CSRF token still guards it
    for origin in ("http://evil.example", "http://127.0.0.1:8081", "null", "file://", "https://127.0.0.1:8080.evil.example"):
        with pytest.raises(auth.Refused) as err:
            auth.check_origin(origin, "127.0.0.1:8080")
        assert (err.value.status, err.value.code) == (403, "origin.refused")
