"""(being written)"""

from __future__ import annotations

from clove.kernel.syscalls.base import Syscall

SYSCALLS: tuple[type[Syscall], ...] = ()
