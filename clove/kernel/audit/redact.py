"""Keep secrets out of the journal: request bodies are summarized into every record, and an
``Authorization`` header or an ``api_key`` argument must not be among what is kept."""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED: Final = "<redacted>"
_SECRET_NAME: Final = re.compile(r"(pass(word|wd)?|secret|token|api[-_]?key|credential|auth|cookie|session[-_]?id)", re.I)


def _is_secret(name: object) -> bool:
    return isinstance(name, str) and bool(_SECRET_NAME.search(name))


def _url(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
    if not parts.query and netloc == parts.netloc:
        return value
    query = urlencode([(k, REDACTED if _is_secret(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(body: Any, depth: int = 0) -> Any:
    """A copy of ``body`` with secret-looking values replaced (by key name, in headers, and in
    URL query strings and userinfo). Cheap for the common small bodies: untouched ones are
    returned as they are."""
    if not isinstance(body, dict) or depth > 3:
        return body
    out: dict[Any, Any] | None = None
    for key, value in body.items():
        new = value
        if _is_secret(key):
            new = REDACTED
        elif key == "url" and isinstance(value, str):
            new = _url(value)
        elif isinstance(value, dict):
            new = redact(value, depth + 1)
        if new is not value:
            if out is None:
                out = dict(body)
            out[key] = new
    return body if out is None else out
