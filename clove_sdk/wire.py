"""The wire protocol's encoder and decoder, for clients that build frames themselves (a
protocol test, a client in a hurry): ``encode_request``, ``decode_reply`` and the rest of
:mod:`clove.wire`. Most code wants :class:`clove_sdk.CloveClient` instead."""

from clove.wire import *  # noqa: F403 - the SDK's face of the one wire module
from clove.wire import __all__ as __all__
