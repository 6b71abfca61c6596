"""What every SDK mixin builds on: ``call`` (typed, raises) and ``_compat`` (original shapes)."""

from __future__ import annotations

from typing import Any


class ClientBase:
    def call(self, syscall: str, /, reply_timeout: float | None = None, **body: Any) -> Any:
        raise NotImplementedError  # CloveClient implements it

    def _compat(self, syscall: str, **body: Any) -> dict[str, Any]:
        raise NotImplementedError  # CloveClient implements it
