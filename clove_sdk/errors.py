"""Every error a Clove call can raise, for agents and operator scripts: catch ``CloveError`` for
all of them, or a subclass (``PermissionDenied``, ``QuotaExceeded``, ``DeviceBusy``, ...) for
one kind. Each carries ``code``, ``message`` and ``details`` (docs/protocol.md)."""

from clove.errors import *  # noqa: F403 - the SDK's face of the one error hierarchy
from clove.errors import __all__ as __all__
