"""The LLM gateway's OpenAI-compatible endpoint: one Unix socket per agent that may use the LLM,
``<channel dir>/llm.sock`` beside its ``kernel.sock`` (owned 0:agent-uid, mode 0660), so unchanged
``openai`` / LangChain / Agents SDK code in the sandbox reaches the gateway through the loopback
relay the sandbox sets up (``OPENAI_BASE_URL``; :mod:`clove.sandbox.relays`).

The socket's path is the caller's identity, as ``kernel.sock``'s is: nothing the agent sends
names it, and whatever ``Authorization`` it sends is ignored (the provider's key stays in the
kernel). ``POST /v1/chat/completions`` becomes the same gateway job as ``llm.think`` (fair
queue, budgets, rate limits, retries, the ``llm.request`` journal record and the recording),
authorized by the same ``llm`` right; each request also gets an ``llm.chat`` record like a
syscall's. ``GET /v1/models`` lists what the providers offer. HTTP is
:mod:`.llmhttpconn`'s, the API's shapes :mod:`.llmhttpapi`'s (docs/llm.md, "Bring your own agent
framework").
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Final, final

from clove.config.llm import LlmEndpointSettings
from clove.errors import CloveError, PermissionDenied, ResourceExhausted
from clove.kernel.audit.journal import Category
from clove.kernel.core.agents import TERMINAL
from clove.kernel.services.llmhttpapi import (
    ApiError,
    ChatCall,
    completion_json,
    error_body,
    error_for,
    models_json,
    parse_chat,
    stream_events,
)
from clove.kernel.services.llmhttpconn import ConnectionLimits, HttpConnection, HttpRequest, Writers
from clove.kernel.services.llmrequests import caller_of
from clove.sandbox.relays import LLM_SOCKET

if TYPE_CHECKING:
    from clove.kernel.core.agents import Agent
    from clove.kernel.services.host import ServiceRegistry
    from clove.kernel.services.llm import LlmService

log = logging.getLogger(__name__)

CALL: Final = "llm.chat"
CHAT_PATHS: Final = ("/v1/chat/completions", "/chat/completions")
MODEL_PATHS: Final = ("/v1/models", "/models")
ACCEPT_BATCH: Final = 16
JSON_HEADERS: Final = [("content-type", "application/json")]
SSE_HEADERS: Final = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]


@final
class AgentEndpoint:
    """One agent's listening socket and its connections."""

    def __init__(self, agent_id: int, path: str, sock: socket.socket) -> None:
        self.agent_id = agent_id
        self.path = path
        self.sock = sock
        self.connections: set[HttpConnection] = set()
        #: Requests the gateway holds for this agent through this endpoint. Cleared when the
        #: agent exits: the gateway then drops its requests without settling them.
        self.pending: set[int] = set()

    def reset(self) -> None:
        """The agent's incarnation ended: its connections and requests go with it."""
        for connection in list(self.connections):
            connection.close()
        self.pending.clear()


@final
class LlmHttpService:
    """Every agent's endpoint (see the module's docstring)."""

    def __init__(self, kernel: ServiceRegistry, llm: LlmService, settings: LlmEndpointSettings) -> None:
        self.kernel = kernel
        self.llm = llm
        self.settings = settings
        self.limits = ConnectionLimits(settings.max_request_bytes, settings.max_header_bytes, settings.idle_timeout)
        self.writers = Writers(kernel.loop)
        self.endpoints: dict[int, AgentEndpoint] = {}
        self.refused: dict[HttpConnection, ApiError] = {}  # connections past an agent's bound
        self._ids = itertools.count(1)
        self.closed = False

    # ---- sockets -------------------------------------------------------------------------------

    def open(self, agent: Agent) -> AgentEndpoint | None:
        """Listen on the agent's ``llm.sock`` (beside its ``kernel.sock``), once."""
        if self.closed or agent.id in self.endpoints or not agent.permissions.has("llm"):
            return self.endpoints.get(agent.id)
        channel = self.kernel.channels.agent_sockets.get(agent.id)
        if channel is None:
            return None
        path = os.path.join(os.path.dirname(channel[1]), LLM_SOCKET)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            if os.path.lexists(path):
                os.unlink(path)
            old_umask = os.umask(0o117)  # 0660 from the start: no window at a wider mode
            try:
                sock.bind(path)
            finally:
                os.umask(old_umask)
            if agent.uid is not None:
                os.chown(path, 0, agent.uid)
            os.chmod(path, 0o660)
            sock.listen(self.settings.max_connections)
        except OSError as err:
            sock.close()
            log.error("agent %d: cannot listen on %s: %s", agent.id, path, err)
            return None
        endpoint = AgentEndpoint(agent.id, path, sock)
        self.endpoints[agent.id] = endpoint
        self.kernel.loop.add_reader(sock, lambda: self._accept(endpoint))
        return endpoint

    def close_agent(self, agent_id: int) -> None:
        """Stop listening, drop the agent's connections and remove its socket file."""
        endpoint = self.endpoints.pop(agent_id, None)
        if endpoint is None:
            return
        self.kernel.loop.remove_reader(endpoint.sock)
        endpoint.sock.close()
        for connection in list(endpoint.connections):
            connection.close()
        try:
            os.unlink(endpoint.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        for agent_id in list(self.endpoints):
            self.close_agent(agent_id)
        self.writers.close()
        self.closed = True

    def _accept(self, endpoint: AgentEndpoint) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = endpoint.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("agent %d: accept on %s failed: %s", endpoint.agent_id, endpoint.path, err)
                return
            # Past the bound, the connection is still served one refusal (429), then closed; a
            # flood beyond twice the bound is closed at once.
            over = len(endpoint.connections) >= self.settings.max_connections
            if over and len(endpoint.connections) >= 2 * self.settings.max_connections:
                sock.close()
                continue
            connection = HttpConnection(
                sock, loop=self.kernel.loop, writers=self.writers, limits=self.limits,
                on_request=functools.partial(self._on_request, endpoint),
                on_error=functools.partial(self._on_error, endpoint),
                on_closed=functools.partial(self._closed, endpoint),
            )  # fmt: skip
            endpoint.connections.add(connection)
            if over:  # its first request is answered 429 (HTTP has no way to answer before one)
                self.refused[connection] = ApiError(429, f"this agent already has {self.settings.max_connections} connections open to the LLM endpoint",
                                                    type_="rate_limit_exceeded", code="too_many_connections", headers=(("retry-after", "1"),))  # fmt: skip

    def _closed(self, endpoint: AgentEndpoint, connection: HttpConnection) -> None:
        endpoint.connections.discard(connection)
        self.refused.pop(connection, None)

    # ---- requests ------------------------------------------------------------------------------

    def _answer(self, connection: HttpConnection, error: ApiError, *, close: bool = False) -> None:
        body = json.dumps(error_body(error)).encode("utf-8")
        headers = [*JSON_HEADERS, ("content-length", str(len(body))), *error.headers]
        connection.respond(error.status, headers, [body], close=close)

    def _on_error(self, endpoint: AgentEndpoint, connection: HttpConnection, status: int, message: str) -> None:
        code = {413: "request_too_large", 431: "headers_too_large", 408: "request_timeout"}.get(status, "malformed_request")
        self._answer(connection, ApiError(status, message, code=code), close=True)
        self._journal(endpoint, None, time.perf_counter_ns(), status, CloveError(message, details={"code": code}),
                      category=Category.SECURITY, event="proto.rejected")  # fmt: skip

    def _on_request(self, endpoint: AgentEndpoint, connection: HttpConnection, request: HttpRequest) -> None:
        started = time.perf_counter_ns()
        refusal = self.refused.get(connection)
        if refusal is not None:
            self._answer(connection, refusal, close=True)
            self._journal(endpoint, None, started, refusal.status, CloveError(refusal.message, details={"code": refusal.code}))
            return
        path = request.target.split("?", 1)[0].rstrip("/")
        if path in MODEL_PATHS and request.method == "GET":
            body = json.dumps(models_json(self._models(), int(time.time()))).encode("utf-8")
            connection.respond(200, [*JSON_HEADERS, ("content-length", str(len(body)))], [body])
            return
        refused = None
        if path not in CHAT_PATHS + MODEL_PATHS:
            refused = ApiError(404, f"no such endpoint: {request.method} {path or '/'} (this is Clove's LLM gateway: "
                                    "POST /v1/chat/completions, GET /v1/models)", code="unknown_url")  # fmt: skip
        elif path in MODEL_PATHS or request.method != "POST":
            refused = ApiError(405, f"{request.method} is not allowed on {path}", code="method_not_allowed")
        if refused is not None:  # audited like an unknown syscall
            self._answer(connection, refused)
            self._journal(endpoint, None, started, refused.status, CloveError(refused.message, details={"code": refused.code}),
                          category=Category.SECURITY, event="proto.rejected")  # fmt: skip
            return
        call: ChatCall | None = None
        try:
            self._admit(endpoint)
            call = parse_chat(request.body)
            self._submit(endpoint, connection, call, started)
        except ApiError as err:
            self._answer(connection, err)
            self._journal(endpoint, call, started, err.status, CloveError(err.message, details={"code": err.code}))
        except CloveError as err:
            self._answer(connection, error_for(err))
            self._journal(endpoint, call, started, error_for(err).status, err)
        except Exception:  # a bug: the agent gets a 500, the kernel carries on
            log.exception("llm endpoint: a request of agent %d failed", endpoint.agent_id)
            self._answer(connection, ApiError(500, "the kernel failed to handle this request; see its log", type_="server_error", code="internal"),
                         close=True)  # fmt: skip

    def _admit(self, endpoint: AgentEndpoint) -> None:
        """Who asks, and may it: the agent behind this socket, its ``llm`` right, its bound."""
        agent = self.kernel.supervisor.table.get(endpoint.agent_id)
        if agent is None or agent.state in TERMINAL:
            raise PermissionDenied("the agent behind this LLM endpoint is not running")
        agent.permissions.require("llm", CALL)
        if self.kernel.journal.space_low:
            raise ResourceExhausted("the kernel's journal disk is below its reserve: new work is refused until space returns",
                                    details={"resource": "journal_disk"})  # fmt: skip
        if len(endpoint.pending) >= self.settings.max_in_flight:
            raise ApiError(429, f"this agent already has {self.settings.max_in_flight} LLM requests in flight through the endpoint",
                           type_="rate_limit_exceeded", code="too_many_requests", headers=(("retry-after", "1"),))  # fmt: skip

    def _submit(self, endpoint: AgentEndpoint, connection: HttpConnection, call: ChatCall, started: int) -> None:
        """Queue the call as a ``think`` job; answer the connection when the gateway settles it."""
        service = self.llm
        slot, model = service.route(call.model)
        settings = service.settings
        assert settings is not None  # noqa: S101 - route() raised otherwise
        agent = self.kernel.supervisor.table.get(endpoint.agent_id)
        assert agent is not None  # noqa: S101 - _admit checked
        caller = caller_of(agent, agent.id, agent.permissions)
        deferred = service.submit(caller, call.request(model, settings.max_tokens), slot, timeout=settings.max_timeout, extra={"endpoint": "http"})
        key = next(self._ids)
        endpoint.pending.add(key)

        def settled(reply: Any, error: CloveError | None) -> None:
            endpoint.pending.discard(key)
            status = 200 if error is None else error_for(error).status
            self._journal(endpoint, call, started, status, error)
            if connection.closed:
                return  # the client went away; the request was billed what it cost
            try:
                if error is not None:
                    self._answer(connection, error_for(error))
                else:
                    self._reply(connection, call, reply)
            except Exception:  # a bug here must not leave the connection waiting for ever
                log.exception("llm endpoint: answering agent %d failed", endpoint.agent_id)
                connection.close()

        deferred.bind(settled)

    def _reply(self, connection: HttpConnection, call: ChatCall, reply: dict[str, Any]) -> None:
        completion_id = f"chatcmpl-clove-{next(self._ids)}"
        created = int(time.time())
        if call.stream:
            connection.respond(200, SSE_HEADERS, stream_events(reply, completion_id, created, include_usage=call.include_usage))
            return
        body = json.dumps(completion_json(reply, completion_id, created), ensure_ascii=False).encode("utf-8")
        connection.respond(200, [*JSON_HEADERS, ("content-length", str(len(body)))], [body])

    def _models(self) -> list[str]:
        providers = self.llm.gateway.providers.values()
        return sorted({m for slot in providers if slot.provider is not None for m in (slot.model, *slot.models)})

    # ---- journal -------------------------------------------------------------------------------

    def _journal(self, endpoint: AgentEndpoint, call: ChatCall | None, started: int, status: int, error: CloveError | None,
                 *, category: str | None = None, event: str = CALL) -> None:  # fmt: skip
        """One record per request, as the dispatcher writes for a syscall (the gateway writes
        its own ``llm.request`` record for each request it queued)."""
        denied = isinstance(error, (PermissionDenied, ResourceExhausted)) or status in (400, 404, 405, 408, 413, 431)
        category = category or (Category.SECURITY if denied else Category.NETWORK)
        kernel = self.kernel
        agent = kernel.supervisor.table.get(endpoint.agent_id)
        if isinstance(error, PermissionDenied):
            kernel.events.emit("SYSCALL_BLOCKED", {"syscall": CALL, "reason": error.message, "caller": "agent", "caller_id": endpoint.agent_id,
                                                   **error.details}, source_agent_id=endpoint.agent_id)  # fmt: skip
        if not kernel.audit_config.wants(category, denied):
            return
        code = "ok" if error is None else str(error.details.get("code") or error.code)
        try:
            kernel.journal.append(category, event, agent_id=endpoint.agent_id, agent_name=agent.name if agent else None, syscall=CALL,
                                  args=call.summary() if call is not None else None, decision="denied" if denied else "allowed",
                                  code=code, duration_us=(time.perf_counter_ns() - started) // 1000,
                                  details={"caller": "agent", "caller_id": endpoint.agent_id, "endpoint": "http", "status": status,
                                           **({"message": error.message} if error is not None else {})})  # fmt: skip
        except RuntimeError:  # the journal is closed (shutdown)
            pass

    def held(self) -> dict[str, int]:
        """Per-agent state, for leak checks."""
        return {"llm_endpoints": len(self.endpoints), "llm_connections": sum(len(e.connections) for e in self.endpoints.values()),
                "llm_endpoint_in_flight": sum(len(e.pending) for e in self.endpoints.values())}  # fmt: skip


def attach(kernel: ServiceRegistry) -> None:
    """Open an agent's endpoint when its channel is bound (``agent.created``) or when it gains
    the ``llm`` right, and remove it with the channel (``agent.removed``); close all at shutdown.
    Nothing is opened when the kernel has no ``[llm]`` table or ``[llm.endpoint].enabled`` is
    false. Attach after the LLM service."""
    settings = kernel.config.llm
    if settings is None or not settings.endpoint.enabled:
        return
    service = LlmHttpService(kernel, kernel.llm, settings.endpoint)

    def on_lifecycle(event_type: str, agent: Agent, details: dict[str, Any]) -> None:
        try:
            if event_type in ("agent.created", "agent.permissions"):
                service.open(agent)
            elif event_type == "agent.exited" and agent.id in service.endpoints:
                service.endpoints[agent.id].reset()
            elif event_type == "agent.removed":
                service.close_agent(agent.id)
        except Exception:  # the supervisor's step that emitted the event must not fail for this
            log.exception("llm endpoint: %s for agent %d failed", event_type, agent.id)

    kernel.supervisor.listeners.append(on_lifecycle)
    kernel.on_shutdown.insert(0, service.close)  # before the LLM service stops its workers
