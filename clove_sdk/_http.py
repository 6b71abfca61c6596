"""HTTP through the kernel: sandboxed agents have no network of their own; the kernel fetches
for them, within their domain and method grants (docs/http.md)."""

from __future__ import annotations

import base64
from typing import Any

from clove_sdk._base import ClientBase


class HttpMixin(ClientBase):
    def http(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: str | bytes | None = None,
        timeout: float = 30,
        async_: bool = False,
        request_id: str | int | None = None,
    ) -> dict[str, Any]:
        """Have the kernel perform an HTTP request.

        :param url: an ``http://`` or ``https://`` URL whose host is granted (``http_domains``).
        :param method: a granted method (``http_methods``; agents get GET and HEAD by default).
        :param headers: request headers; ``Host``, ``Content-Length`` and other framing headers
            are the kernel's.
        :param body: text (sent as UTF-8) or bytes, at most the kernel's message size.
        :param timeout: seconds for the whole request, connecting to the last body byte (≤ 300).
        :param async_: reply at once with ``{success, async, request_id, status: "accepted"}``;
            the result arrives through :meth:`poll_async` as ``SYS_HTTP``.
        :returns: ``{success: True, status_code, headers, body, encoding}`` for any status the
            server sent (4xx, 5xx and unfollowed 3xx included); ``body`` is text when
            ``encoding`` is ``"utf-8"``, base64 when ``"base64"`` (see :meth:`http_body`).
            Failures: ``{success: False, error, code}`` with ``code`` ``perm.denied``,
            ``timeout``, ``upstream.failed``, ``quota.exceeded`` or ``proto.invalid_args``.
        """
        call: dict[str, Any] = {"url": url, "method": method, "timeout": float(timeout)}
        if headers:
            call["headers"] = dict(headers)
        if body is not None:
            call["body"] = body
        if async_:
            call["async_"] = True
        if request_id is not None:
            call["request_id"] = request_id
        return self._compat("http", **call)

    @staticmethod
    def http_body(reply: dict[str, Any]) -> bytes:
        """The raw bytes of an :meth:`http` reply's body, whichever its ``encoding``."""
        body = reply.get("body") or ""
        if reply.get("encoding") == "base64":
            return base64.b64decode(body)
        return body.encode("utf-8") if isinstance(body, str) else bytes(body)
