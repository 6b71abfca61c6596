"""What a service may use of the kernel: one small Protocol, so no service imports the kernel's
top-level wiring (``clove.kernel.kernel``) and a unit test can hand a service a fake of exactly
this. :class:`~clove.kernel.kernel.Kernel` satisfies it (mypy checks that where the services are
attached).

A service never reaches a sibling through the kernel: :class:`ServiceHost` does not list them.
Only a service's ``attach`` sees :class:`ServiceRegistry`, where each service is set at boot,
and hands a service the siblings it uses (exec gets the file service, interlocks the device
broker, the recorder a question for replay)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from clove.config import KernelConfig
    from clove.kernel.audit.journal import Journal
    from clove.kernel.audit.settings import AuditConfig
    from clove.kernel.core.asyncjobs import AsyncResults
    from clove.kernel.core.channels import Channels
    from clove.kernel.core.events import EventBus
    from clove.kernel.core.loop import Loop
    from clove.kernel.core.sessions import OperatorSessions
    from clove.kernel.services.devices.broker import DeviceBroker
    from clove.kernel.services.exec import ExecService
    from clove.kernel.services.files import FileService
    from clove.kernel.services.http import HttpService
    from clove.kernel.services.interlocks import Interlocks
    from clove.kernel.services.llm import LlmService
    from clove.kernel.services.messaging import MessagingService
    from clove.kernel.services.metrics import MetricsService
    from clove.kernel.services.postmortem.service import PostmortemService
    from clove.kernel.services.recording.recorder import Recorder
    from clove.kernel.services.recording.replay import ReplayService
    from clove.kernel.services.state import StateService
    from clove.kernel.supervision.supervisor import Supervisor
    from clove.sandbox.cgroups import CgroupBackend
    from clove.sandbox.launcher import ZygoteLauncher


#: How a service journals one of its own records (event, code, agent id, duration in µs,
#: details): the kernel's http and llm services are handed one at attach.
Journaling = Callable[[str, str, "int | None", int, "dict[str, Any]"], None]


class ServiceHost(Protocol):
    """The kernel as the services see it."""

    config: KernelConfig
    state_dir: Path
    loop: Loop
    channels: Channels
    journal: Journal
    events: EventBus
    async_results: AsyncResults
    audit_config: AuditConfig
    launcher: ZygoteLauncher
    backend: CgroupBackend | None
    supervisor: Supervisor
    sessions: OperatorSessions
    #: Called with every zygote event the supervisor does not own (``exec_*``).
    zygote_listeners: list[Callable[[dict[str, Any]], None]]
    #: Called in order at shutdown, before the journal closes.
    on_shutdown: list[Callable[[], None]]

    def info(self) -> dict[str, Any]:
        """``kernel.info``: what a post-mortem bundle and metrics report about the kernel."""


class ServiceRegistry(ServiceHost, Protocol):
    """The kernel as the services' ``attach`` functions (and the syscalls) see it: the host and
    where each service is set at boot."""

    state: StateService
    messaging: MessagingService
    files: FileService
    execs: ExecService
    http: HttpService
    metrics: MetricsService
    devices: DeviceBroker
    interlocks: Interlocks
    recorder: Recorder
    replay: ReplayService
    postmortem: PostmortemService
    llm: LlmService
