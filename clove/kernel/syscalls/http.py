"""The ``http`` syscall: the kernel performs an HTTP request for its caller, per policy.

The request is checked here, on the loop thread, before anything is sent: the URL (http or
https, ASCII, no credentials, one reading of its host), the caller's domain and method grants
(``Permissions.check_http``), the headers (no framing or routing headers) and the sizes. The
request itself runs on :mod:`clove.kernel.services.http`'s worker threads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final, final
from urllib.parse import urlsplit

from clove.errors import InvalidArguments, QuotaExceeded
from clove.httpclient import MAX_RESPONSE_BYTES, HttpRequest
from clove.kernel.services import http as http_service
from clove.kernel.syscalls.asynccalls import accept_or_wait
from clove.kernel.syscalls.base import Syscall, SyscallContext
from clove.policy import HTTP_METHODS

MAX_TIMEOUT: Final = 300.0
MAX_URL: Final = 8192
MAX_HEADERS: Final = 100
#: Headers the kernel owns: framing (length, encoding, connection) and routing. ``Host`` would
#: send an allowed server's connection to another virtual host than the one granted.
FORBIDDEN_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer",
     "expect", "proxy-connection", "proxy-authorization", "proxy-authenticate"}
)  # fmt: skip
_TOKEN: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
_BAD_URL_CHAR: Final = re.compile(r"[^\x21-\x7e]|\\")


def check_url(url: str) -> str:
    """The URL, if the kernel will fetch it.

    :raises InvalidArguments: not http(s), not ASCII, spaces, control characters or a
        backslash, credentials, no host, a bad port, or parsers disagreeing on the host.
    """
    if not url or len(url) > MAX_URL:
        raise InvalidArguments(f"http: the URL must be 1-{MAX_URL} characters", details={"argument": "url"})
    if _BAD_URL_CHAR.search(url):
        raise InvalidArguments(
            "http: the URL must be printable ASCII without spaces or backslashes (percent-encode; punycode for domains)",
            details={"argument": "url"},
        )
    # Here, not at the top: urllib3 brings ssl and OpenSSL (about 8 MiB) that a kernel whose
    # agents never call http should not hold; the first call pays the import (tens of ms).
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    try:
        parsed = parse_url(url)
        split = urlsplit(url)
        split_port = split.port
    except (LocationParseError, ValueError) as err:
        raise InvalidArguments(f"http: cannot parse the URL: {err}", details={"argument": "url"}) from None
    if (parsed.scheme or "").lower() not in ("http", "https"):
        raise InvalidArguments("http: only http:// and https:// URLs are fetched", details={"argument": "url", "scheme": parsed.scheme})
    if parsed.auth is not None or "@" in split.netloc:
        raise InvalidArguments("http: credentials in the URL are not accepted; send an Authorization header", details={"argument": "url"})
    host = (parsed.host or "").strip("[]").lower()
    if not host:
        raise InvalidArguments("http: the URL has no host", details={"argument": "url"})
    if host != (split.hostname or "") or parsed.port != split_port:
        raise InvalidArguments("http: the URL's host is ambiguous", details={"argument": "url"})
    return url


def check_headers(headers: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    """:raises InvalidArguments: a bad name or value, a kernel-owned header, too many."""
    if not headers:
        return ()
    if len(headers) > MAX_HEADERS:
        raise InvalidArguments(f"http: at most {MAX_HEADERS} headers", details={"argument": "headers"})
    out = []
    for name, value in headers.items():
        if not _TOKEN.match(name):
            raise InvalidArguments(f"http: bad header name {name[:64]!r}", details={"argument": "headers", "header": name[:64]})
        if name.lower() in FORBIDDEN_HEADERS:
            raise InvalidArguments(f"http: the {name} header is set by the kernel", details={"argument": "headers", "header": name})
        if any(ch in value for ch in "\r\n\0"):
            raise InvalidArguments(f"http: the {name} header's value has a line break or NUL", details={"argument": "headers", "header": name})
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise InvalidArguments(f"http: the {name} header's value is not Latin-1", details={"argument": "headers", "header": name}) from None
        out.append((name, value))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class HttpCall:
    url: str
    method: str = "GET"
    headers: dict[str, str] | None = None
    body: str | bytes | None = None
    timeout: float = 30.0
    async_: bool = False
    request_id: str | int | None = None


def build_request(req: HttpCall, *, max_body: int, max_response: int | None = None) -> HttpRequest:
    """Validate a call into the request the workers perform (policy is checked separately).

    :raises InvalidArguments: see :func:`check_url`, :func:`check_headers`; an unknown method,
        a timeout outside (0, 300] s, a bad ``request_id``.
    :raises QuotaExceeded: the body is larger than ``max_body``.
    """
    url = check_url(req.url)
    method = req.method.upper()
    if method not in HTTP_METHODS:
        raise InvalidArguments(f"http: unknown method {req.method[:16]!r}; known: {', '.join(HTTP_METHODS)}", details={"argument": "method"})
    timeout = float(req.timeout)
    if not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT:
        raise InvalidArguments(f"http: timeout must be in (0, {MAX_TIMEOUT:g}] seconds", details={"argument": "timeout"})
    if isinstance(req.request_id, str) and not 0 < len(req.request_id) <= 128:
        raise InvalidArguments("http: request_id must be 1-128 characters", details={"argument": "request_id"})
    body = req.body.encode("utf-8") if isinstance(req.body, str) else req.body
    if body is not None and len(body) > max_body:
        raise QuotaExceeded(f"the request body is larger than {max_body} bytes", details={"max_bytes": max_body, "size": len(body)})
    cap = MAX_RESPONSE_BYTES if max_response is None else max_response
    return HttpRequest(method, url, check_headers(req.headers), body, timeout, cap)


@final
class Http(Syscall):
    """``http {url, method="GET", headers?, body?, timeout=30, async_=False, request_id?}``.

    Result: ``{success: True, status_code, headers, body, encoding}``: any status the server
    sent (a 404 or a 302 too: redirects are not followed), ``headers`` with lower-case names,
    ``body`` as text (``encoding: "utf-8"``) or base64 (``"base64"``). With ``async_`` the reply
    is ``{success, async: True, request_id, status: "accepted"}`` and the result (or failure)
    arrives through ``async.poll`` as ``SYS_HTTP``.

    Errors: ``perm.denied`` (domain or method not granted), ``proto.invalid_args`` (bad URL,
    method, header, timeout), ``timeout``, ``upstream.failed`` (DNS, refused, reset, TLS),
    ``quota.exceeded`` (response above 10 MiB, request body above the message size, 16
    requests in flight; with ``async_``, unpolled async results at the caller's
    ``async_result_bytes``).
    """

    name = "http"
    right = "http"
    category = "NETWORK"
    Request = HttpCall

    def execute(self, ctx: SyscallContext, req: HttpCall) -> Any:
        service = http_service.of(ctx.kernel)
        url = check_url(req.url)
        ctx.perms.check_http(url, req.method)
        request = build_request(req, max_body=service.max_request_bytes)
        extra: dict[str, Any] = {"async": True, "request_id": req.request_id} if req.async_ else {}
        return accept_or_wait(
            ctx, async_=req.async_, request_id=req.request_id, opcode_name="SYS_HTTP",
            start=lambda: service.submit(ctx.principal_id, ctx.caller.agent_id, request, **extra),
        )


SYSCALLS: tuple[type[Syscall], ...] = (Http,)
