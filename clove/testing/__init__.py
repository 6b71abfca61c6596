"""Public fakes and fixtures for testing Clove, its plugins and its agents (like ``trio.testing``).

* :class:`FakeCgroupFS`: an in-memory cgroup filesystem (v1 and v2) that behaves like the kernel's.
* :func:`check_driver`: the conformance kit every driver plugin runs (:mod:`clove.testing.drivers`).
* the ``loopback`` driver (:mod:`clove.testing.loopback`): a device with no hardware behind it.
"""

from __future__ import annotations

from clove.testing.cgroupfs import FakeCgroupFS
from clove.testing.drivers import check_driver
from clove.testing.httpserver import HttpTestServer

__all__ = ["FakeCgroupFS", "HttpTestServer", "check_driver"]
