"""Which wire protocol this SDK speaks, and the release number that says so.

The ``clove-sdk`` distribution's major version *is* the protocol version: every 1.x release
speaks ``CLOVE1`` and works with every kernel that speaks ``CLOVE1``; minor releases add calls
(a kernel that lacks one answers ``proto.unknown_syscall``). A new protocol means a new major
version, and a kernel refuses an envelope of another version with ``proto.version`` naming the
SDK release it needs. ``clove-sdk``'s packaging reads :data:`__version__` from here, so the two
numbers cannot drift apart.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PROTOCOL_VERSION", "SDK_REQUIREMENT", "__version__"]

#: The wire protocol's number: the envelope's first frame is ``b"CLOVE%d" % PROTOCOL_VERSION``.
PROTOCOL_VERSION: Final = 1
#: This SDK's release; its major part must equal :data:`PROTOCOL_VERSION`.
__version__ = "1.0.0"  # plain, so packaging reads it without importing
#: What an agent's environment must install to speak this protocol (quoted in errors).
SDK_REQUIREMENT: Final = f"clove-sdk>={PROTOCOL_VERSION}.0,<{PROTOCOL_VERSION + 1}"
