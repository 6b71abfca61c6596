"""Wrapping routes in the console's checks: the Host, then who is asking, then (for actions)
the origin, the CSRF token and the role. Pages send the unauthenticated to the login form;
the JSON API answers 401/403 with a structured error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from clove.cli.console import auth
from clove.cli.console.bridge import Bridge
from clove.cli.console.replies import SECURITY_HEADERS, BodyTooLarge, error, parse_fields, read_body
from clove.cli.console.tokens import Tokens


@dataclass
class Console:
    """Everything the routes share."""

    bridge: Bridge
    tokens: Tokens
    sessions: auth.Sessions
    allowed_hosts: frozenset[str] = frozenset()
    hil_results: str | None = None
    kernel: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[Request, Console, auth.Who], Awaitable[Response]]
ActionHandler = Callable[[Request, Console, auth.Who, dict[str, str]], Awaitable[Response]]


def _who(request: Request, console: Console) -> auth.Who:
    auth.check_host(request.headers.get("host"), console.allowed_hosts)
    return auth.authenticate(console.tokens, console.sessions, request.headers.get("authorization"), request.cookies.get(auth.COOKIE))


def page(console: Console, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            who = _who(request, console)
        except auth.Refused as err:
            if err.status == 401:
                target = quote(request.url.path, safe="/")
                return RedirectResponse(f"/login?next={target}", 303, headers=SECURITY_HEADERS)
            return error(err.status, err.code, err.message)
        return await handler(request, console, who)

    return endpoint


def api(console: Console, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            who = _who(request, console)
        except auth.Refused as err:
            return error(err.status, err.code, err.message)
        return await handler(request, console, who)

    return endpoint


def action(console: Console, handler: ActionHandler) -> Callable[[Request], Awaitable[Response]]:
    """A POST that changes something: the fields of its body reach the handler."""

    async def endpoint(request: Request) -> Response:
        try:
            who = _who(request, console)
            auth.check_origin(request.headers.get("origin"), request.headers.get("host"))
            body = await read_body(request)
            fields = parse_fields(request, body)
            auth.check_action(who, request.headers.get(auth.CSRF_HEADER) or fields.get("csrf"))
        except auth.Refused as err:
            return error(err.status, err.code, err.message)
        except BodyTooLarge:
            return error(413, "request.too_large", "request body too large")
        return await handler(request, console, who, fields)

    return endpoint
