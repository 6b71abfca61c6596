"""The HTTP client transport: one blocking request with one deadline, a size cap on the body,
no redirects, no proxies from the environment, certificates verified.

A leaf (stdlib, urllib3 and :mod:`clove.errors` only), shared by the kernel's ``http`` service
(:mod:`clove.kernel.services.http`, which runs it on worker threads) and the OpenAI-compatible
LLM provider (:mod:`clove.llm.openai`). Failures are Clove errors: ``timeout`` when the
deadline passes, ``upstream.error`` for DNS, refused, reset, TLS or protocol failures,
``quota.exceeded`` for a body above the cap.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, final

from clove import __version__
from clove.errors import CloveError, InternalError, OperationTimeout, QuotaExceeded, UpstreamError

if TYPE_CHECKING:
    import urllib3

__all__ = ["DEFAULT_POOL_SIZE", "MAX_CONNECT_TIMEOUT", "MAX_RESPONSE_BYTES", "HttpRequest", "HttpResponse", "Transport", "Urllib3Transport"]

MAX_RESPONSE_BYTES: Final = 10 * 1024 * 1024
MAX_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_POOL_SIZE: Final = 8
_CHUNK: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One validated request. ``headers`` are (name, value) pairs as the caller gave them."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    timeout: float = 30.0
    max_response_bytes: int = MAX_RESPONSE_BYTES


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What came back: the status, headers (lower-case names, repeated ones joined with ``, ``)
    and the body exactly as sent (no content decoding)."""

    status: int
    headers: dict[str, str]
    body: bytes

    def to_reply(self) -> dict[str, Any]:
        """The ``http`` syscall's result: the body as text when it is UTF-8, else base64."""
        try:
            text, encoding = self.body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(self.body).decode("ascii"), "base64"
        return {"success": True, "status_code": self.status, "headers": self.headers, "body": text, "encoding": encoding}


class Transport(Protocol):
    """Performs one request, blocking; runs on a worker thread and must be thread-safe."""

    def send(self, request: HttpRequest, deadline: float) -> HttpResponse:
        """:param deadline: a :func:`time.monotonic` instant by which to give up.

        :raises OperationTimeout: the deadline passed (connecting, sending or reading).
        :raises UpstreamError: DNS, refused, reset, TLS or protocol failure.
        :raises QuotaExceeded: the body is larger than ``request.max_response_bytes``.
        """
        ...

    def close(self) -> None: ...


@final
class Urllib3Transport:
    """:class:`Transport` over one thread-safe ``urllib3.PoolManager``: no redirects followed,
    no proxies from the environment, certificates verified, bodies read with a running cap.

    urllib3 (and with it ssl and OpenSSL, about 8 MiB) is imported by the first request, on the
    worker thread that sends it: a kernel whose agents never call ``http`` does not hold it."""

    def __init__(self, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self._pool_size = pool_size
        self._pool: urllib3.PoolManager | None = None
        self._pool_lock = threading.Lock()  # two workers' first requests build one pool

    def _manager(self) -> urllib3.PoolManager:
        with self._pool_lock:
            if self._pool is None:
                import urllib3

                # No retries: a retry would spend the caller's deadline twice, and a POST is not
                # ours to repeat. (urllib3 still replaces a pooled connection the server has closed.)
                self._pool = urllib3.PoolManager(num_pools=32, maxsize=self._pool_size, block=False, retries=False)
            return self._pool

    def send(self, request: HttpRequest, deadline: float) -> HttpResponse:
        pool = self._manager()
        import urllib3  # _manager() has loaded it: this is a lookup

        remaining = _remaining(deadline, request)
        headers = dict(request.headers)
        if not any(name.lower() == "user-agent" for name in headers):
            headers["User-Agent"] = f"clove/{__version__}"
        try:
            response = pool.urlopen(
                request.method,
                request.url,
                body=request.body,
                headers=headers,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(connect=min(remaining, MAX_CONNECT_TIMEOUT), read=remaining),
                preload_content=False,
                decode_content=False,
            )
        except Exception as err:
            raise _transport_error(err, request) from None
        try:
            body = _read_capped(response, request, deadline)
        except Exception as err:
            response.close()  # the rest of the body is not wanted: the connection is closed,
            response.release_conn()  # and its pool slot handed back (reconnected on next use)
            raise _transport_error(err, request) from None
        response.release_conn()
        names = {name.lower(): response.headers[name] for name in response.headers}
        return HttpResponse(response.status, names, body)

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.clear()


def _remaining(deadline: float, request: HttpRequest) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise OperationTimeout(f"HTTP {request.method} took longer than {request.timeout:g} s", details={"timeout": request.timeout})
    return remaining


def _read_capped(response: Any, request: HttpRequest, deadline: float) -> bytes:
    """Read the body one socket read at a time, each bounded by what is left of the deadline,
    stopping as soon as it exceeds the cap."""
    cap = request.max_response_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _too_big(request, response.status, int(declared))
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = _remaining(deadline, request)
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(remaining)
        chunk = response.read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > cap:
            raise _too_big(request, response.status, size)
        chunks.append(chunk)


def _too_big(request: HttpRequest, status: int, size: int) -> QuotaExceeded:
    cap = request.max_response_bytes
    return QuotaExceeded(
        f"the response is larger than {cap} bytes", details={"max_bytes": cap, "status_code": status, "received": size}
    )


def _transport_error(err: Exception, request: HttpRequest) -> CloveError:
    """urllib3's and the socket layer's failures as Clove errors (the timeout family first;
    ``NewConnectionError`` is a ``ConnectTimeoutError`` in urllib3's tree, yet means refused)."""
    if isinstance(err, CloveError):
        return err
    import http.client

    import urllib3

    reason = err.reason if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None else err
    details = {"method": request.method, "url": request.url}
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return UpstreamError(f"could not connect: {reason}", details=details)
    if isinstance(reason, (urllib3.exceptions.TimeoutError, TimeoutError)):
        return OperationTimeout(f"HTTP {request.method} took longer than {request.timeout:g} s", details={**details, "timeout": request.timeout})
    if isinstance(reason, (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)):
        return UpstreamError(f"HTTP {request.method} failed: {reason}", details=details)
    if isinstance(reason, (ValueError, UnicodeError)):
        return UpstreamError(f"HTTP {request.method} could not be sent: {reason}", details=details)
    return InternalError(f"HTTP {request.method} failed inside the kernel; see the kernel log")
