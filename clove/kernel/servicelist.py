"""The kernel's agent services, attached at boot in this order. Each ``attach(kernel)`` builds
its service, sets it on the kernel and registers housekeeping and shutdown hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from clove.kernel.services import exec as exec_service, files, http as http_service, llm as llm_service, messaging, metrics, state
from clove.kernel.services import interlocks
from clove.kernel.services.recording import recorder as recording, replay
from clove.kernel.services.devices import broker as devices
from clove.kernel.services.postmortem import service as postmortem

if TYPE_CHECKING:
    from clove.kernel.kernel import Kernel

SERVICES: tuple[Callable[[Kernel], None], ...] = (
    state.attach,
    messaging.attach,
    files.attach,
    exec_service.attach,
    http_service.attach,
    metrics.attach,
    llm_service.attach,
    devices.attach,
    interlocks.attach,
    recording.attach,
    replay.attach,
    postmortem.attach,
)
