"""The Clove SDK: what agents and operators import.

    from clove_sdk import CloveClient

    with CloveClient() as client:          # inside an agent: its own channel
        client.noop("ping")
"""

from clove_sdk.client import CloveClient
from clove_sdk.errors import CloveError, KernelUnavailable
from clove_sdk.ops import SyscallOp
from clove_sdk.version import PROTOCOL_VERSION, __version__

__all__ = ["PROTOCOL_VERSION", "CloveClient", "CloveError", "KernelUnavailable", "SyscallOp", "__version__"]
