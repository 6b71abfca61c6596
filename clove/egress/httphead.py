"""The proxy's side of HTTP/1.1: parse a request head, rewrite a forwarded request to origin
form, and write the answers the proxy itself gives (tunnel established, refusals).

Only the head is parsed; bodies and tunnels are pumped as bytes. A plain-HTTP request is sent
upstream with ``Connection: close``: one request per upstream connection, so a client's
keep-alive never carries a second request to another host over the first one's connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

__all__ = ["BadRequest", "RequestHead", "parse_head", "refusal", "TUNNEL_OK"]

TUNNEL_OK: Final = b"HTTP/1.1 200 Connection established\r\n\r\n"
REFUSAL_HEADER: Final = "X-Clove-Egress-Refused"
_HOP_BY_HOP: Final = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer", "upgrade"})
_STATUS_TEXT: Final = {400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
                       502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


class BadRequest(ValueError):
    """A head the proxy cannot serve: ``status`` and ``code`` for the answer."""

    def __init__(self, message: str, status: int = 400, code: str = "bad_request") -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True, slots=True)
class RequestHead:
    """``host`` as the client wrote it (brackets stripped); ``forward``: the head to send
    upstream for plain HTTP (``b""`` for CONNECT)."""

    method: str
    host: str
    port: int
    forward: bytes

    @property
    def tunnel(self) -> bool:
        """CONNECT or SOCKS5: bytes both ways after the answer."""
        return self.method in ("CONNECT", "SOCKS5")


def parse_head(raw: bytes) -> RequestHead:
    """``raw``: the head up to and including the blank line.

    :raises BadRequest: malformed, not a proxy request, or a scheme other than ``http``.
    """
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError:  # latin-1 decodes every byte; kept for clarity
        raise BadRequest("the request head is not text") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"not an HTTP/1.x request line: {lines[0][:200]!r}")
    method, target, version = parts
    if not method.isalpha() or not method.isupper():
        raise BadRequest(f"bad method {method[:40]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise BadRequest(f"bad header line {line[:200]!r}")
        headers.append((name, value.strip()))
    if method == "CONNECT":
        host, port = _authority(target, default=None)
        return RequestHead(method, host, port, b"")
    url = urlsplit(target)
    if url.scheme.lower() != "http" or not url.netloc:
        why = "use CONNECT for https" if url.scheme.lower() == "https" else "a proxy request needs an absolute http:// URI"
        raise BadRequest(f"cannot forward {target[:200]!r}: {why}")
    if "@" in url.netloc:
        raise BadRequest("credentials in the request URI are not forwarded")
    host, port = _authority(url.netloc, default=80)
    origin = (url.path or "/") + (f"?{url.query}" if url.query else "")
    drop = {v.strip().lower() for name, value in headers if name.lower() == "connection" for v in value.split(",")}
    # Host always names what was checked: a different Host to an allowed address would reach
    # another site behind the same front (domain fronting).
    kept = [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP and n.lower() not in drop and n.lower() != "host"]
    kept.insert(0, ("Host", url.netloc))
    out = [f"{method} {origin} {version}", *(f"{n}: {v}" for n, v in kept), "Connection: close", "", ""]
    return RequestHead(method, host, port, "\r\n".join(out).encode("latin-1"))


def _authority(text: str, default: int | None) -> tuple[str, int]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadRequest(f"bad authority {text[:200]!r}")
        host, rest = text[1:end], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ("" if not rest else "x")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" not in text:
        host, port_text = text, ""
    else:
        raise BadRequest(f"bad authority {text[:200]!r} (an IPv6 address goes in brackets)")
    if not port_text:
        if default is None:
            raise BadRequest(f"CONNECT needs host:port, got {text[:200]!r}")
        return host, default
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise BadRequest(f"bad port in {text[:200]!r}")
    if not host:
        raise BadRequest(f"no host in {text[:200]!r}")
    return host, int(port_text)


def refusal(status: int, code: str, message: str) -> bytes:
    """A complete answer from the proxy itself: plain text a model can read, the code in
    ``X-Clove-Egress-Refused``, and the connection closed after it."""
    body = (message + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"{REFUSAL_HEADER}: {code}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body
