"""(being written)"""

from __future__ import annotations

from clove_sdk._base import ClientBase


class LlmMixin(ClientBase):
    pass
