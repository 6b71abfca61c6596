"""(being written)"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clove.kernel.core import Kernel


def attach(kernel: Kernel) -> None:
    """Build this service and hook it into the kernel."""
