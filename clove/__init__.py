"""Clove: a runtime that runs autonomous agents as sandboxed OS processes behind a kernel.

Importing this package has no side effects; the kernel, CLI and SDK live in submodules.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
