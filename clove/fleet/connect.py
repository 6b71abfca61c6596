"""NATS connection options for a board (its ``[fleet]`` table) or an operator (the CLI).

Secrets are read here, at connect time, never kept in the config objects.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

__all__ = ["Endpoint"]


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where and as whom to connect.

    :param inbox_prefix: replies come under it (a board's own, so its user may subscribe to
        nothing else); ``None``: the client's default ``_INBOX``.
    """

    servers: tuple[str, ...]
    user: str | None = None
    password_file: str | None = None
    credentials: str | None = None
    tls_ca: str | None = None
    inbox_prefix: str | None = None
    name: str | None = None

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (besides callbacks and reconnect policy).

        :raises OSError: the password file cannot be read.
        """
        opts: dict[str, Any] = {"servers": list(self.servers)}
        if self.name is not None:
            opts["name"] = self.name
        if self.inbox_prefix is not None:
            opts["inbox_prefix"] = self.inbox_prefix
        if self.credentials is not None:
            opts["user_credentials"] = self.credentials
        if self.user is not None:
            opts["user"] = self.user
            if self.password_file is not None:
                opts["password"] = Path(self.password_file).read_text().strip()
        if self.tls_ca is not None:
            opts["tls"] = ssl.create_default_context(cafile=self.tls_ca)
        return opts
