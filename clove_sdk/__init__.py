"""The Clove SDK: what agents and operators import.

    from clove_sdk import CloveClient

    with CloveClient() as client:          # inside an agent: its own channel
        client.noop("ping")
"""

from clove.errors import CloveError, KernelUnavailable
from clove_sdk.client import CloveClient
from clove_sdk.ops import SyscallOp

__all__ = ["CloveClient", "CloveError", "KernelUnavailable", "SyscallOp"]
