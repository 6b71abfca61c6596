"""The Clove wire protocol as the kernel imports it. The definition, the only place where
messages are encoded and decoded, lives in :mod:`clove_sdk.wire`: an agent's environment holds
only the ``clove-sdk`` distribution, and both ends must frame messages with the same code.
"""

from clove_sdk.wire import *  # noqa: F403 - one definition, shared with the SDK
from clove_sdk.wire import __all__ as __all__
from clove_sdk.wire import _pack as _pack  # protocol tests forge payloads with it
