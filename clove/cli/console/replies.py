"""Small HTTP helpers shared by the console's routes: JSON replies, error replies, bounded
request bodies, and the security headers every response carries."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from clove.errors import CloveError, KernelUnavailable, NotFound, PermissionDenied

MAX_BODY = 8 << 10  # every console request body is a token, a name or a reason

#: Console pages load only their own scripts, styles and images; nothing may frame them.
PAGE_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
#: HIL reports are files written by the bench: shown with their images and styles, no scripts.
REPORT_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; frame-ancestors 'none'"
SECURITY_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}


class BodyTooLarge(Exception):
    pass


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, default=_default).encode()
    return Response(body, status, headers={**SECURITY_HEADERS, **(headers or {})}, media_type="application/json")


def error(status: int, code: str, message: str) -> Response:
    return reply({"error": {"code": code, "message": message}}, status)


def kernel_error(err: CloveError) -> Response:
    """A kernel refusal as the console's JSON error, with a status that says whose fault it is."""
    if isinstance(err, KernelUnavailable):
        status = 503
    elif isinstance(err, NotFound):
        status = 404
    elif isinstance(err, PermissionDenied):
        status = 403
    elif err.code.startswith("proto."):
        status = 400
    else:
        status = 409
    return error(status, err.code, err.message)


async def read_body(request: Request) -> bytes:
    """The request body, at most :data:`MAX_BODY` bytes.

    :raises BodyTooLarge: it is longer (declared or sent).
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def parse_fields(request: Request, body: bytes) -> dict[str, str]:
    """Form (urlencoded) or JSON object fields; values that are not strings are dropped."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
    try:
        return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), max_num_fields=16).items()}
    except ValueError:  # more fields than any console form has
        return {}
