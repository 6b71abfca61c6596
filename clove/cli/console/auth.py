"""Who is asking, and may they: browser sessions, bearer tokens, CSRF and origin checks.

Pure logic over header values, so it is unit-tested without a server (views.py applies it).

* A browser logs in with a token once and gets a session cookie (HttpOnly, SameSite=Strict);
  the session has its own CSRF token, which every POST must echo in ``X-CSRF-Token`` (or the
  ``csrf`` form field). Scripts send ``Authorization: Bearer TOKEN`` instead: no ambient
  credential, so no CSRF token is needed.
* Every request's ``Host`` must be one the console serves (a DNS-rebinding page has its own
  name there), and a POST's ``Origin``, when sent, must be that same host.
* Sessions are bounded in number and idle time: a flood of logins evicts the oldest session,
  it never grows the table.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from clove.cli.console.tokens import Role, Tokens

COOKIE = "clove_console"
CSRF_HEADER = "x-csrf-token"
MAX_SESSIONS = 64
IDLE_SECONDS = 12 * 3600
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(slots=True)
class Session:
    id: str
    role: Role
    csrf: str
    last_seen: float


@dataclass(frozen=True, slots=True)
class Who:
    """An authenticated caller: its role, and its session (``None`` for a bearer token)."""

    role: Role
    session: Session | None


class Refused(Exception):
    """A request turned away: ``status`` (401/403) and a stable ``code`` for the JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Sessions:
    """Browser sessions by cookie value, at most :data:`MAX_SESSIONS`, each idle at most
    :data:`IDLE_SECONDS`."""

    def __init__(self, *, limit: int = MAX_SESSIONS, idle: float = IDLE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.idle, self.clock = limit, idle, clock
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def open(self, role: Role) -> Session:
        while len(self._by_id) >= self.limit:
            self._by_id.popitem(last=False)  # the least recently used goes
        session = Session(id=secrets.token_urlsafe(32), role=role, csrf=secrets.token_urlsafe(32), last_seen=self.clock())
        self._by_id[session.id] = session
        return session

    def get(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        session = self._by_id.get(cookie)
        if session is None:
            return None
        now = self.clock()
        if now - session.last_seen > self.idle:
            del self._by_id[cookie]
            return None
        session.last_seen = now
        self._by_id.move_to_end(cookie)
        return session

    def close(self, cookie: str | None) -> None:
        if cookie:
            self._by_id.pop(cookie, None)


def authenticate(tokens: Tokens, sessions: Sessions, authorization: str | None, cookie: str | None) -> Who:
    """The caller, from a bearer header or a session cookie.

    :raises Refused: 401 ``auth.required`` when neither is valid.
    """
    if authorization:
        scheme, _, value = authorization.partition(" ")
        role = tokens.role_of(value.strip()) if scheme.lower() == "bearer" else None
        if role is None:
            raise Refused(401, "auth.invalid", "the Authorization header does not carry a valid console token")
        return Who(role, None)
    session = sessions.get(cookie)
    if session is None:
        raise Refused(401, "auth.required", "log in with a console token first")
    return Who(session.role, session)


def check_action(who: Who, csrf: str | None) -> None:
    """May ``who`` act (POST an action)?

    :raises Refused: 403 ``auth.readonly`` for a read-only token; 403 ``csrf.invalid`` for a
        session whose CSRF token was not echoed.
    """
    if who.session is not None and not (csrf and hmac.compare_digest(csrf.encode("utf-8", "replace"), who.session.csrf.encode())):
        raise Refused(403, "csrf.invalid", "missing or wrong CSRF token: reload the page")
    if who.role is not Role.OPERATOR:
        raise Refused(403, "auth.readonly", "this token is read-only: actions need the operator token")


def host_name(host_header: str) -> str:
    """``example:8080`` → ``example``; ``[::1]:8080`` → ``::1``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_host(host_header: str | None, allowed: Iterable[str]) -> None:
    """Is the ``Host`` one the console answers to: a loopback name (any port: an SSH tunnel may
    forward another port), or one of ``allowed`` (the remote listen address)?

    :raises Refused: 403 ``host.refused`` otherwise (a DNS-rebinding page names its own host).
    """
    name = host_name(host_header or "")
    if not name or not (is_loopback(name) or name in allowed):
        raise Refused(403, "host.refused", f"this console does not answer to host {host_header!r}")


def check_origin(origin: str | None, host_header: str | None) -> None:
    """A POST's ``Origin`` (when the client sends one) must be this console itself.

    :raises Refused: 403 ``origin.refused`` for a cross-origin POST.
    """
    if origin is None:
        return  # a non-browser client; the CSRF token (or a bearer token) still guards it
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or (parts.netloc or "").lower() != (host_header or "").strip().lower():
        raise Refused(403, "origin.refused", f"cross-origin request from {origin!r} refused")
