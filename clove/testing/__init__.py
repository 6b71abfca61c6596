"""Public fakes and fixtures for testing Clove, its plugins and its agents (like ``trio.testing``).

* :class:`FakeCgroupFS`: an in-memory cgroup filesystem (v1 and v2) that behaves like the kernel's.
"""

from __future__ import annotations

from clove.testing.cgroupfs import FakeCgroupFS
from clove.testing.httpserver import HttpTestServer

__all__ = ["FakeCgroupFS", "HttpTestServer"]
