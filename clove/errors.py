"""The one exception hierarchy of Clove and its stable wire codes, as the kernel, drivers and
plugins import it. The definition lives in :mod:`clove_sdk.errors`: an agent's environment holds
only the ``clove-sdk`` distribution, and both sides must raise and catch the very same classes.
See that module for the tree of classes and codes.
"""

from clove_sdk.errors import *  # noqa: F403 - one definition, shared with the SDK
from clove_sdk.errors import __all__ as __all__
